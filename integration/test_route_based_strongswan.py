"""Route-based IPsec against strongSwan (issue 10): XFRM interfaces owned by xfrmctl.

Both sides negotiate 0.0.0.0/0 selectors on if_id 42, so routing alone decides what is
encrypted: traffic routed into xfrmctl's `xfrm-b` is ESP on the wire, everything else (IKE
itself included) stays as it was, and a route added at run time starts encrypting its
prefix with no daemon action. xfrmctl creates the interface, with its address and routes,
when the Child SA goes in, removes it on `down`, on stop and (as stale) after kill -9, and
never touches an XFRM interface it did not create.
"""

from __future__ import annotations

import re
from pathlib import Path

from interop import assert_only_esp, wait_for
from netlab import Host, Network
from strongswan import Charon, swanctl_conf
from xfrmctl_host import Xfrmctl, write_psk

PSK = "route-based lab secret, not for production"
A_ID, B_ID = "a.lab.example", "b.lab.example"
A_IP, B_IP = "10.98.0.1", "10.98.0.2"
A_LAN, B_LAN, B_LATER = "10.98.1.1", "10.98.2.1", "10.98.4.1"  # inner addresses
IF_ID = 42


def xfrmctl_config(workdir: Path) -> Path:
    psk = write_psk(workdir, "a", PSK)
    cfg = workdir / "a.yaml"
    cfg.write_text(
        f"connections:\n  rb:\n    local_addrs: [{A_IP}]\n    remote_addrs: [{B_IP}]\n"
        f"    local: {{id: {A_ID}, auth: psk}}\n    remote: {{id: {B_ID}, auth: psk}}\n"
        f"    psk_file: {psk}\n"
        f"    interface:\n      name: xfrm-b\n      if_id: {IF_ID}\n      mtu: 1400\n"
        "      addresses: [169.254.42.1/30]\n      routes: [10.98.2.0/24]\n"
        "    children:\n      all:\n        local_ts: [0.0.0.0/0]\n"
        "        remote_ts: [0.0.0.0/0]\n"
    )
    return cfg


def charon_config() -> str:
    conn = (
        f"  rb {{\n    version = 2\n    local_addrs = {B_IP}\n    remote_addrs = {A_IP}\n"
        "    proposals = aes256gcm16-prfsha384-x25519\n"
        f"    local {{\n      auth = psk\n      id = {B_ID}\n    }}\n"
        f"    remote {{\n      auth = psk\n      id = {A_ID}\n    }}\n"
        "    children {\n      all {\n        local_ts = 0.0.0.0/0\n"
        "        remote_ts = 0.0.0.0/0\n        esp_proposals = aes256gcm16\n"
        f"        if_id_in = {IF_ID}\n        if_id_out = {IF_ID}\n      }}\n    }}\n  }}\n"
    )
    return swanctl_conf([conn], [(A_ID, B_ID, PSK)])


def links(host: Host) -> str:
    return host.run("ip -d link show type xfrm").stdout


def routes(host: Host) -> str:
    return host.run("ip route show").stdout


def setup(net: Network) -> tuple[Host, Host, Host]:
    a, b = net.host("a"), net.host("b")
    sw, _ = net.bridge([(a, f"{A_IP}/24"), (b, f"{B_IP}/24")])
    a.run(f"ip addr add {A_LAN}/32 dev lo")
    for addr in (B_LAN, B_LATER):
        b.run(f"ip addr add {addr}/32 dev lo")
    # strongSwan's side is route-based too, on an interface of its own making.
    b.run(f"ip link add xfrm-a type xfrm if_id {IF_ID} && ip link set xfrm-a up")
    b.run("ip route add 10.98.1.0/24 dev xfrm-a")
    a.run(f"ip route add 10.98.4.0/24 via {B_IP}")  # for now: in the clear
    # An XFRM interface xfrmctl did not make: used by nobody here, and never to be removed.
    a.run("ip link add xfrm-other type xfrm if_id 7")
    return a, b, sw


def sa_spis(host: Host) -> set[str]:
    return set(re.findall(r"spi (0x[0-9a-f]+)", host.xfrm_state_text()))


def clear_icmp_to(capture: str, dst: str) -> bool:
    return re.search(rf"> {re.escape(dst)}: ICMP echo request", capture) is not None


