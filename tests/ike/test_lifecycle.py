"""INFORMATIONAL deletes, DPD, retransmission and give-up, CREATE_CHILD_SA and rekeying."""

from __future__ import annotations

from harness import Flight, Harness, child_spec, make_pair

from xfrmctl.ike.engine import EndpointConfig
from xfrmctl.ike.events import (
    ChildSaDeleted,
    ChildSaReady,
    IkeSaDeleted,
    IkeSaEstablished,
    IkeSaRekeyed,
    PeerDead,
)
from xfrmctl.ike.message import decode_message


def up(h: Harness, conn: str = "a-to-b") -> None:
    h.a.initiate(conn, now=h.now)
    h.run(2.0)
    assert h.of("a", IkeSaEstablished) and h.of("b", IkeSaEstablished)


def live_children(h: Harness, side: str) -> set[int]:
    ep = h.a if side == "a" else h.b
    return {c.spi_in for c in ep.child_sas()}


def test_delete_child_initiated_by_either_side() -> None:
    for side in ("a", "b"):
        h, _, _ = make_pair()
        up(h)
        ep = h.a if side == "a" else h.b
        (child,) = ep.child_sas()
        ep.delete_child(child.spi_in, h.now)
        h.run(2.0)
        da, db = h.of("a", ChildSaDeleted), h.of("b", ChildSaDeleted)
        assert len(da) == 1 and len(db) == 1
        assert da[0].spi_in == db[0].spi_out
        assert h.a.child_sas() == [] and h.b.child_sas() == []
        assert len(h.a.ike_sas()) == 1 and len(h.b.ike_sas()) == 1


def test_delete_ike_removes_children_on_both_sides() -> None:
    for side in ("a", "b"):
        h, _, _ = make_pair()
        up(h)
        ep = h.a if side == "a" else h.b
        ep.delete_ike(ep.ike_sas()[0].ike_sa_id, h.now)
        h.run(2.0)
        assert h.of("a", IkeSaDeleted) and h.of("b", IkeSaDeleted)
        assert h.of("a", ChildSaDeleted) and h.of("b", ChildSaDeleted)
        assert h.a.ike_sas() == [] and h.b.ike_sas() == []


def test_simultaneous_child_delete() -> None:
    h, _, _ = make_pair()
    up(h)
    (ca,) = h.a.child_sas()
    (cb,) = h.b.child_sas()
    h.a.delete_child(ca.spi_in, h.now)
    h.b.delete_child(cb.spi_in, h.now)
    h.run(3.0)
    assert len(h.of("a", ChildSaDeleted)) == 1 and len(h.of("b", ChildSaDeleted)) == 1
    assert h.a.child_sas() == [] and h.b.child_sas() == []


def test_dpd_keeps_quiet_sa_alive_and_detects_dead_peer() -> None:
    cfg = EndpointConfig(retransmit_timeout=1.0, retransmit_base=2.0, retransmit_tries=3)
    h, _, _ = make_pair(config=cfg, a={"dpd_delay": 10.0})
    up(h)
    sent_before = len(h.log)
    h.run(35.0)
    assert len(h.log) >= sent_before + 6  # three DPD rounds, each request and response
    assert not h.of("a", PeerDead)
    h.hook = lambda f: []  # the peer vanishes
    h.run(60.0)
    (dead,) = h.of("a", PeerDead)
    assert "no response to INFORMATIONAL" in dead.reason and dead.children == ("net",)
    assert h.a.ike_sas() == [] and h.of("a", ChildSaDeleted)


def test_retransmission_backoff_and_give_up() -> None:
    cfg = EndpointConfig(retransmit_timeout=2.0, retransmit_base=2.0, retransmit_tries=3)
    h, _, _ = make_pair(config=cfg)
    times: list[float] = []

    def blackhole(f: Flight) -> list[Flight]:
        times.append(h.now)
        return []

    h.hook = blackhole
    h.a.initiate("a-to-b", now=h.now)
    start = h.now
    h.run(100.0)
    assert [round(t - start, 3) for t in times] == [0.0, 2.0, 6.0, 14.0]
    (dead,) = h.of("a", PeerDead)
    assert "IKE_SA_INIT" in dead.reason
    assert h.a.ike_sas() == [] and h.a.next_timer() is None


