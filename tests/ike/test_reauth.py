"""Reauthentication (RFC 7296 §2.8.3), make-before-break, and the hard IKE SA lifetime."""

from __future__ import annotations

import ipaddress
from typing import Any

from harness import Flight, Harness, child_spec, make_pair

from xfrmctl.ike.engine import EndpointConfig
from xfrmctl.ike.events import (
    ChildSaDeleted,
    ChildSaReady,
    Event,
    IkeSaDeleted,
    IkeSaEstablished,
    IkeSaReauthenticated,
    IkeSaRekeyed,
    MessageTrace,
    PeerDead,
)
from xfrmctl.ike.message import decode_message
from xfrmctl.ike.payloads import TrafficSelector

TWO = (child_spec("one"), child_spec("two", local="10.3.0.0/16", remote="10.4.0.0/16"))


def _up(**kw: Any) -> Harness:
    h, _, _ = make_pair(children=TWO, **kw)
    h.a.trace = True
    h.a.initiate("a-to-b", now=h.now)
    h.run(3.0)
    assert len(h.of("a", ChildSaReady)) == 2 and len(h.of("b", ChildSaReady)) == 2
    return h


def _index(events: list[Event], kind: type, pred: Any = lambda e: True) -> list[int]:
    return [i for i, e in enumerate(events) if isinstance(e, kind) and pred(e)]


def test_reauth_builds_new_sas_before_deleting_the_old_ones() -> None:
    h = _up(a={"reauth_time": 100.0, "rand_time": 0.0, "rekey_time": 0.0})
    (old,) = h.a.ike_sas()
    assert old.reauth_at is not None and old.rekey_at is None
    assert old.hard_at == old.reauth_at + 1440.0  # ConnectionSpec.over_time default
    old_spis = {c.spi_in for c in h.a.child_sas()}
    h.run(110.0)
    (done,) = h.of("a", IkeSaReauthenticated)
    assert done.old_ike_sa_id == old.ike_sa_id and done.new_ike_sa_id != old.ike_sa_id
    # One IKE SA and both children on each side, all new.
    (new,) = h.a.ike_sas()
    assert new.ike_sa_id == done.new_ike_sa_id and len(h.b.ike_sas()) == 1
    assert len(h.a.child_sas()) == 2 and len(h.b.child_sas()) == 2
    assert not old_spis & {c.spi_in for c in h.a.child_sas()}
    # Make before break: both new Child SAs were ready before the first old one went.
    ev = h.events_a
    ready = _index(ev, ChildSaReady, lambda e: e.ike_sa_id == new.ike_sa_id)
    gone = _index(ev, ChildSaDeleted, lambda e: e.spi_in in old_spis)
    assert len(ready) == 2 and len(gone) == 2 and max(ready) < min(gone)
    (deleted,) = h.of("a", IkeSaDeleted)
    assert deleted.ike_sa_id == old.ike_sa_id and deleted.reason == "reauthenticated"
    assert [e.ike_sa_id for e in h.of("b", IkeSaDeleted)] == [
        e.ike_sa_id for e in h.of("b", IkeSaEstablished)
    ][:1]
    # A full IKE_SA_INIT + IKE_AUTH (not a rekey), without INITIAL_CONTACT this time.
    auths = [
        t
        for t in h.of("a", MessageTrace)
        if t.direction == "out" and "IKE_AUTH request" in t.lines[0]
    ]
    assert len(auths) == 2
    assert any("AUTH PSK" in line for line in auths[1].lines)
    assert not any("INITIAL_CONTACT" in line for line in auths[1].lines)
    assert not h.of("a", IkeSaRekeyed) and not h.of("b", PeerDead)
    # It keeps happening every reauth_time.
    h.run(100.0)
    assert len(h.of("a", IkeSaReauthenticated)) == 2
    assert len(h.a.ike_sas()) == 1 and len(h.b.child_sas()) == 2


def test_reauth_time_survives_ike_rekeys() -> None:
    h = _up(a={"reauth_time": 130.0, "rekey_time": 50.0, "rand_time": 0.0, "over_time": 20.0})
    h.run(120.0)  # established about 3 s before this
    assert len(h.of("a", IkeSaRekeyed)) == 2  # at 50 and 100: reauth not pushed back
    assert not h.of("a", IkeSaReauthenticated)
    h.run(10.0)
    assert h.of("a", IkeSaReauthenticated)
    assert len(h.a.ike_sas()) == 1 and len(h.b.child_sas()) == 2


