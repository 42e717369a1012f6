"""Reqids: one per child config and agreed selector set, kept across rekeys.

The kernel ties a policy to its SA by reqid alone; Child SAs narrowed inside one config must
not share one (see IkeEndpoint.reqid)."""

from __future__ import annotations

import ipaddress

from harness import child_spec, make_pair, mirror

from xfrmctl.ike.events import ChildSaReady
from xfrmctl.ike.payloads import TrafficSelector


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
    """One selector is keyed as a 1-tuple (not a frozenset), more as a frozenset: the same
    set in any order or repetition, or adopted from a snapshot's frozensets, is one reqid."""
    h, _, _ = make_pair()
    a, b, c = ts("10.1.0.1/32"), ts("10.1.0.2/32"), ts("10.2.0.0/16")
    one = h.a.reqid("x", "n", [a], [c])
    assert h.a.reqid("x", "n", [a, a], (c,)) == one
    two = h.a.reqid("x", "n", [a, b], [c])
    assert two != one and h.a.reqid("x", "n", [b, a, b], [c, c]) == two
    h.a.adopt_reqids({("y", "m", frozenset({a}), frozenset({c})): two + 5})
    assert h.a.reqid("y", "m", [a], [c]) == two + 5
    assert all(
        len(key[2]) == 1 and isinstance(key[2], tuple) for key in h.a.reqids() if key[0] == "y"
    )
