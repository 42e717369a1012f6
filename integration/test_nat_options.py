"""NAT-T options in the real kernel: keepalives keep the NAT's mapping open, and a mapping the
NAT changes under a live tunnel is followed (issue 9: `keep_alive`, XFRM_MSG_MAPPING).

Host a sits behind a NAT box whose UDP mappings time out after 10 s; b is outside, with no port
forward. Only a's keepalives keep the way in open: a2, behind the same NAT with `keep_alive: 0`
and idle for the same time, proves that such a tunnel then goes deaf from the outside.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from interop import ping_stats, wait_for
from netlab import Host, Network
from xfrmctl_host import (
    Daemon,
    assert_clean,
    start_all,
    stop_all,
    write_config,
)

NAT_OUT = "192.0.2.1"
NAT_IN, NAT_IN2 = "10.1.0.1", "10.3.0.1"  # the NAT's inside addresses, towards a and a2
UDP_TIMEOUT = 10  # seconds the NAT keeps an idle UDP mapping
IDLE = 2 * UDP_TIMEOUT + 5


def natted_pair(
    net: Network, workdir: Path, a_conn: str
) -> tuple[Host, Host, Host, str, Daemon, Daemon]:
    a, nat, b = net.host("a"), net.host("nat", forward=True), net.host("b")
    net.link(a, "10.1.0.2/24", nat, "10.1.0.1/24")
    nat_out, _ = net.link(nat, f"{NAT_OUT}/24", b, "192.0.2.2/24")
    net.masquerade(nat, nat_out)
    for key in ("nf_conntrack_udp_timeout", "nf_conntrack_udp_timeout_stream"):
        nat.run(f"sysctl -qw net.netfilter.{key}={UDP_TIMEOUT}")
    net.route(a, "default", "10.1.0.1")
    a.run("ip addr add 10.10.1.1/32 dev lo")
    b.run("ip addr add 10.10.2.1/32 dev lo")
    net.route(b, "10.10.1.0/24", NAT_OUT)
    cfg_a = write_config(
        workdir, "a", "10.1.0.2", "192.0.2.2", "10.10.1.0/24", "10.10.2.0/24", "tunnel", a_conn
    )
    cfg_b = write_config(
        workdir, "b", "192.0.2.2", "%any", "10.10.2.0/24", "10.10.1.0/24", "tunnel"
    )
    return a, nat, b, nat_out, Daemon(a, workdir, cfg_a), Daemon(b, workdir, cfg_b)


def ping(src: Host, frm: str, dst: str, count: int = 5) -> int:
    out = src.run(f"ping -n -c {count} -i 0.2 -W 2 -I {frm} {dst}", check=False)
    return ping_stats(out.stdout)[1]


def device_towards(host: Host, address: str) -> str:
    """The device `host` sends to `address` through (`ip route get`)."""
    words = host.run(f"ip -o route get {address}").stdout.split()
    return words[words.index("dev") + 1]


def second_initiator(net: Network, nat: Host, b: Host, workdir: Path) -> tuple[Host, Daemon, str]:
    """Host a2 behind the same NAT as a, with keepalives off, its own ID and inner subnet
    10.10.3.0/24; returns it, its daemon, and b's connection to it (YAML)."""
    a2 = net.host("a2")
    net.link(a2, "10.3.0.2/24", nat, f"{NAT_IN2}/24")
    net.route(a2, "default", NAT_IN2)
    a2.run("ip addr add 10.10.3.1/32 dev lo")
    net.route(b, "10.10.3.0/24", NAT_OUT)
    sub = workdir / "a2"
    sub.mkdir(exist_ok=True)
    own = write_config(
        sub,
        "a2",
        "10.3.0.2",
        "192.0.2.2",
        "10.10.3.0/24",
        "10.10.2.0/24",
        "tunnel",
        "keep_alive: 0",
    )
    own.write_text(own.read_text().replace("id: a.lab.example", "id: b.lab.example"))
    theirs = write_config(
        sub, "b", "192.0.2.2", "%any", "10.10.2.0/24", "10.10.3.0/24", "tunnel"
    ).read_text()
    theirs = theirs.replace("id: a.lab.example", "id: a2.lab.example")
    return a2, Daemon(a2, sub, own), theirs.split("connections:", 1)[1].replace("  tun:", "  tun2:")