def test_failed_reauth_keeps_old_sa_until_hard_lifetime() -> None:
    fast = EndpointConfig(retransmit_timeout=1.0, retransmit_tries=2)  # give up after ~7 s
    h = _up(
        config=fast,
        a={"reauth_time": 100.0, "rand_time": 0.0, "rekey_time": 0.0, "over_time": 60.0},
    )
    start = h.now
    (old,) = h.a.ike_sas()

    def refuse_new_ike_sas(f: Flight) -> list[Flight]:
        return [] if decode_message(f.dg.data).exchange == 34 else [f]  # IKE_SA_INIT

    h.hook = refuse_new_ike_sas
    h.run(150.0)
    # The attempt failed; the old SA and its children still carry traffic.
    assert [s.ike_sa_id for s in h.a.ike_sas()] == [old.ike_sa_id]
    assert len(h.a.child_sas()) == 2
    assert h.of("a", IkeSaDeleted)  # the new IKE SA gave up
    h.run(15.0)  # reauth at +100, hard lifetime at +160
    assert h.a.ike_sas() == [] and h.b.ike_sas() == []
    reasons = [e.reason for e in h.of("a", IkeSaDeleted) if e.ike_sa_id == old.ike_sa_id]
    assert reasons == ["IKE SA lifetime expired (over_time)"]
    assert h.now - start >= 160.0


def test_hard_lifetime_follows_rekey_time_when_rekeys_fail() -> None:
    h = _up(a={"rekey_time": 100.0, "rand_time": 0.0, "over_time": 30.0})
    (old,) = h.a.ike_sas()

    def drop_create_child(f: Flight) -> list[Flight]:
        return [] if decode_message(f.dg.data).exchange == 36 else [f]

    h.hook = drop_create_child
    h.run(125.0)
    assert [s.ike_sa_id for s in h.a.ike_sas()] == [old.ike_sa_id]
    h.run(10.0)
    reasons = [e.reason for e in h.of("a", IkeSaDeleted)]
    assert reasons == ["IKE SA lifetime expired (over_time)"]  # long before the rekey gives up
    assert h.a.ike_sas() == [] and not h.of("a", PeerDead)


def test_no_reauth_by_default() -> None:
    h = _up(a={"rekey_time": 0.0})
    h.run(5000.0)
    assert not h.of("a", IkeSaReauthenticated) and len(h.of("a", IkeSaEstablished)) == 1
    assert len(h.a.ike_sas()) == 1


def test_responder_can_reauthenticate_towards_the_initiator() -> None:
    h = _up(b={"reauth_time": 100.0, "rand_time": 0.0, "rekey_time": 0.0})
    (old,) = h.b.ike_sas()
    assert not old.initiator
    h.run(105.0)
    (done,) = h.of("b", IkeSaReauthenticated)
    (new,) = h.b.ike_sas()
    assert new.initiator and new.ike_sa_id == done.new_ike_sa_id
    assert len(h.a.ike_sas()) == 1 and len(h.a.child_sas()) == 2 and len(h.b.child_sas()) == 2
    # A saw the new IKE SA as responder, and the old one deleted by B.
    assert [e.initiator for e in h.of("a", IkeSaEstablished)] == [True, False]
    assert [e.reason for e in h.of("a", IkeSaDeleted)] == ["deleted by peer"]


def test_reauth_keeps_a_narrowed_child_narrow() -> None:
    def host(ip: str) -> TrafficSelector:
        a = ipaddress.ip_address(ip)
        return TrafficSelector(a, a)

    h, _, _ = make_pair(a={"reauth_time": 100.0, "rand_time": 0.0, "rekey_time": 0.0})
    packet = (host("10.1.0.7"), host("10.2.0.9"))
    h.a.initiate("a-to-b", now=h.now, traffic_selectors=packet)
    h.run(3.0)
    (before,) = h.a.child_sas()
    h.run(100.0)
    assert h.of("a", IkeSaReauthenticated)
    (after,) = h.a.child_sas()
    assert after.spi_in != before.spi_in
    assert (after.local_ts, after.remote_ts) == (before.local_ts, before.remote_ts)


def test_failed_reauth_is_retried_while_the_old_sa_has_time() -> None:
    fast = EndpointConfig(retransmit_timeout=1.0, retransmit_tries=2)
    a = {"reauth_time": 100.0, "rand_time": 0.0, "rekey_time": 0.0, "over_time": 300.0}
    h = _up(config=fast, a=a)
    (old,) = h.a.ike_sas()
    h.hook = lambda f: [] if decode_message(f.dg.data).exchange == 34 else [f]
    h.run(110.0)  # the first attempt (at ~97 s) gave up
    assert [s.ike_sa_id for s in h.a.ike_sas()] == [old.ike_sa_id]
    assert not h.of("a", IkeSaReauthenticated)
    h.hook = None
    h.run(60.0)  # retried a minute after the failure
    (done,) = h.of("a", IkeSaReauthenticated)
    assert done.old_ike_sa_id == old.ike_sa_id
    assert len(h.a.ike_sas()) == 1 and len(h.b.child_sas()) == 2
