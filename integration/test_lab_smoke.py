"""The lab itself is real: static-key IPsec with `ip xfrm` protects traffic between hosts.

These tests use only iproute2, ping and tcpdump (no xfrmctl code), so a failure here is the lab's,
not the product's. Each one proves: traffic flows, the SA counters grew, the wire carried only
ESP/AH/ESP-in-UDP, and without the peer's SA the traffic stops instead of leaking in cleartext.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from netlab import Host, Network

TOOLS = Path(__file__).resolve().parent / "tools"


@dataclass(frozen=True)
class Algo:
    proto: str  # esp | ah
    spec: str  # the algorithm part of `ip xfrm state add`

    @staticmethod
    def gcm() -> Algo:
        return Algo("esp", f"aead 'rfc4106(gcm(aes))' 0x{secrets.token_hex(36)} 128")

    @staticmethod
    def chacha() -> Algo:
        return Algo("esp", f"aead 'rfc7539esp(chacha20,poly1305)' 0x{secrets.token_hex(36)} 128")

    @staticmethod
    def ah_sha256() -> Algo:
        return Algo("ah", f"auth-trunc 'hmac(sha256)' 0x{secrets.token_hex(32)} 128")


def install_pair(
    hosts: list[Host],
    a: str,
    b: str,
    new_algo: Callable[[], Algo],
    mode: str,
    sel_a: str,
    sel_b: str,
    encap: bool = False,
    gateway_fwd: bool = False,
) -> tuple[int, int]:
    """Install both SAs on each host and the mirrored policies; returns (spi a→b, spi b→a)."""
    spi_ab, spi_ba = 0x1000 + secrets.randbelow(0xFFFF), 0x20000 + secrets.randbelow(0xFFFF)
    # Each direction gets its own fresh key, as IKE would give it.
    algo_ab, algo_ba = new_algo(), new_algo()
    algo = algo_ab
    extra = " encap espinudp 4500 4500 0.0.0.0" if encap else ""
    for host in hosts:
        for src, dst, spi, alg in ((a, b, spi_ab, algo_ab), (b, a, spi_ba, algo_ba)):
            host.run(
                f"ip xfrm state add src {src} dst {dst} proto {alg.proto} spi {spi:#x} "
                f"reqid 7 mode {mode} {alg.spec}{extra}"
            )
    left, right = hosts
    for host, me, peer, sel_me, sel_peer in (
        (left, a, b, sel_a, sel_b),
        (right, b, a, sel_b, sel_a),
    ):
        tmpl_out = f"tmpl src {me} dst {peer} proto {algo.proto} reqid 7 mode {mode}"
        tmpl_in = f"tmpl src {peer} dst {me} proto {algo.proto} reqid 7 mode {mode}"
        host.run(f"ip xfrm policy add src {sel_me} dst {sel_peer} dir out {tmpl_out}")
        host.run(f"ip xfrm policy add src {sel_peer} dst {sel_me} dir in {tmpl_in}")
        if gateway_fwd:
            host.run(f"ip xfrm policy add src {sel_peer} dst {sel_me} dir fwd {tmpl_in}")
    return spi_ab, spi_ba


def counters(host: Host, spi: int) -> tuple[int, int]:
    for sa in host.xfrm_sa_counters():
        if sa.spi == spi:
            return sa.bytes, sa.packets
    raise AssertionError(f"no SA with spi {spi:#x} on {host.name}:\n{host.xfrm_state_text()}")


def assert_protected(capture_text: str, proto: str, encap: bool = False) -> None:
    lines = [ln for ln in capture_text.splitlines() if ln and not ln.startswith(" ")]
    joined = "\n".join(capture_text.splitlines())
    assert lines, "the capture saw no packets at all"
    if proto == "esp":
        marker = "UDP-encap" if encap else "ESP("
        assert marker in joined, f"no {marker} on the wire:\n{capture_text}"
        assert "ICMP echo" not in joined, f"cleartext ICMP on the wire:\n{capture_text}"
        if encap:
            assert ".4500" in joined, f"ESP-in-UDP not on port 4500:\n{capture_text}"
    else:
        assert "AH(" in joined, f"no AH on the wire:\n{capture_text}"
        # AH authenticates but does not encrypt: every ICMP packet must travel inside AH.
        for block in _packets(capture_text):
            if "ICMP echo" in block:
                assert "AH(" in block, f"ICMP without AH on the wire:\n{block}"


def _packets(text: str) -> list[str]:
    blocks: list[str] = []
    for line in text.splitlines():
        if line and not line.startswith(" "):
            blocks.append(line)
        elif blocks:
            blocks[-1] += "\n" + line
    return blocks


def two_hosts(net: Network) -> tuple[Host, Host, Host]:
    """Hosts a and b on one switch; the switch is where the wire is observed."""
    a, b = net.host("a"), net.host("b")
    sw, _ = net.bridge([(a, "10.99.0.1/24"), (b, "10.99.0.2/24")])
    return a, b, sw


def check_tunnel_then_break(
    net: Network,
    sender: Host,
    receiver: Host,
    dst: str,
    wire: Host,
    sa_host: Host,
    spis: tuple[int, int],
    proto: str,
    encap: bool = False,
) -> None:
    spi_ab, spi_ba = spis
    with net.capture(wire, "br0") as cap:
        assert sender.ping(dst, count=5), "ping through the SA failed"
    assert_protected(cap.text, proto, encap)
    out_bytes, out_packets = counters(sa_host, spi_ab)
    in_bytes, in_packets = counters(sa_host, spi_ba)
    assert out_packets >= 5 and out_bytes > 0, (out_bytes, out_packets)
    assert in_packets >= 5 and in_bytes > 0, (in_bytes, in_packets)

    # Remove the receiver's inbound SA: traffic must stop, never fall back to cleartext.
    receiver.run(f"ip xfrm state deleteall spi {spi_ab:#x}")
    with net.capture(wire, "br0") as cap:
        assert not sender.ping(dst, count=3, wait=1), "ping passed without the peer's SA"
    assert "ICMP echo" not in cap.text or proto == "ah", f"cleartext leaked:\n{cap.text}"
    if proto == "ah":
        for block in _packets(cap.text):
            assert "ICMP echo" not in block or "AH(" in block, block


@pytest.mark.parametrize("algo", [Algo.gcm, Algo.chacha], ids=["aes-gcm", "chacha20poly1305"])
def test_esp_transport(net: Network, algo: Callable[[], Algo]) -> None:
    a, b, sw = two_hosts(net)
    spis = install_pair(
        [a, b], "10.99.0.1", "10.99.0.2", algo, "transport", "10.99.0.1/32", "10.99.0.2/32"
    )
    check_tunnel_then_break(net, a, b, "10.99.0.2", sw, a, spis, "esp")


def test_esp_tunnel_chacha_host_to_host(net: Network) -> None:
    a, b, sw = two_hosts(net)
    spis = install_pair(
        [a, b], "10.99.0.1", "10.99.0.2", Algo.chacha, "tunnel", "10.99.0.1/32", "10.99.0.2/32"
    )
    check_tunnel_then_break(net, a, b, "10.99.0.2", sw, a, spis, "esp")


def test_esp_tunnel_gcm_net_to_net(net: Network) -> None:
    """Four hosts: left — gw-a ==ESP== gw-b — right; the gateways forward and encrypt."""
    left, gwa, gwb, _right, wire = net.gateways()
    spis = install_pair(
        [gwa, gwb],
        "192.0.2.1",
        "192.0.2.2",
        Algo.gcm,
        "tunnel",
        "10.1.0.0/16",
        "10.2.0.0/16",
        gateway_fwd=True,
    )
    check_tunnel_then_break(net, left, gwb, "10.2.0.2", wire, gwa, spis, "esp")


def test_ah_transport(net: Network) -> None:
    a, b, sw = two_hosts(net)
    spis = install_pair(
        [a, b],
        "10.99.0.1",
        "10.99.0.2",
        Algo.ah_sha256,
        "transport",
        "10.99.0.1/32",
        "10.99.0.2/32",
    )
    check_tunnel_then_break(net, a, b, "10.99.0.2", sw, a, spis, "ah")


def test_esp_in_udp(net: Network) -> None:
    a, b, sw = two_hosts(net)
    for host in (a, b):
        proc = host.popen(
            [sys.executable, str(TOOLS / "udp_encap.py")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    spis = install_pair(
        [a, b],
        "10.99.0.1",
        "10.99.0.2",
        Algo.gcm,
        "transport",
        "10.99.0.1/32",
        "10.99.0.2/32",
        encap=True,
    )
    check_tunnel_then_break(net, a, b, "10.99.0.2", sw, a, spis, "esp", encap=True)


def test_no_sa_means_no_traffic(net: Network) -> None:
    """Negative control: policies that require ESP with no SA at all block the traffic."""
    a, b, sw = two_hosts(net)
    for host, me, peer in ((a, "10.99.0.1", "10.99.0.2"), (b, "10.99.0.2", "10.99.0.1")):
        host.run(
            f"ip xfrm policy add src {me}/32 dst {peer}/32 dir out "
            f"tmpl src {me} dst {peer} proto esp reqid 7 mode transport"
        )
    with net.capture(sw, "br0") as cap:
        assert not a.ping("10.99.0.2", count=2, wait=1)
    assert "ICMP echo" not in cap.text, cap.text
