"""Snapshot an established IKE SA, restore it into a fresh engine, and keep talking to the
untouched peer: child rekey, IKE rekey, DPD and delete work as if nothing happened."""

from __future__ import annotations

import json
from typing import Any

import pytest
from harness import Harness, child_spec, make_pair, seeded_endpoint

from xfrmctl.ike.engine import EndpointConfig, IkeEndpoint
from xfrmctl.ike.events import (
    ChildSaDeleted,
    ChildSaReady,
    IkeSaDeleted,
    IkeSaEstablished,
    IkeSaRekeyed,
    PeerDead,
    ProtocolViolation,
)
from xfrmctl.ike.snapshot import SnapshotError, export, restore

WALL = 1_800_000_000.0  # wall clock at the snapshot; the engine clock is the harness's


def up(h: Harness) -> None:
    h.a.initiate("a-to-b", now=h.now)
    h.run(2.0)
    assert h.of("a", IkeSaEstablished) and h.of("b", IkeSaEstablished)


def restart_a(h: Harness, spec: Any, config: EndpointConfig | None = None, gap: float = 3.0) -> Any:
    """Export A, go through JSON, and resume in a new engine whose clock starts elsewhere."""
    data, skipped = export(h.a, h.now, WALL)
    assert skipped == []
    data = json.loads(json.dumps(data))
    fresh = seeded_endpoint(spec, config, 99)
    h.now += gap  # the restart takes a while; the peer's clock runs on
    new_now = 5.0  # the new process's monotonic clock
    restored = restore(fresh, data, new_now, WALL + gap)
    assert restored.refused == []
    # The harness has one clock: shift the restored deadlines onto it.
    for sa in fresh.sas.values():
        for name in (
            "rekey_at",
            "reauth_at",
            "hard_at",
            "dpd_at",
            "last_inbound",
            "keepalive_sent",
        ):
            t = getattr(sa, name)
            if t is not None:
                setattr(sa, name, t - new_now + h.now)
        for c in sa.children:
            c.expire_at += h.now - new_now
            if c.rekey_at is not None:
                c.rekey_at += h.now - new_now
    h.a = fresh
    return data


def test_restored_sa_rekeys_dpds_and_deletes_with_untouched_peer() -> None:
    cfg = EndpointConfig(retransmit_timeout=1.0, retransmit_base=2.0, retransmit_tries=3)
    h, a_spec, _ = make_pair(config=cfg, a={"dpd_delay": 10.0})
    up(h)
    before = h.a.ike_sas()[0]
    (child_before,) = h.a.child_sas()
    reqid_before = next(iter(h.a.sas.values())).children[0].reqid
    restart_a(h, a_spec, cfg)
    h.events_a.clear()
    h.events_b.clear()
    after = h.a.ike_sas()[0]
    assert (after.spi_i, after.spi_r, after.ike_sa_id) == (
        before.spi_i,
        before.spi_r,
        before.ike_sa_id,
    )
    assert h.a.sas[bytes.fromhex(after.spi_i)].adopted
    (child_after,) = h.a.child_sas()
    assert (child_after.spi_in, child_after.spi_out) == (child_before.spi_in, child_before.spi_out)
    assert not h.a.events()  # resuming negotiates and installs nothing

    # Child rekey started by the restored side, then one started by the peer.
    h.a.rekey_child(child_after.spi_in, h.now)
    h.run(2.0)
    (ready,) = h.of("a", ChildSaReady)
    assert ready.replaces_spi_in == child_before.spi_in
    assert ready.reqid == reqid_before  # the kernel policies carry it
    (cb,) = h.b.child_sas()
    h.b.rekey_child(cb.spi_in, h.now)
    h.run(2.0)
    assert len(h.of("a", ChildSaReady)) == 2 and len(h.of("b", ChildSaReady)) == 2

    # IKE rekey started by the restored side: the peer decrypts it, so keys and IDs carried.
    h.a.rekey_ike(after.ike_sa_id, h.now)
    h.run(2.0)
    assert h.of("a", IkeSaRekeyed) and h.of("b", IkeSaRekeyed)

    # DPD keeps working over the new IKE SA.
    sent = len(h.log)
    h.run(25.0)
    assert len(h.log) >= sent + 4 and not h.of("a", PeerDead)
    assert not h.of("b", ProtocolViolation) and not h.of("a", ProtocolViolation)

    h.a.delete_ike(h.a.ike_sas()[0].ike_sa_id, h.now)
    h.run(2.0)
    assert h.of("b", IkeSaDeleted) and h.of("b", ChildSaDeleted)
    assert h.a.ike_sas() == [] and h.b.ike_sas() == []


