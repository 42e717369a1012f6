"""The daemon's life cycle in the real kernel (issue 5, scenarios 5-9).

Rekeys under steady traffic, trap policies, dead peer detection, NAT traversal, and a daemon
killed with SIGKILL and restarted. Every scenario checks what `status --json` reports, that
traffic flows, that only ESP crosses the wire, and that nothing of ours is left afterwards.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from interop import assert_only_esp, ping_stats, wait_for
from netlab import Host, Network
from xfrmctl_host import Daemon, assert_clean, start_all, stop_all, write_config

A_IP, B_IP = "10.99.0.1", "10.99.0.2"


def pair(net: Network, workdir: Path, a_extra: dict[str, str], b_extra: dict[str, str]) -> Any:
    """Hosts a and b on one switch, with a daemon each (not started)."""
    a, b = net.host("a"), net.host("b")
    sw, _ = net.bridge([(a, f"{A_IP}/24"), (b, f"{B_IP}/24")])
    da = Daemon(a, workdir, write_config(workdir, "a", A_IP, B_IP, A_IP, B_IP, **a_extra))
    db = Daemon(b, workdir, write_config(workdir, "b", B_IP, A_IP, B_IP, A_IP, **b_extra))
    return a, b, sw, da, db


def spis(host: Host) -> set[int]:
    return {sa.spi for sa in host.xfrm_sa_counters()}


def state_count(host: Host) -> int:
    return len(re.findall(r"^src ", host.xfrm_state_text(), re.M))


def assert_child(
    ike: dict[str, Any], mode: str, local_ts: str, remote_ts: str, acquired: bool = False
) -> dict[str, Any]:
    assert ike["state"] == "ESTABLISHED", ike
    assert ike["proposal"].startswith("aes256gcm16"), ike
    (child,) = ike["children"]
    assert child["state"] == "INSTALLED", child
    assert child["mode"] == mode and child["protocol"].lower() == "esp", child
    assert child["proposal"].startswith("aes256gcm16"), child
    if acquired:
        # RFC 7296 §2.9: the packet's own selectors go first and a responder may keep them
        # next to the configured ones; they must be narrowings of those.
        for got, want in ((child["local_ts"], local_ts), (child["remote_ts"], remote_ts)):
            assert want in got and all(t == want or t.startswith(want + "[") for t in got), child
    else:
        assert child["local_ts"] == [local_ts] and child["remote_ts"] == [remote_ts], child
    result: dict[str, Any] = child
    return result


def out_policy(host: Host, src: str, dst: str) -> str:
    """The text of `host`'s outbound policy for src/32 -> dst/32 ('' when there is none)."""
    blocks = re.split(r"\n(?=src )", host.xfrm_policy_text())
    mine = [b for b in blocks if b.startswith(f"src {src}/32 dst {dst}/32") and "dir out" in b]
    return mine[0] if mine else ""


def test_a_policy_someone_else_put_there_gives_way_to_the_tunnel(
    net: Network, lab_out: Path
) -> None:
    """A bypass policy of the tunnel's own selector, put in by hand, is in the way: the kernel
    refuses the daemon's NEWPOLICY (EEXIST), and the daemon reads the policy back and replaces
    it in a second round trip (kernel/transaction.py). The tunnel then carries only ESP."""
    workdir = lab_out / "lifecycle-foreign-policy"
    workdir.mkdir(parents=True, exist_ok=True)
    a, b, sw, da, db = pair(net, workdir, {}, {})
    a.run(f"ip xfrm policy add src {A_IP}/32 dst {B_IP}/32 dir out priority 7")
    assert "tmpl" not in out_policy(a, A_IP, B_IP)
    try:
        start_all(da, db)
        da.cli("up", "tun")
        assert "proto esp" in out_policy(a, A_IP, B_IP), a.xfrm_policy_text()
        with net.capture(sw, "br0") as cap:
            assert a.ping(B_IP, count=3), "ping through the tunnel failed"
        assert_only_esp(cap.text)
        da.cli("down", "tun")
        assert out_policy(a, A_IP, B_IP) == ""
    finally:
        stop_all(da, db)
    assert_clean(a, b)


# ------------------------------------------------------------------------------ scenario 5