def test_routing_decides_what_is_encrypted_and_interfaces_are_ours(
    net: Network, lab_out: Path
) -> None:
    workdir = lab_out / "route-based"
    workdir.mkdir(parents=True, exist_ok=True)
    a, b, sw = setup(net)
    charon = Charon(b, workdir, charon_config())
    da = Xfrmctl(a, workdir, xfrmctl_config(workdir))
    try:
        assert "xfrm-b" not in links(a)  # made when the Child SA goes in, not before
        da.cli("up", "rb")
        link = links(a)
        assert re.search(r"xfrm-b(@\S+)?: <[^>]*\bUP\b[^>]*> mtu 1400 ", link), link
        assert f"if_id 0x{IF_ID:x}" in link, link
        assert "169.254.42.1/30" in a.run("ip addr show dev xfrm-b").stdout
        assert "10.98.2.0/24 dev xfrm-b proto 157" in routes(a), routes(a)
        policies = a.run("ip xfrm policy").stdout
        assert "src 0.0.0.0/0 dst 0.0.0.0/0" in policies and f"if_id 0x{IF_ID:x}" in policies
        with net.capture(sw, "br0") as cap:
            # Routed into xfrm-b: encrypted. The underlay itself: in the clear, though the
            # selectors cover it.
            tunnel = a.run(f"ping -n -c 3 -i 0.3 -W 2 -I {A_LAN} {B_LAN}", check=False)
            clear = a.run(f"ping -n -c 3 -i 0.3 -W 2 {B_IP}", check=False)
            # Not routed into xfrm-b yet: its requests cross in the clear.
            a.run(f"ping -n -c 2 -i 0.3 -W 1 -I {A_LAN} {B_LATER}", check=False)
        assert tunnel.returncode == 0, tunnel.stdout
        assert clear.returncode == 0, clear.stdout
        text = cap.text
        assert "ESP" in text and not clear_icmp_to(text, B_LAN), text
        assert clear_icmp_to(text, B_IP), text
        assert clear_icmp_to(text, B_LATER), text
        spis = sa_spis(a)
        log_lines = da.log.read_text().count("\n")

        # Routing a prefix into the interface at run time encrypts it; the daemon does nothing.
        a.run("ip route replace 10.98.4.0/24 dev xfrm-b")
        with net.capture(sw, "br0") as cap:
            later = a.run(f"ping -n -c 3 -i 0.3 -W 2 -I {A_LAN} {B_LATER}", check=False)
        assert later.returncode == 0, later.stdout
        assert not clear_icmp_to(cap.text, B_LATER), cap.text
        assert_only_esp(cap.text)
        assert sa_spis(a) == spis  # the same SAs carry it
        assert da.log.read_text().count("\n") == log_lines, da.log.read_text()[-2000:]

        da.cli("down", "rb")
        wait_for(lambda: "xfrm-b" not in links(a), "xfrm-b removed on down", timeout=30)
        assert "proto 157" not in routes(a), routes(a)
        assert "xfrm-other" in links(a)

        # kill -9 leaves the interface and its routes; the next start removes them.
        da.cli("up", "rb")
        da.kill9()
        assert "xfrm-b" in links(a) and "proto 157" in routes(a)
        da.spawn().wait_ready()
        assert "xfrm-b" not in links(a) and "proto 157" not in routes(a), (links(a), routes(a))
        assert "xfrm-other" in links(a), links(a)
        da.cli("up", "rb")
        ping = a.run(f"ping -n -c 2 -i 0.3 -W 2 -I {A_LAN} {B_LAN}", check=False)
        assert ping.returncode == 0, ping.stdout
    finally:
        codes = (da.stop(), charon.stop())
    assert codes[0] == 0
    # The daemon's stop takes what it made, and only that.
    assert "xfrm-b" not in links(a) and "xfrm-other" in links(a), links(a)
    assert "proto 157" not in routes(a), routes(a)
    assert a.run("ip xfrm policy").stdout.strip() == ""


C_IP = "10.98.0.3"
C_ID = "c.lab.example"


