"""The quick-start demo: two hosts in the real-kernel lab, an IPsec tunnel, traffic through it.

Until the daemon lands this installs a static-key ESP tunnel with `ip xfrm`; it shows the same
things an operator would check: the SAs, a ping through them, and ESP (not ICMP) on the wire.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from netlab import Network


def step(msg: str) -> None:
    print(f"\n==> {msg}", flush=True)


def main() -> int:
    out = Path(os.environ.get("XFRMCTL_LAB_OUT", "/tmp")) / "demo"
    out.mkdir(parents=True, exist_ok=True)
    net = Network(out, prefix="demo")
    try:
        step("two hosts, alice (10.99.0.1) and bob (10.99.0.2), on one switch")
        alice, bob = net.host("alice"), net.host("bob")
        sw, _ = net.bridge([(alice, "10.99.0.1/24"), (bob, "10.99.0.2/24")])
        step("ESP tunnel mode, AES-256-GCM, one fresh key per direction")
        spis = {("10.99.0.1", "10.99.0.2"): 0xA11CE, ("10.99.0.2", "10.99.0.1"): 0xB0B}
        keys = {pair: secrets.token_hex(36) for pair in spis}
        for host in (alice, bob):
            for (src, dst), spi in spis.items():
                host.run(
                    f"ip xfrm state add src {src} dst {dst} proto esp spi {spi:#x} reqid 1 "
                    f"mode tunnel aead 'rfc4106(gcm(aes))' 0x{keys[(src, dst)]} 128"
                )
        for host, me, peer in ((alice, "10.99.0.1", "10.99.0.2"), (bob, "10.99.0.2", "10.99.0.1")):
            for direction, s, d in (("out", me, peer), ("in", peer, me)):
                host.run(
                    f"ip xfrm policy add src {s}/32 dst {d}/32 dir {direction} "
                    f"tmpl src {s} dst {d} proto esp reqid 1 mode tunnel"
                )
        step("alice pings bob through the tunnel, while the switch watches the wire")
        with net.capture(sw, "br0") as cap:
            ok = alice.ping("10.99.0.2", count=5)
        print(alice.run("ping -c 1 -n 10.99.0.2").stdout.strip())
        wire = [ln for ln in cap.text.splitlines() if "ESP(" in ln or "ICMP" in ln]
        step("on the wire (tcpdump on the switch):")
        print("\n".join(wire[:6]))
        step("alice's SAs (ip -s xfrm state):")
        for sa in alice.xfrm_sa_counters():
            print(
                f"  {sa.src} -> {sa.dst} {sa.proto} spi {sa.spi:#010x}: "
                f"{sa.packets} packets, {sa.bytes} bytes"
            )
        leaked = any("ICMP echo" in ln for ln in cap.text.splitlines())
        if ok and not leaked and any("ESP(" in ln for ln in wire):
            step("OK: traffic flowed, encrypted with ESP, no cleartext on the wire")
            return 0
        step(f"FAILED: ping ok={ok}, cleartext leaked={leaked}")
        return 1
    finally:
        net.close()


if __name__ == "__main__":
    sys.exit(main())
