"""Reqids: one per child config and agreed selector set, kept across rekeys, reused only
after a quarantine and only when no live Child SA or configured trap holds them.

The kernel ties a policy to its SA by reqid alone; Child SAs narrowed inside one config must
not share one (see IkeEndpoint.reqid)."""

from __future__ import annotations

import ipaddress

import pytest
from harness import child_spec, make_pair, mirror

from xfrmctl.ike.events import ChildSaReady, NegotiationFailed
from xfrmctl.ike.exchanges import IkeState
from xfrmctl.ike.payloads import TrafficSelector
from xfrmctl.ike.reqids import (
    LIMIT,
    SWEEP_AT_LEAST,
    ReqidKey,
    ReqidsExhausted,
    ReqidTable,
    selector_set,
    selectors_of,
)


def ts(prefix: str) -> TrafficSelector:
    net = ipaddress.ip_network(prefix)
    return TrafficSelector(net.network_address, net.broadcast_address)


def test_children_narrowed_under_one_config_get_their_own_reqids() -> None:
    narrow = (
        child_spec("one", "10.1.0.1/32", "10.2.0.1/32"),
        child_spec("two", "10.1.0.2/32", "10.2.0.2/32"),
    )
    wide = mirror(child_spec("wide"))
    h, _, _ = make_pair(children=narrow, b={"children": (wide,)})
    h.a.initiate("a-to-b", ["one"], now=h.now)
    h.run(2.0)
    h.a.initiate_child("a-to-b", "two", h.now)
    h.run(2.0)
    on_b = h.of("b", ChildSaReady)
    assert [e.child for e in on_b] == ["wide", "wide"]
    assert on_b[0].reqid != on_b[1].reqid, "two narrowed Child SAs share a reqid"
    assert h.b.trap_reqid("b-from-a", "wide") not in {e.reqid for e in on_b}
    on_a = h.of("a", ChildSaReady)
    assert len({e.reqid for e in on_a}) == 2

    # A rekey keeps the reqid of the Child SA it replaces, on both ends.
    h.b.rekey_child(on_b[1].spi_in, h.now)
    h.run(3.0)
    rekeyed = h.of("b", ChildSaReady)[2]
    assert rekeyed.replaces_spi_in == on_b[1].spi_in and rekeyed.reqid == on_b[1].reqid
    assert h.of("a", ChildSaReady)[2].reqid == on_a[1].reqid


def test_a_child_on_its_configured_selectors_shares_its_traps_reqid() -> None:
    h, _, _ = make_pair()
    h.a.initiate("a-to-b", now=h.now)
    h.run(2.0)
    (ready,) = h.of("a", ChildSaReady)
    assert ready.reqid == h.a.trap_reqid("a-to-b", "net")
    # Order of the selectors does not matter; their set does.
    a, b, c = ts("10.1.0.0/24"), ts("10.1.1.0/24"), ts("10.2.0.0/16")
    assert h.a.reqid("x", "y", [a, b], [c]) == h.a.reqid("x", "y", [b, a], [c])
    assert h.a.reqid("x", "y", [a], [c]) != h.a.reqid("x", "y", [a, b], [c])


def test_a_child_for_a_kernel_acquire_takes_its_traps_reqid_even_narrowed() -> None:
    """The kernel made a larval state of the trap's reqid for the packet; the Child SA must
    carry that reqid to replace it, even when the peer narrowed our selectors."""
    narrower = mirror(child_spec("net", "10.1.0.0/24", "10.2.0.0/24"))
    for acquired in (True, False):
        h, _, _ = make_pair(b={"children": (narrower,)})
        packet = (ts("10.1.0.5/32"),), (ts("10.2.0.7/32"),)
        h.a.initiate_child("a-to-b", "net", h.now, traffic_selectors=packet[0] + packet[1])
        if not acquired:
            h, _, _ = make_pair(b={"children": (narrower,)})
            h.a.initiate("a-to-b", now=h.now)
        h.run(2.0)
        (ready,) = h.of("a", ChildSaReady)
        assert ts("10.1.0.0/16") not in ready.local_ts, ready.local_ts  # the peer narrowed
        trap = h.a.trap_reqid("a-to-b", "net")
        assert (ready.reqid == trap) is acquired, (acquired, ready.reqid, trap)


def test_the_reqid_key_is_the_set_of_selectors_however_given() -> None:
    """One selector is keyed as itself (not a frozenset), more as a frozenset: the same set
    in any order or repetition, or adopted from a snapshot's frozensets, is one reqid."""
    h, _, _ = make_pair()
    a, b, c = ts("10.1.0.1/32"), ts("10.1.0.2/32"), ts("10.2.0.0/16")
    one = h.a.reqid("x", "n", [a], [c])
    assert h.a.reqid("x", "n", [a, a], (c,)) == one
    two = h.a.reqid("x", "n", [a, b], [c])
    assert two != one and h.a.reqid("x", "n", [b, a, b], [c, c]) == two
    h.a.adopt_reqids({("y", "m", frozenset({a}), frozenset({c})): two + 5})
    assert h.a.reqid("y", "m", [a], [c]) == two + 5
    assert all(key[2] is a for key in h.a.reqids() if key[0] == "y")


# ------------------------------------------------------------------ reuse (ike/reqids.py)


class Uses:
    """What the engine would answer `in_use` with: reqids of live Child SAs, kept keys."""

    def __init__(self) -> None:
        self.live: set[int] = set()
        self.kept: set[ReqidKey] = set()

    def __call__(self) -> tuple[set[int], set[ReqidKey]]:
        return set(self.live), set(self.kept)


