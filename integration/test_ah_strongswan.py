"""AH in tunnel mode negotiated by IKE between xfrmctl and strongSwan (issue 9, section 4).

xfrmctl initiates a child with `protocol: ah` (RFC 7296 section 3.3.1, protocol ID 2; AH itself
is RFC 4302); charon answers with `ah_proposals`. Checks: both daemons agree on AH tunnel mode
and the SPIs, pings go through both ways, and the wire on the switch carries every ICMP packet
inside AH (authenticated, not encrypted: the inner packet stays readable, but never bare).
One daemon start per side.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from interop import non_socket_policies, wait_for
from netlab import Host, Network
from strongswan import Charon, swanctl_conf, swanctl_connection
from xfrmctl_host import Xfrmctl, write_psk

PSK = "ah interop lab secret, not for production"
A_ID, B_ID = "a.lab.example", "b.lab.example"
A_ADDR, B_ADDR = "10.98.0.1", "10.98.0.2"
IKE = "aes256gcm16-prfsha384-x25519"


@dataclass
class Lab:
    net: Network
    a: Host
    b: Host
    sw: Host
    xfrmctl: Xfrmctl
    charon: Charon


def xfrmctl_config(workdir: Path) -> Path:
    psk = write_psk(workdir, "a", PSK)
    cfg = workdir / "a.yaml"
    cfg.write_text(
        "connections:\n"
        "  ah:\n"
        f"    local_addrs: [{A_ADDR}]\n"
        f"    remote_addrs: [{B_ADDR}]\n"
        f"    proposals: [{IKE}]\n"
        f"    local: {{id: {A_ID}, auth: psk}}\n"
        f"    remote: {{id: {B_ID}, auth: psk}}\n"
        f"    psk_file: {psk}\n"
        "    children:\n"
        "      net:\n"
        "        mode: tunnel\n"
        "        protocol: ah\n"
        "        ah_proposals: [sha256]\n"
        f"        local_ts: [{A_ADDR}/32]\n"
        f"        remote_ts: [{B_ADDR}/32]\n"
    )
    return cfg


def charon_config() -> str:
    conn = swanctl_connection(
        name="ah",
        child="net",
        local_addr=B_ADDR,
        remote_addr=A_ADDR,
        local_id=B_ID,
        remote_id=A_ID,
        auth="psk",
        ike_proposal=IKE,
        esp_proposal="",
        ah_proposal="sha256",
        mode="tunnel",
        local_ts=f"{B_ADDR}/32",
        remote_ts=f"{A_ADDR}/32",
    )
    return swanctl_conf([conn], [(A_ID, B_ID, PSK)])


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    base = os.environ.get("XFRMCTL_LAB_OUT")
    workdir = (Path(base) if base else Path(tempfile.mkdtemp())) / "ah-strongswan"
    workdir.mkdir(parents=True, exist_ok=True)
    net = Network(workdir)
    try:
        a, b = net.host("a"), net.host("b")
        sw, _ = net.bridge([(a, f"{A_ADDR}/24"), (b, f"{B_ADDR}/24")])
        charon = Charon(b, workdir, charon_config())
        xfrmctl = Xfrmctl(a, workdir, xfrmctl_config(workdir))
        yield Lab(net, a, b, sw, xfrmctl, charon)
        codes = (xfrmctl.stop(), charon.stop())
        assert codes[0] == 0, xfrmctl.log.read_text()
    finally:
        net.close()


def packets(text: str) -> list[str]:
    """`tcpdump -v` output split per packet: a first line, then its indented continuations."""
    return [p for p in re.split(r"\n(?=\S)", text.strip()) if p]


def ping_from(host: Host, src: str, dst: str, count: int) -> bool:
    return host.run(f"ping -n -I {src} -c {count} -i 0.2 -W 2 {dst}", check=False).returncode == 0


# This test found that Linux pads an IPv4 AH header to 64 bits unless XFRM_STATE_ALIGN4 is
# set, and strongSwan's SAs (which set it, as RFC 4302 asks) drop such packets.
def test_ah_tunnel_against_strongswan(lab: Lab) -> None:
    a, b, charon, da = lab.a, lab.b, lab.charon, lab.xfrmctl
    try:
        da.cli("up", "ah")
        wait_for(lambda: len(a.xfrm_sa_counters()) == 2, "xfrmctl to install both AH SAs")
        for host in (a, b):
            states = host.xfrm_state_text()
            assert states.count("proto ah") == 2 and "proto esp" not in states, states
            assert states.count("mode tunnel") == 2, states

        with lab.net.capture(lab.sw, "br0", f"host {A_ADDR}") as cap:
            assert ping_from(a, A_ADDR, B_ADDR, 4), "no traffic through the AH SAs"
            assert ping_from(b, B_ADDR, A_ADDR, 2), "no traffic from strongSwan's side"
        icmp = [p for p in packets(cap.text) if "ICMP" in p]
        assert len(icmp) >= 12, cap.text  # 6 requests and 6 replies, all inside AH
        outside = [p for p in icmp if "proto AH (51)" not in p.split("\n")[0] or "AH(" not in p]
        assert not outside, "ICMP outside AH on the wire:\n" + "\n".join(outside)
        assert "ESP(" not in cap.text, cap.text

        status = da.status()
        (ike,) = status["ike_sas"]
        assert ike["state"] == "ESTABLISHED" and ike["initiator"] is True, ike
        (child,) = ike["children"]
        assert child["state"] == "INSTALLED" and child["mode"] == "tunnel", child
        assert child["protocol"].lower() == "ah", child
        assert child["packets_out"] >= 6 and child["packets_in"] >= 6, child

        raw = charon.sa_summary("ah")
        assert "state=ESTABLISHED" in raw and "protocol=AH" in raw, raw
        assert "mode=TUNNEL" in raw, raw
        swan_spi_in = {int(x, 16) for x in re.findall(r"\bspi-in=([0-9a-fA-F]+)", raw)}
        assert int(child["spi_out"], 16) in swan_spi_in, raw

        da.cli("down", "ah")
        wait_for(lambda: charon.ike_sa_count("ah") == 0, "strongSwan to drop the IKE SA", 30)
        wait_for(lambda: b.xfrm_state_text().strip() == "", "strongSwan to remove its SAs", 10)
        for host in (a, b):
            assert host.xfrm_state_text().strip() == "", host.xfrm_state_text()
            assert non_socket_policies(host) == "", host.xfrm_policy_text()
    except AssertionError as exc:
        da.cli("down", "ah", check=False)
        kernel = "".join(
            f"--- {h.name}: ip -s xfrm state, xfrm_stat ---\n"
            + h.run("ip -s xfrm state; cat /proc/net/xfrm_stat", check=False).stdout
            for h in (a, b)
        )
        raise AssertionError(
            f"{exc}\n{kernel}--- xfrmctl log ---\n{da.log.read_text()}\n"
            f"--- charon log ---\n{charon.log_text()}"
        ) from None