def test_lost_response_is_answered_from_cache() -> None:
    h, _, _ = make_pair()
    dropped: list[bytes] = []

    def drop_first_auth_response(f: Flight) -> list[Flight]:
        msg = decode_message(f.dg.data)
        if f.sender == "b" and msg.exchange == 35 and not dropped:
            dropped.append(f.dg.data)
            return []
        return [f]

    h.hook = drop_first_auth_response
    up_before = h.now
    h.a.initiate("a-to-b", now=h.now)
    h.run(10.0)
    assert dropped and h.of("a", IkeSaEstablished)
    # B handled the request once, and resent exactly the same bytes.
    assert len(h.of("b", ChildSaReady)) == 1
    resent = [d for s, d in h.log if s == "b" and decode_message(d).exchange == 35]
    assert len(resent) == 2 and resent[0] == resent[1] == dropped[0]
    assert h.now > up_before


def test_duplicated_and_reordered_datagrams_are_harmless() -> None:
    h, _, _ = make_pair()

    def dup(f: Flight) -> list[Flight]:
        later = Flight(f.dg, f.sender, f.deliver_at + 0.5)
        return [f, later]

    h.hook = dup
    up(h)
    assert len(h.of("a", ChildSaReady)) == 1 and len(h.of("b", ChildSaReady)) == 1
    h.a.delete_child(h.a.child_sas()[0].spi_in, h.now)
    h.run(3.0)
    assert h.a.child_sas() == [] and h.b.child_sas() == []


def test_create_second_child_both_roles() -> None:
    for side in ("a", "b"):
        h, _, _ = make_pair(
            children=(child_spec(), child_spec("web", "10.3.0.0/24", "10.4.0.0/24")),
        )
        h.a.initiate("a-to-b", ["net"], now=h.now)
        h.run(2.0)
        ep = h.a if side == "a" else h.b
        conn = "a-to-b" if side == "a" else "b-from-a"
        ep.initiate_child(conn, "web", h.now)
        h.run(2.0)
        names = sorted(e.child for e in h.of("a", ChildSaReady))
        assert names == ["net", "web"]
        web_a = next(e for e in h.of("a", ChildSaReady) if e.child == "web")
        web_b = next(e for e in h.of("b", ChildSaReady) if e.child == "web")
        assert web_a.spi_in == web_b.spi_out and web_a.encr_key_in == web_b.encr_key_out
        assert str(web_a.local_ts[0]) == "10.3.0.0/24"


def test_create_child_with_pfs() -> None:
    h, _, _ = make_pair(
        children=(
            child_spec(),
            child_spec("pfs", "10.5.0.0/24", "10.6.0.0/24", proposals=("aes256gcm16-modp2048",)),
        ),
    )
    h.a.initiate("a-to-b", ["net"], now=h.now)
    h.run(2.0)
    h.a.initiate_child("a-to-b", "pfs", h.now)
    h.run(2.0)
    pa = next(e for e in h.of("a", ChildSaReady) if e.child == "pfs")
    pb = next(e for e in h.of("b", ChildSaReady) if e.child == "pfs")
    assert pa.encr_key_out == pb.encr_key_in


def test_child_rekey_both_roles() -> None:
    for side in ("a", "b"):
        h, _, _ = make_pair()
        up(h)
        ep = h.a if side == "a" else h.b
        (old,) = ep.child_sas()
        ep.rekey_child(old.spi_in, h.now)
        h.run(3.0)
        ready_a = h.of("a", ChildSaReady)
        assert len(ready_a) == 2
        new_a = ready_a[1]
        assert new_a.replaces_spi_in == ready_a[0].spi_in
        assert new_a.reqid == ready_a[0].reqid
        assert len(h.a.child_sas()) == 1 and len(h.b.child_sas()) == 1
        assert h.a.child_sas()[0].spi_in == new_a.spi_in
        assert h.b.child_sas()[0].spi_out == new_a.spi_in
        assert [e.spi_in for e in h.of("a", ChildSaDeleted)] == [ready_a[0].spi_in]


def test_ike_rekey_both_roles_keeps_children() -> None:
    for side in ("a", "b"):
        h, _, _ = make_pair(
            children=(child_spec(), child_spec("web", "10.3.0.0/24", "10.4.0.0/24"))
        )
        up(h)
        ep = h.a if side == "a" else h.b
        old_id = ep.ike_sas()[0].ike_sa_id
        ep.rekey_ike(old_id, h.now)
        h.run(3.0)
        assert h.of("a", IkeSaRekeyed) and h.of("b", IkeSaRekeyed)
        assert len(h.a.ike_sas()) == 1 and len(h.b.ike_sas()) == 1
        assert h.a.ike_sas()[0].ike_sa_id != old_id or side == "b"
        assert len(h.a.ike_sas()[0].children) == 2
        assert not h.of("a", ChildSaDeleted) and not h.of("b", ChildSaDeleted)
        # The new IKE SA works: delete a child over it.
        h.a.delete_child(h.a.child_sas()[0].spi_in, h.now)
        h.run(2.0)
        assert len(h.b.child_sas()) == 1