def key(n: int) -> ReqidKey:
    return ("c", "net", (ts(f"10.{n >> 16}.{n >> 8 & 255}.{n & 255}/32"),), (ts("11.0.0.0/8"),))


def test_a_released_reqid_waits_out_its_quarantine_and_fresh_numbers_go_first() -> None:
    uses = Uses()
    table = ReqidTable(uses, limit=3, quarantine=10.0)
    assert [table.get(key(n), now=0.0) for n in range(3)] == [1, 2, 3]
    uses.live = {2, 3}  # key(0)'s Child SA is gone
    with pytest.raises(ReqidsExhausted, match="2 of 3 in use, 1 released less than 10 s ago"):
        table.get(key(3), now=5.0)  # reqid 1's kernel state may still be on its way out
    assert table.get(key(1)) == 2 and table.get(key(2)) == 3  # the live ones keep theirs
    assert table.get(key(3), now=15.0) == 1  # released at 5 s, quarantined 10 s
    uses.live = {1, 2, 3}
    assert table.get(key(3)) == 1


def test_a_configured_trap_keeps_its_reqid_without_any_child_sa() -> None:
    uses = Uses()
    table = ReqidTable(uses, limit=2, quarantine=0.0)
    trap = table.get(key(0), now=0.0)
    uses.kept = {key(0)}
    other = table.get(key(1), now=0.0)
    assert table.sweep() == 1  # key(1) had no Child SA; the trap's key stays
    assert table.get(key(0)) == trap and table.get(key(2), now=1.0) == other


def test_a_daemon_that_agreed_a_million_selector_sets_holds_only_the_live_ones() -> None:
    """A responder narrowing road warriors' /32s: each client's Child SA comes and goes.
    The table follows the live ones, and no two live Child SAs ever share a reqid."""
    uses = Uses()
    table = ReqidTable(uses, limit=LIMIT, quarantine=120.0)
    live: dict[int, int] = {}  # client -> reqid
    for n in range(200_000):
        live[n] = table.get(key(n % 60_000 + 60_000 * (n // 60_000 % 2)), now=n * 0.01)
        if len(live) > 500:  # 500 clients connected at any time
            del live[n - 500]
        uses.live = set(live.values())
        assert len(uses.live) == len(live)
    assert len(table) < 2 * max(SWEEP_AT_LEAST, 500) + 1


def test_after_a_restart_the_gaps_in_the_adopted_reqids_come_back_quarantined() -> None:
    """The previous daemon released reqids the snapshot no longer lists: they are lost only
    until the numbers run out, then quarantined from that moment."""
    uses = Uses()
    table = ReqidTable(uses, limit=4, quarantine=10.0)
    table.adopt({key(0): 4})  # 1-3 were the previous daemon's, released before it stopped
    uses.live = {4}
    with pytest.raises(ReqidsExhausted):
        table.get(key(1), now=100.0)
    assert table.get(key(1), now=110.0) == 1


def test_a_responder_out_of_reqids_refuses_that_child_sa_only() -> None:
    """NO_ADDITIONAL_SAS (RFC 7296 §3.10.1) for the Child SA, the IKE SA and its first
    child stand; once that child is gone and quarantined, its reqid serves the next."""
    narrow = (
        child_spec("one", "10.1.0.1/32", "10.2.0.1/32"),
        child_spec("two", "10.1.0.2/32", "10.2.0.2/32"),
    )
    h, _, _ = make_pair(children=narrow, b={"children": (mirror(child_spec("wide")),)})
    h.b.reqid_table.limit, h.b.reqid_table.quarantine = 1, 30.0
    h.a.initiate("a-to-b", ["one"], now=h.now)
    h.run(2.0)
    (first,) = h.of("b", ChildSaReady)
    h.a.initiate_child("a-to-b", "two", h.now)
    h.run(2.0)
    (failed,) = h.of("a", NegotiationFailed)
    assert failed.child == "two" and failed.reason == "NO_ADDITIONAL_SAS", failed
    (refused,) = h.of("b", NegotiationFailed)  # the responder's operator sees why
    assert refused.child == "wide" and "no reqid free: 1 of 1 in use" in refused.reason
    assert len(h.of("b", ChildSaReady)) == 1 and h.a.ike_ids("a-to-b", IkeState.ESTABLISHED)
    h.a.delete_child(h.of("a", ChildSaReady)[0].spi_in, h.now)
    h.run(2.0)
    h.a.initiate_child("a-to-b", "two", h.now)  # the sweep this asks for starts the quarantine
    h.run(2.0)
    assert len(h.of("a", NegotiationFailed)) == 2
    h.run(30.0)
    h.a.initiate_child("a-to-b", "two", h.now)
    h.run(2.0)
    second = h.of("b", ChildSaReady)[1]
    assert second.reqid == first.reqid and second.local_ts != first.local_ts


def test_a_key_of_one_selector_holds_the_selector_itself() -> None:
    """The table keeps two selector sets per Child SA: one selector, the usual case, is kept
    bare (no tuple or frozenset around it, issue 15); several are an order-free frozenset."""
    one, two = ts("10.1.0.1/32"), ts("10.1.0.2/32")
    assert selector_set([one, one]) is one
    assert selector_set([one, two]) == selector_set([two, one]) == frozenset({one, two})
    assert selectors_of(selector_set([one])) == frozenset({one})
    assert selectors_of(selector_set([two, one])) == frozenset({one, two})