def two_peer_config(workdir: Path) -> Path:
    """Two tunnels to two peers whose LANs overlap (both 10.98.2.0/24), on two interfaces;
    no `routes`: which source goes where is the operator's routing policy."""
    psk = write_psk(workdir, "a", PSK)
    conns = "".join(
        f"  {name}:\n    local_addrs: [{A_IP}]\n    remote_addrs: [{peer}]\n"
        f"    local: {{id: {A_ID}, auth: psk}}\n    remote: {{id: {peer_id}, auth: psk}}\n"
        f"    psk_file: {psk}\n    interface: {{name: xfrm-{name}, if_id: {if_id}}}\n"
        "    children:\n      all:\n        local_ts: [0.0.0.0/0]\n"
        "        remote_ts: [0.0.0.0/0]\n"
        for name, peer, peer_id, if_id in (("b", B_IP, B_ID, 42), ("c", C_IP, C_ID, 43))
    )
    cfg = workdir / "a.yaml"
    cfg.write_text(f"connections:\n{conns}")
    return cfg


def peer_config(name: str, me: str, my_id: str) -> str:
    conn = (
        f"  {name} {{\n    version = 2\n    local_addrs = {me}\n    remote_addrs = {A_IP}\n"
        "    proposals = aes256gcm16-prfsha384-x25519\n"
        f"    local {{\n      auth = psk\n      id = {my_id}\n    }}\n"
        f"    remote {{\n      auth = psk\n      id = {A_ID}\n    }}\n"
        "    children {\n      all {\n        local_ts = 0.0.0.0/0\n"
        "        remote_ts = 0.0.0.0/0\n        esp_proposals = aes256gcm16\n"
        f"        if_id_in = {IF_ID}\n        if_id_out = {IF_ID}\n      }}\n    }}\n  }}\n"
    )
    return swanctl_conf([conn], [(A_ID, my_id, PSK)])


def packets_in(daemon: Xfrmctl, conn: str) -> int:
    (ike,) = [s for s in daemon.status()["ike_sas"] if s["name"] == conn]
    return sum(c["packets_in"] for c in ike["children"])


def test_overlapping_subnets_on_two_interfaces_reach_their_own_peer(
    net: Network, lab_out: Path
) -> None:
    workdir = lab_out / "route-based-overlap"
    workdir.mkdir(parents=True, exist_ok=True)
    a, b, c = net.host("a"), net.host("b"), net.host("c")
    net.bridge([(a, f"{A_IP}/24"), (b, f"{B_IP}/24"), (c, f"{C_IP}/24")])
    # One source address per tunnel on a, and the same LAN address behind both peers.
    a.run("ip addr add 10.98.1.1/32 dev lo && ip addr add 10.98.1.2/32 dev lo")
    for peer in (b, c):
        peer.run(f"ip addr add {B_LAN}/32 dev lo")
        peer.run(f"ip link add xfrm-a type xfrm if_id {IF_ID} && ip link set xfrm-a up")
        peer.run("ip route add 10.98.1.0/24 dev xfrm-a")
    charons = [
        Charon(b, workdir, peer_config("b", B_IP, B_ID)),
        Charon(c, workdir, peer_config("c", C_IP, C_ID)),
    ]
    da = Xfrmctl(a, workdir, two_peer_config(workdir))
    try:
        da.cli("up", "b")
        da.cli("up", "c")
        for source, table, dev in (("10.98.1.1", 42, "xfrm-b"), ("10.98.1.2", 43, "xfrm-c")):
            a.run(f"ip rule add from {source} table {table}")
            a.run(f"ip route add 10.98.2.0/24 dev {dev} table {table}")
        for source, conn, other in (("10.98.1.1", "b", "c"), ("10.98.1.2", "c", "b")):
            before = (packets_in(da, conn), packets_in(da, other))
            ping = a.run(f"ping -n -c 3 -i 0.3 -W 2 -I {source} {B_LAN}", check=False)
            assert ping.returncode == 0, (source, ping.stdout)
            after = (packets_in(da, conn), packets_in(da, other))
            assert after[0] - before[0] >= 3, (conn, before, after)  # its own peer answered
            assert after[1] == before[1], (other, before, after)  # the other one did not
        da.cli("down", "b")
        assert "xfrm-b" not in links(a) and "xfrm-c" in links(a), links(a)
    finally:
        codes = (da.stop(), *(ch.stop() for ch in charons))
    assert codes[0] == 0
    assert "xfrm-c" not in links(a), links(a)