def test_automatic_rekeys_from_timers() -> None:
    h, _, _ = make_pair(
        rekey_time=100.0,
        rand_time=10.0,
        children=(child_spec(rekey_time=50.0, life_time=80.0, rand_time=5.0),),
    )
    up(h)
    h.run(300.0)
    assert len(h.of("a", IkeSaRekeyed)) >= 2
    assert len(h.of("a", ChildSaReady)) >= 5
    assert len(h.a.child_sas()) == 1 and len(h.b.child_sas()) == 1
    assert len(h.a.ike_sas()) == 1 and len(h.b.ike_sas()) == 1
    assert not h.of("a", PeerDead) and not h.of("b", PeerDead)


def test_initial_contact_replaces_stale_sa_after_peer_restart() -> None:
    h, a_spec, _ = make_pair()
    up(h)
    # A "reboots": a fresh engine with the same config connects again.
    from xfrmctl.ike.engine import IkeEndpoint

    h.a = IkeEndpoint([a_spec])
    h.events_a.clear()
    up(h)
    assert len(h.b.ike_sas()) == 1 and len(h.b.child_sas()) == 1
    assert any(e.reason == "peer sent INITIAL_CONTACT" for e in h.of("b", IkeSaDeleted))


def test_rekeyed_sa_expires_when_old_sa_delete_is_lost() -> None:
    cfg = EndpointConfig(retransmit_timeout=1.0, retransmit_base=2.0, retransmit_tries=2)
    h, _, _ = make_pair(config=cfg)
    up(h)
    ike_id = h.a.ike_sas()[0].ike_sa_id

    def drop_deletes(f: Flight) -> list[Flight]:
        return [] if decode_message(f.dg.data).exchange == 37 else [f]

    h.hook = drop_deletes
    h.a.rekey_ike(ike_id, h.now)
    h.run(60.0)
    assert len(h.a.ike_sas()) == 1 and len(h.b.ike_sas()) == 1
    assert not h.of("a", PeerDead) and not h.of("b", PeerDead)
    assert len(h.b.child_sas()) == 1


def test_dpd_timeout_shortens_give_up() -> None:
    cfg = EndpointConfig(retransmit_timeout=4.0, retransmit_base=1.8, retransmit_tries=5)
    h, _, _ = make_pair(config=cfg, a={"dpd_delay": 10.0, "dpd_timeout": 15.0})
    up(h)
    h.hook = lambda f: []
    # Probe at ~10 s, given up 15 s later: well before the ~165 s retransmission limit.
    h.run(20.0)
    assert not h.of("a", PeerDead)
    h.run(10.0)
    (dead,) = h.of("a", PeerDead)
    assert dead.reason.startswith("no response to INFORMATIONAL")
    assert h.a.ike_sas() == []


def test_dpd_from_responder_side() -> None:
    h, _, _ = make_pair(b={"dpd_delay": 5.0})
    up(h)
    n = len(h.log)
    h.run(12.0)
    probes = [decode_message(d) for s, d in h.log[n:] if s == "b"]
    assert probes and all(m.exchange == 37 and not m.is_response for m in probes)
    answers = [decode_message(d) for s, d in h.log[n:] if s == "a"]
    assert len(answers) == len(probes) and all(m.is_response for m in answers)


def test_acquire_selectors_are_offered_first() -> None:
    import ipaddress

    from xfrmctl.ike.payloads import TrafficSelector

    h, _, _ = make_pair(children=(child_spec(), child_spec("web", "10.3.0.0/24", "10.4.0.0/24")))
    h.a.initiate("a-to-b", ["net"], now=h.now)
    h.run(2.0)
    src = ipaddress.ip_address("10.3.0.7")
    dst = ipaddress.ip_address("10.4.0.9")
    packet = (TrafficSelector(src, src, 6, 40000, 40000), TrafficSelector(dst, dst, 6, 443, 443))
    h.a.initiate_child("a-to-b", "web", h.now, packet)
    h.run(2.0)
    web = next(e for e in h.of("a", ChildSaReady) if e.child == "web")
    assert web.local_ts[0] == packet[0] and web.remote_ts[0] == packet[1]
    assert "10.3.0.0/24" in [str(t) for t in web.local_ts]