@pytest.mark.long
def test_keepalives_keep_the_way_in_open(net: Network, lab_out: Path) -> None:
    """a (keep_alive: 5s) and a2 (keep_alive: 0) behind one NAT, idle side by side for twice
    the NAT's UDP timeout: only a's keepalives cross, and only a stays reachable from b."""
    workdir = lab_out / "nat-keepalive"
    workdir.mkdir(parents=True, exist_ok=True)
    a, nat, b, _nat_out, da, db = natted_pair(net, workdir, "keep_alive: 5s")
    a2, da2, b_to_a2 = second_initiator(net, nat, b, workdir)
    db.cfg.write_text(db.cfg.read_text() + b_to_a2)
    try:
        start_all(da, da2, db)
        da.cli("up", "tun")
        da2.cli("up", "tun")
        assert ping(a, "10.10.1.1", "10.10.2.1") > 0, da.log.read_text()[-3000:]
        assert ping(a2, "10.10.3.1", "10.10.2.1") > 0, da2.log.read_text()[-3000:]
        for d in (da, da2):
            (ike,) = d.status()["ike_sas"]
            assert ike["nat_local"] is True, ike
        keepalive = "udp and dst port 4500 and udp[8] = 0xff"
        with (
            net.capture(a, device_towards(a, NAT_IN), keepalive) as cap,
            net.capture(a2, device_towards(a2, NAT_IN2), keepalive) as cap2,
        ):
            time.sleep(IDLE)  # idle: nothing but keepalives may cross
        # From outside, with no port forward: only the NAT's mapping leads in.
        received, received2 = ping(b, "10.10.2.1", "10.10.1.1"), ping(b, "10.10.2.1", "10.10.3.1")
        assert cap.text.count("isakmp-nat-keep-alive") >= IDLE // 5 - 2, cap.text[-2000:]
        assert received > 0, (
            f"outside peer lost a after {IDLE} s idle\n" + da.log.read_text()[-3000:]
        )
        assert cap2.text.count("isakmp-nat-keep-alive") == 0, cap2.text[-2000:]
        assert received2 == 0, (
            "the NAT kept a2's mapping without keepalives: the test proves nothing"
        )
        for d in (da, da2):
            d.cli("down", "tun")
        wait_for(lambda: not (a.xfrm_state_text() + a2.xfrm_state_text()).strip(), "SAs gone", 20)
    finally:
        stop_all(da, da2, db)
    assert_clean(a, a2, b)


def test_a_changed_nat_mapping_is_followed(net: Network, lab_out: Path) -> None:
    workdir = lab_out / "nat-mapping"
    workdir.mkdir(parents=True, exist_ok=True)
    a, nat, b, nat_out, da, db = natted_pair(net, workdir, "keep_alive: 5s")
    try:
        start_all(da, db)
        da.cli("up", "tun")
        assert ping(a, "10.10.1.1", "10.10.2.1") > 0, da.log.read_text()[-3000:]
        (ike_b,) = db.status()["ike_sas"]
        old_port = ike_b["remote_port"]
        # The NAT forgets its mappings and maps a to other ports from now on.
        nat.run("nft flush chain ip nat postrouting")
        rule = f"oifname {nat_out} meta l4proto udp masquerade to :30000-30099"
        nat.run(f"nft add rule ip nat postrouting {rule}")
        nat.run("conntrack -D -p udp", check=False)  # exit 1 when nothing was left to delete
        received = ping(a, "10.10.1.1", "10.10.2.1", count=10)
        (ike_b,) = db.status()["ike_sas"]
        assert 30000 <= ike_b["remote_port"] <= 30099 != old_port, ike_b
        assert received >= 5, (
            f"replies did not follow the new mapping ({received}/10)\n" + db.log.read_text()[-3000:]
        )
        assert "following" in db.log.read_text()
        (child,) = ike_b["children"]
        assert child["encap"] is True
        sa_text = b.xfrm_state_text()
        assert f"encap type espinudp sport {ike_b['remote_port']} dport 4500" in sa_text, sa_text
        assert f"encap type espinudp sport 4500 dport {ike_b['remote_port']}" in sa_text, sa_text
        # IKE follows too: a liveness check from b reaches a through the new mapping.
        db.cli("down", "tun")
        wait_for(lambda: not a.xfrm_state_text().strip(), "a informed through the new mapping", 20)
    finally:
        stop_all(da, db)
    assert_clean(a, b)