@pytest.mark.long
def test_rekeys_under_steady_ping_lose_nothing(net: Network, lab_out: Path) -> None:
    workdir = lab_out / "lifecycle-rekey"
    workdir.mkdir(parents=True, exist_ok=True)
    a, b, sw, da, db = pair(
        net,
        workdir,
        {
            "conn_extra": "rekey_time: 25s\nrand_time: 0s\nover_time: 60s",
            "child_extra": "rekey_time: 10s\nlife_time: 60s\nrand_time: 0s",
        },
        {},
    )
    try:
        start_all(da, db)
        da.cli("up", "tun")
        first = da.status()["ike_sas"][0]
        first_child = assert_child(first, "transport", f"{A_IP}/32", f"{B_IP}/32")
        with net.capture(sw, "br0") as cap:
            # 20 packets/s for 33 s: three Child SA rekeys and one IKE SA rekey on the way.
            out = a.run(f"ping -n -q -i 0.05 -c 660 -W 2 {B_IP}", check=False, timeout=120)
        sent, received = ping_stats(out.stdout)
        assert sent == 660 and received == sent, out.stdout + da.log.read_text()[-4000:]
        assert_only_esp(cap.text)

        (ike,) = da.status()["ike_sas"]
        assert ike["unique_id"] != first["unique_id"], "the IKE SA was not rekeyed"
        child = assert_child(ike, "transport", f"{A_IP}/32", f"{B_IP}/32")
        assert child["spi_in"] != first_child["spi_in"], "the Child SA was not rekeyed"
        # Between rekeys (10 s apart, old inbound SA kept 5 s), each kernel holds one pair.
        wait_for(
            lambda: state_count(a) == 2 and state_count(b) == 2,
            "exactly one SA pair per host after the rekeys",
            15,
        )
        log = da.log.read_text()
        assert log.count("Child SA ready") >= 3 and "rekeyed to" in log, log[-4000:]

        da.cli("down", "tun")
        wait_for(lambda: state_count(a) == 0 and state_count(b) == 0, "SAs removed", 10)
        assert_clean(a, b)
    finally:
        stop_all(da, db)


# ------------------------------------------------------------------------------ scenarios 6, 9


def test_hard_expiry_from_the_kernel_deletes_informs_and_the_trap_renegotiates(
    net: Network, lab_out: Path
) -> None:
    """XFRM_MSG_EXPIRE hard (a packet limit, with no rekey limit to come first): the Child SA
    is deleted with the peer informed, and the trap brings a new one on the next packets."""
    workdir = lab_out / "lifecycle-hard-expiry"
    workdir.mkdir(parents=True, exist_ok=True)
    child = "start_action: trap\nlife_packets: 10"
    a, b, sw, da, db = pair(net, workdir, {"child_extra": child}, {})
    try:
        start_all(da, db)
        a.run(f"ping -n -c 1 -W 1 {B_IP}", check=False)  # the ACQUIRE
        wait_for(lambda: state_count(a) == 2 and state_count(b) == 2, "the first pair", 30)
        first = spis(a)
        a.run(f"ping -n -c 12 -i 0.2 -W 1 {B_IP}", check=False)  # past 10 packets
        wait_for(lambda: "reached its hard limit" in da.log.read_text(), "the hard expiry", 20)
        wait_for(lambda: not (first & spis(b)), "b told to delete its half", 20)
        with net.capture(sw, "br0") as cap:
            out = a.run(f"ping -n -c 8 -i 0.3 -W 2 {B_IP}", check=False)
            wait_for(lambda: len(spis(a) - first) == 2, "a new pair from the trap", 30)
        assert ping_stats(out.stdout)[1] > 0, out.stdout
        assert_only_esp(cap.text)
        assert "deleted by peer" in db.log.read_text()
    finally:
        stop_all(da, db)


