"""NAT-T options in the real kernel: keepalives keep the NAT's mapping open, and a mapping the
NAT changes under a live tunnel is followed (issue 9: `keep_alive`, XFRM_MSG_MAPPING).

Host a sits behind a NAT box whose UDP mappings time out after 10 s; b is outside, with no port
forward. Only a's keepalives keep the way in open: the parametrised run with `keep_alive: 0`
proves that the same idle tunnel then goes deaf from the outside.
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


@pytest.mark.long
@pytest.mark.parametrize("keep_alive", ["5s", "0"])
def test_keepalives_keep_the_way_in_open(net: Network, lab_out: Path, keep_alive: str) -> None:
    workdir = lab_out / f"nat-keepalive-{keep_alive}"
    workdir.mkdir(parents=True, exist_ok=True)
    a, nat, b, nat_out, da, db = natted_pair(net, workdir, f"keep_alive: {keep_alive}")
    try:
        start_all(da, db)
        da.cli("up", "tun")
        assert ping(a, "10.10.1.1", "10.10.2.1") > 0, da.log.read_text()[-3000:]
        (ike_a,) = da.status()["ike_sas"]
        assert ike_a["nat_local"] is True, ike_a
        with net.capture(nat, nat_out, "udp and dst port 4500 and udp[8] = 0xff") as cap:
            time.sleep(IDLE)  # idle: nothing but keepalives may cross
        keepalives = cap.text.count("isakmp-nat-keep-alive")
        # From outside, with no port forward: only the NAT's mapping leads to a.
        received = ping(b, "10.10.2.1", "10.10.1.1")
        if keep_alive == "5s":
            assert keepalives >= IDLE // 5 - 2, cap.text[-2000:]
            assert received > 0, (
                f"outside peer lost a after {IDLE} s idle\n" + da.log.read_text()[-3000:]
            )
        else:
            assert keepalives == 0, cap.text[-2000:]
            assert received == 0, (
                "the NAT kept the mapping without keepalives: the test proves nothing"
            )
        da.cli("down", "tun")
        wait_for(lambda: not a.xfrm_state_text().strip(), "SAs removed", 20)
    finally:
        stop_all(da, db)
    assert_clean(a, b)


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
