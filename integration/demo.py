"""The quick-start demo: two hosts in the real-kernel lab, `xfrmctl up`, traffic, status, down.

What an operator would check after `xfrmctl up`: the negotiated SAs, a ping through them, ESP
(not ICMP) on the wire, the counters in `xfrmctl status`, and a clean kernel after `down`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from netlab import Network
from xfrmctl_host import Xfrmctl, write_psk

CONFIG = """\
connections:
  office:
    local_addrs: [{me}]
    remote_addrs: [{peer}]
    proposals: [aes256gcm16-prfsha384-x25519]
    local: {{id: {me_id}, auth: psk}}
    remote: {{id: {peer_id}, auth: psk}}
    psk_file: {psk}
    children:
      hosts:
        mode: tunnel
        local_ts: [{me}/32]
        remote_ts: [{peer}/32]
        esp_proposals: [aes256gcm16]
"""


def step(msg: str) -> None:
    print(f"\n==> {msg}", flush=True)


def show(proc_out: str) -> None:
    print("    " + proc_out.strip().replace("\n", "\n    "), flush=True)


def main() -> int:
    out = Path(os.environ.get("XFRMCTL_LAB_OUT", "/tmp")) / "demo"
    out.mkdir(parents=True, exist_ok=True)
    net = Network(out, prefix="demo")
    daemons: list[Xfrmctl] = []
    try:
        step("two hosts, alice (10.99.0.1) and bob (10.99.0.2), on one switch")
        alice, bob = net.host("alice"), net.host("bob")
        sw, _ = net.bridge([(alice, "10.99.0.1/24"), (bob, "10.99.0.2/24")])
        step("an xfrmctl daemon on each, sharing a pre-shared key")
        for host, me, peer in ((alice, "10.99.0.1", "10.99.0.2"), (bob, "10.99.0.2", "10.99.0.1")):
            cfg = out / f"{host.name}.yaml"
            cfg.write_text(
                CONFIG.format(
                    me=me,
                    peer=peer,
                    me_id=f"{host.name}.demo",
                    peer_id=f"{'bob' if host is alice else 'alice'}.demo",
                    psk=write_psk(out, "shared"),
                )
            )
            daemons.append(Xfrmctl(host, out, cfg, cold=True))
        da = daemons[0]
        step("alice: xfrmctl up office")
        show(da.cli("up", "office").stdout)
        step("alice pings bob through the tunnel, while the switch watches the wire")
        with net.capture(sw, "br0") as cap:
            ok = alice.ping("10.99.0.2", count=5)
        wire = [ln.strip() for ln in cap.text.splitlines() if "ESP(" in ln or "ICMP" in ln]
        print(f"    ping: {'ok' if ok else 'FAILED'}; on the wire:")
        show("\n".join(wire[:4]))
        step("alice: xfrmctl status")
        show(da.cli("status").stdout)
        step("alice: xfrmctl down office")
        show(da.cli("down", "office").stdout)
        left = alice.run("ip xfrm state").stdout.strip()
        leaked = any("ICMP echo" in ln for ln in cap.text.splitlines())
        if ok and not leaked and wire and not left:
            step("OK: negotiated by xfrmctl, encrypted with ESP, no cleartext, kernel clean")
            return 0
        step(f"FAILED: ping ok={ok}, cleartext={leaked}, SAs left={bool(left)}")
        return 1
    finally:
        for d in daemons:
            d.stop()
        net.close()


if __name__ == "__main__":
    sys.exit(main())