@pytest.mark.long
def test_trap_then_kill9_and_restart(net: Network, lab_out: Path) -> None:
    workdir = lab_out / "lifecycle-trap"
    workdir.mkdir(parents=True, exist_ok=True)
    a, b, sw, da, db = pair(net, workdir, {"child_extra": "start_action: trap"}, {})
    try:
        start_all(da, db)
        # Scenario 6: policies but no SA until the first packet.
        assert state_count(a) == 0 and state_count(b) == 0
        assert "dir out" in a.xfrm_dir_policies(), a.xfrm_policy_text()
        assert da.status()["ike_sas"] == []
        with net.capture(sw, "br0") as cap:
            out = a.run(f"ping -n -c 40 -i 0.25 -W 2 {B_IP}", check=False, timeout=120)
            wait_for(lambda: bool(da.status()["ike_sas"]), "negotiation from the ACQUIRE", 30)
            assert a.ping(B_IP, count=5), "no traffic through the trapped tunnel"
        _, received = ping_stats(out.stdout)
        assert received > 0, out.stdout + da.log.read_text()
        assert_only_esp(cap.text)
        assert "kernel ACQUIRE" in da.log.read_text()
        (ike,) = da.status()["ike_sas"]
        assert_child(ike, "transport", f"{A_IP}/32", f"{B_IP}/32", acquired=True)
        old_spis = spis(a)
        assert len(old_spis) == 2

        # Scenario 9: SIGKILL leaves SAs and policies behind; a foreign SA and policy too.
        da.kill9()
        a.run(
            f"ip xfrm state add src {A_IP} dst 10.99.0.3 proto esp spi 0x4242 reqid 7 "
            f"mode transport aead 'rfc4106(gcm(aes))' 0x{'11' * 20} 128"
        )
        a.run(
            f"ip xfrm policy add src {A_IP}/32 dst 10.99.0.3/32 dir out "
            f"tmpl src {A_IP} dst 10.99.0.3 proto esp reqid 7 mode transport"
        )
        with net.capture(sw, "br0") as cap:
            pinger = a.popen(
                ["ping", "-n", "-i", "0.2", "-w", "150", B_IP],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            time.sleep(1)
            da.spawn().wait_ready()
            assert "stale XFRM objects" in da.log.read_text(), da.log.read_text()
            wait_for(
                lambda: len(spis(a) - old_spis - {0, 0x4242}) == 2,
                "the tunnel to come back through the trap",
                60,
            )
            assert a.ping(B_IP, count=5), "no traffic after the restart"
            pinger.terminate()
            pinger.wait(timeout=10)
        assert_only_esp(cap.text)
        assert spis(a) & old_spis == set(), "stale SAs of the killed daemon survived"
        assert 0x4242 in spis(a) and "10.99.0.3" in a.xfrm_dir_policies(), "a foreign object went"
        # The peer dropped the old SAs on INITIAL_CONTACT: one pair left there too.
        wait_for(lambda: state_count(b) == 2, "the peer to drop the stale pair", 20)
        (ike,) = da.status()["ike_sas"]
        assert_child(ike, "transport", f"{A_IP}/32", f"{B_IP}/32", acquired=True)

        da.cli("down", "tun")
        wait_for(lambda: len(spis(a)) == 1 and state_count(b) == 0, "SAs removed", 10)
        assert "dir out" in a.xfrm_dir_policies(), "down keeps the trap"
        a.run(
            "ip xfrm state deleteall proto esp && ip xfrm policy delete "
            f"src {A_IP}/32 dst 10.99.0.3/32 dir out"
        )
        assert_clean(b)
    finally:
        stop_all(da, db)


# ------------------------------------------------------------------------------ scenario 7


DPD_PEERS = {"clear": "10.99.0.2", "restart": "10.99.0.3", "trap": "10.99.0.4"}


def dpd_configs(workdir: Path) -> tuple[Path, dict[str, Path]]:
    """a's configuration with one connection per DPD action, each to its own peer (with its
    own ID: INITIAL_CONTACT is per identity), and each peer's configuration."""
    peers: dict[str, Path] = {}
    conns = ""
    for (action, ip), peer in zip(DPD_PEERS.items(), "bcd", strict=True):
        sub = workdir / action
        sub.mkdir(exist_ok=True)
        peers[action] = write_config(sub, peer, ip, A_IP, ip, A_IP)
        extra = {
            "conn_extra": "dpd_delay: 3s\ndpd_timeout: 8s",
            "child_extra": f"dpd_action: {action}",
        }
        own = write_config(sub, "a", A_IP, ip, A_IP, ip, **extra).read_text()
        own = own.split("connections:", 1)[1].replace("  tun:", f"  {action}:", 1)
        conns += own.replace("id: b.lab.example", f"id: {peer}.lab.example")
    cfg = workdir / "a.yaml"
    cfg.write_text("connections:" + conns)
    return cfg, peers


def sa_count(host: Host, peer: str) -> int:
    """SAs of `host` to or from `peer` (a holds the pairs of all three connections)."""
    pairs = re.findall(r"^src (\S+) dst (\S+)$", host.xfrm_state_text(), re.M)
    return sum(1 for src, dst in pairs if peer in (src, dst))


def declared_dead(d: Daemon, conn: str) -> Callable[[], bool]:
    return lambda: f"{conn}: peer {DPD_PEERS[conn]} is dead" in d.log.read_text()


def established(d: Daemon, conn: str) -> bool:
    return any(
        s["name"] == conn and s["state"] == "ESTABLISHED" and s["children"]
        for s in d.status()["ike_sas"]
    )


@pytest.mark.long
def test_dpd_actions_when_the_peers_are_killed(net: Network, lab_out: Path) -> None:
    """One daemon, three connections (dpd_action clear, restart and trap) to three peers that
    are killed with SIGKILL at once: DPD declares each dead within dpd_delay + dpd_timeout, then
    each action does what it says, while the others' SAs are untouched."""
    workdir = lab_out / "lifecycle-dpd"
    workdir.mkdir(parents=True, exist_ok=True)
    a = net.host("a")
    peers = {action: net.host(f"p{action}") for action in DPD_PEERS}
    sw, _ = net.bridge(
        [(a, f"{A_IP}/24"), *((peers[x], f"{ip}/24") for x, ip in DPD_PEERS.items())]
    )
    cfg_a, cfg_peers = dpd_configs(workdir)
    da = Daemon(a, workdir, cfg_a)
    dp = {x: Daemon(peers[x], workdir / x, cfg_peers[x]) for x in DPD_PEERS}
    try:
        start_all(da, *dp.values())
        for action, ip in DPD_PEERS.items():
            da.cli("up", action)
            assert a.ping(ip, count=3), f"{action}: no traffic before the kill"
        for d in dp.values():
            d.kill9()
        killed = time.monotonic()
        dp["restart"].spawn()  # comes back while a still waits for its DPD answer
        for action in DPD_PEERS:
            wait_for(declared_dead(da, action), f"DPD to declare the {action} peer dead", 40)
            took = time.monotonic() - killed
            # Silence for dpd_delay, then dpd_timeout without answer; polling adds a little.
            assert took <= 3 + 8 + 6, f"{action}: DPD took {took:.1f} s"
            print(f"DPD {action}: detected {took:.1f} s after kill -9")
        dpd_clear_gone(da, dp["clear"])
        dpd_trap_set(da)
        # Both killed peers come back side by side (each start is seconds of Python).
        start_all(dp["clear"], dp["trap"])
        assert_clean(dp["clear"].host)  # the clear peer's start removed its stale half
        dpd_trap_on_traffic(net, sw, da, dp["trap"])
        dpd_restart(net, sw, da, dp["restart"])
    finally:
        stop_all(da, *dp.values())


def dpd_clear_gone(da: Daemon, db: Daemon) -> None:
    ip = DPD_PEERS["clear"]
    wait_for(lambda: sa_count(da.host, ip) == 0, "DPD clear to remove the SAs", 5)
    assert f"dst {ip}/32" not in da.host.xfrm_dir_policies(), "clear left a policy"
    time.sleep(3)
    assert not any(s["name"] == "clear" for s in da.status()["ike_sas"]), "clear re-initiated"
    assert sa_count(da.host, ip) == 0
    # The killed peer's kernel still holds its half; its next start removes it.
    assert state_count(db.host) == 2


def dpd_trap_set(da: Daemon) -> None:
    ip = DPD_PEERS["trap"]
    wait_for(lambda: sa_count(da.host, ip) == 0, "DPD trap to remove the SAs", 5)
    assert f"dst {ip}/32" in da.host.xfrm_dir_policies(), "no trap after DPD"


def dpd_trap_on_traffic(net: Network, sw: Host, da: Daemon, db: Daemon) -> None:
    """The trap peer is back; only traffic starts a negotiation."""
    ip = DPD_PEERS["trap"]
    assert not any(s["name"] == "trap" for s in da.status()["ike_sas"]), "trap must wait"
    with net.capture(sw, "br0") as cap:
        da.host.run(f"ping -n -c 1 -W 1 {ip}", check=False)  # the ACQUIRE
        wait_for(lambda: established(da, "trap"), "the trap to negotiate on traffic", 60)
        assert da.host.ping(ip, count=3), "no traffic after the trap negotiated"
    assert_only_esp(cap.text)
    da.cli("down", "trap")
    wait_for(lambda: sa_count(da.host, ip) == 0, "trap SAs removed", 10)
    wait_for(lambda: state_count(db.host) == 0, "the trap peer's SAs removed", 10)


def dpd_restart(net: Network, sw: Host, da: Daemon, db: Daemon) -> None:
    ip = DPD_PEERS["restart"]
    db.wait_ready()
    wait_for(lambda: established(da, "restart"), "re-initiation after DPD", 120)
    with net.capture(sw, "br0") as cap:
        assert da.host.ping(ip, count=5), "no traffic after the DPD restart"
    assert_only_esp(cap.text)
    (ike,) = [s for s in da.status()["ike_sas"] if s["name"] == "restart"]
    assert_child(ike, "transport", f"{A_IP}/32", f"{ip}/32")
    wait_for(lambda: state_count(db.host) == 2, "the peer holds exactly the new pair", 20)
    da.cli("down", "restart")
    wait_for(lambda: sa_count(da.host, ip) == 0 and state_count(db.host) == 0, "removed", 10)
    assert_clean(db.host)


# ------------------------------------------------------------------------------ scenario 8


def test_nat_traversal_through_masquerade(net: Network, lab_out: Path) -> None:
    workdir = lab_out / "lifecycle-natt"
    workdir.mkdir(parents=True, exist_ok=True)
    a, nat, b = net.host("a"), net.host("nat", forward=True), net.host("b")
    net.link(a, "10.1.0.2/24", nat, "10.1.0.1/24")
    nat_out, _ = net.link(nat, "192.0.2.1/24", b, "192.0.2.2/24")
    net.masquerade(nat, nat_out)
    net.route(a, "default", "10.1.0.1")
    a.run("ip addr add 10.10.1.1/32 dev lo")
    b.run("ip addr add 10.10.2.1/32 dev lo")
    net.route(b, "10.10.1.0/24", "192.0.2.1")
    da = Daemon(
        a,
        workdir,
        write_config(
            workdir, "a", "10.1.0.2", "192.0.2.2", "10.10.1.0/24", "10.10.2.0/24", "tunnel"
        ),
    )
    db = Daemon(
        b,
        workdir,
        write_config(workdir, "b", "192.0.2.2", "%any", "10.10.2.0/24", "10.10.1.0/24", "tunnel"),
    )
    try:
        start_all(da, db)
        da.cli("up", "tun")
        # On the NAT box's outer link: a capture on b's own device would also show the packets
        # after the kernel decapsulated them.
        with net.capture(nat, nat_out) as cap:
            out = a.run("ping -n -c 5 -i 0.2 -W 2 -I 10.10.1.1 10.10.2.1", check=False)
        assert ping_stats(out.stdout)[1] > 0, out.stdout + da.log.read_text()[-3000:]
        assert_only_esp(cap.text, udp_encap=True)
        assert re.search(r"192\.0\.2\.1\.\d+ > 192\.0\.2\.2\.4500: UDP-encap: ESP", cap.text), (
            cap.text[-3000:]
        )
        (ike_a,) = da.status()["ike_sas"]
        assert ike_a["nat_local"] is True and ike_a["remote_port"] == 4500, ike_a
        child = assert_child(ike_a, "tunnel", "10.10.1.0/24", "10.10.2.0/24")
        assert child["encap"] is True and child["packets_out"] >= 5, child
        (ike_b,) = db.status()["ike_sas"]
        assert ike_b["nat_remote"] is True and ike_b["remote_addr"] == "192.0.2.1", ike_b
        assert ike_b["children"][0]["encap"] is True
        da.cli("down", "tun")
        wait_for(lambda: state_count(a) == 0 and state_count(b) == 0, "SAs removed", 10)
        assert_clean(a, b)
    finally:
        stop_all(da, db)