def test_message_ids_and_last_response_carry_over() -> None:
    """The peer's next request is accepted, and its retransmission answered from the cache."""
    h, a_spec, _ = make_pair()
    up(h)
    (cb,) = h.b.child_sas()
    h.b.rekey_child(cb.spi_in, h.now)  # B's request moves A's peer_mid and fills its cache
    h.run(2.0)
    sa = next(iter(h.a.sas.values()))
    mids = (sa.my_mid, sa.peer_mid, sa.last_response)
    restart_a(h, a_spec)
    sa = next(iter(h.a.sas.values()))
    assert (sa.my_mid, sa.peer_mid, sa.last_response) == mids
    # B deletes its IKE SA: A must accept B's next message ID.
    h.b.delete_ike(h.b.ike_sas()[0].ike_sa_id, h.now)
    h.run(2.0)
    assert h.of("a", IkeSaDeleted) and h.a.ike_sas() == []


def test_peer_initiated_rekey_after_restore_over_nat() -> None:
    h, a_spec, _ = make_pair()
    h.nat_a = True
    up(h)
    data = restart_a(h, a_spec)
    assert data["ike_sas"][0]["nat_local"] is True
    sa = next(iter(h.a.sas.values()))
    assert sa.nat_local and sa.encap() is not None and sa.local[1] == 4500
    h.b.rekey_ike(h.b.ike_sas()[0].ike_sa_id, h.now)
    h.run(2.0)
    assert h.of("a", IkeSaRekeyed) and h.of("b", IkeSaRekeyed)


def test_deadlines_travel_as_wall_clock() -> None:
    h, a_spec, _ = make_pair(a={"rekey_time": 100.0, "rand_time": 0.0})
    up(h)
    sa = next(iter(h.a.sas.values()))
    assert sa.rekey_at is not None
    data, _ = export(h.a, h.now, WALL)
    assert data["ike_sas"][0]["times"]["rekey_at"] == pytest.approx(sa.rekey_at - h.now + WALL)
    fresh = seeded_endpoint(a_spec, None, 7)
    restore(fresh, data, 50.0, WALL + 10.0)
    (new,) = fresh.sas.values()
    assert new.rekey_at == pytest.approx(sa.rekey_at - h.now + 50.0 - 10.0)
    assert fresh.next_timer() is not None


def test_sa_with_exchange_in_flight_is_left_out() -> None:
    h, _, _ = make_pair()
    up(h)
    (ca,) = h.a.child_sas()
    h.a.rekey_child(ca.spi_in, h.now)  # request in flight, not yet delivered
    data, skipped = export(h.a, h.now, WALL)
    assert data["ike_sas"] == []
    assert len(skipped) == 1 and "exchange in flight" in skipped[0]
    assert "sk_" not in json.dumps(data)  # nothing about the skipped SA went out


def test_refuses_changed_or_missing_connection_and_bad_versions() -> None:
    h, a_spec, _ = make_pair()
    up(h)
    data, _ = export(h.a, h.now, WALL)
    changed, _, _ = make_pair(ike=("aes128gcm16-prfsha256-x25519",))
    r = restore(changed.a, data, 1.0, WALL)
    assert r.sas == [] and "connection changed" in r.refused[0]
    other_child, _, _ = make_pair(children=(child_spec(remote="10.3.0.0/16"),))
    assert "connection changed" in restore(other_child.a, data, 1.0, WALL).refused[0]
    empty = IkeEndpoint([])
    assert "no longer configured" in restore(empty, data, 1.0, WALL).refused[0]
    with pytest.raises(SnapshotError, match="version"):
        restore(seeded_endpoint(a_spec, None, 3), {**data, "version": 0}, 1.0, WALL)
    broken = json.loads(json.dumps(data))
    del broken["ike_sas"][0]["keys"]
    with pytest.raises(SnapshotError, match="malformed"):
        restore(seeded_endpoint(a_spec, None, 3), broken, 1.0, WALL)


def test_new_ids_and_reqids_do_not_collide_with_adopted_ones() -> None:
    two = child_spec("two", local="10.4.0.0/16", remote="10.3.0.0/16")
    h, a_spec, _ = make_pair(children=(child_spec(), two))
    h.a.initiate("a-to-b", ["net"], now=h.now)  # only the first child comes up
    h.run(2.0)
    old_reqids = h.a.reqids()
    (c,) = h.a.child_sas()
    restart_a(h, a_spec)
    assert h.a.reqids() == old_reqids
    h.events_a.clear()
    h.a.initiate_child("a-to-b", "two", h.now)
    h.run(2.0)
    (ready,) = h.of("a", ChildSaReady)
    assert ready.child == "two" and ready.unique_id > c.unique_id
    assert ready.unique_id != h.a.ike_sas()[0].ike_sa_id
    assert ready.reqid not in old_reqids.values()
