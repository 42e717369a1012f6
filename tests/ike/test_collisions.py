"""Every ordering of simultaneous rekeys and deletes (RFC 7296 §2.8.1, §2.25).

Each case starts two actions at once, then varies which datagrams are slowed down so that the
requests and responses cross in different orders. Afterwards both peers must agree on exactly
one IKE SA and the same set of Child SAs, and the kernel view (installed minus deleted) must
match the live children.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from harness import Flight, Harness, make_pair

from xfrmctl.ike import ike_rekey
from xfrmctl.ike.engine import EndpointConfig
from xfrmctl.ike.events import ChildSaDeleted, ChildSaReady, IkeSaEstablished, PeerDead
from xfrmctl.ike.iana import ExchangeType
from xfrmctl.ike.message import decode_message
from xfrmctl.ike.sa import IkeSa

DELAYS = [0.0, 0.005, 0.03, 0.3]
ORDERINGS = list(itertools.product(DELAYS, DELAYS))


def up(delays: tuple[float, float], seed: int = 0) -> Harness:
    cfg = EndpointConfig(temporary_failure_delay=1.0)
    h, _, _ = make_pair(config=cfg, seed=seed)
    h.a.initiate("a-to-b", now=h.now)
    h.run(2.0)
    assert h.of("a", IkeSaEstablished) and h.of("b", IkeSaEstablished)
    da, db = delays

    def slow(f: Flight) -> list[Flight]:
        extra = da if f.sender == "a" else db
        return [Flight(f.dg, f.sender, f.deliver_at + extra)]

    h.hook = slow
    return h


def kernel_view(h: Harness, side: str) -> set[int]:
    events = h.events_a if side == "a" else h.events_b
    live: set[int] = set()
    for e in events:
        if isinstance(e, ChildSaReady):
            live.add(e.spi_in)
        elif isinstance(e, ChildSaDeleted):
            live.discard(e.spi_in)
    return live


def check_consistent(h: Harness, children: int) -> None:
    a_ike, b_ike = h.a.ike_sas(), h.b.ike_sas()
    assert len(a_ike) == 1 and len(b_ike) == 1, (a_ike, b_ike)
    assert (a_ike[0].spi_i, a_ike[0].spi_r) == (b_ike[0].spi_i, b_ike[0].spi_r)
    a_pairs = {(c.spi_in, c.spi_out) for c in h.a.child_sas()}
    b_pairs = {(c.spi_out, c.spi_in) for c in h.b.child_sas()}
    assert a_pairs == b_pairs
    assert len(a_pairs) == children
    assert kernel_view(h, "a") == {p[0] for p in a_pairs}
    assert kernel_view(h, "b") == {p[1] for p in a_pairs}
    assert not h.of("a", PeerDead) and not h.of("b", PeerDead)
    assert all(c.state == "installed" for c in h.a.child_sas() + h.b.child_sas())
    assert all(s.state == "established" for s in a_ike + b_ike)


ACTIONS = {
    "child_rekey": lambda h, ep, now: ep.rekey_child(ep.child_sas()[0].spi_in, now),
    "child_delete": lambda h, ep, now: ep.delete_child(ep.child_sas()[0].spi_in, now),
    "ike_rekey": lambda h, ep, now: ep.rekey_ike(ep.ike_sas()[0].ike_sa_id, now),
}
EXPECTED_CHILDREN = {"child_rekey": 1, "child_delete": 0, "ike_rekey": 1}


# Both sides act at once: (a's action, b's action, seconds to settle, Child SAs afterwards).
COLLISIONS = [
    ("child_rekey", "child_rekey", 30.0, 1),
    ("child_rekey", "child_delete", 30.0, 0),
    ("child_delete", "child_rekey", 30.0, 0),
    ("ike_rekey", "child_rekey", 60.0, 1),
    ("child_rekey", "ike_rekey", 60.0, 1),
    ("ike_rekey", "ike_rekey", 60.0, 1),
]


def ike_spis(h: Harness) -> tuple[int, int]:
    sa = h.a.ike_sas()[0]
    return sa.spi_i, sa.spi_r


@pytest.mark.parametrize("delays", ORDERINGS)
@pytest.mark.parametrize(
    ("a_action", "b_action", "settle", "children"),
    COLLISIONS,
    ids=[f"{a}-vs-{b}" for a, b, _, _ in COLLISIONS],
)
def test_collision(
    a_action: str, b_action: str, settle: float, children: int, delays: tuple[float, float]
) -> None:
    h = up(delays)
    old = ike_spis(h)
    ACTIONS[a_action](h, h.a, h.now)
    ACTIONS[b_action](h, h.b, h.now)
    h.run(settle)
    check_consistent(h, children)
    if "ike_rekey" in (a_action, b_action):
        assert ike_spis(h) != old  # the IKE rekey happened
    if "child_rekey" in (a_action, b_action) and children:
        side = "a" if a_action == "child_rekey" else "b"
        assert len(h.of(side, ChildSaReady)) >= 2  # so did the Child SA rekey
    if (a_action, b_action) == ("ike_rekey", "ike_rekey"):
        # The surviving IKE SA still carries requests both ways.
        h.b.delete_child(h.b.child_sas()[0].spi_in, h.now)
        h.run(5.0)
        check_consistent(h, 0)


def test_child_rekey_collision_nonce_rule_deletes_redundant_sa() -> None:
    h = up((0.0, 0.0))
    h.a.rekey_child(h.a.child_sas()[0].spi_in, h.now)
    h.b.rekey_child(h.b.child_sas()[0].spi_in, h.now)
    h.run(30.0)
    # Both exchanges completed: three SAs were installed on each side, two deleted.
    assert len(h.of("a", ChildSaReady)) == 3 and len(h.of("a", ChildSaDeleted)) == 2
    check_consistent(h, 1)


def test_ike_rekey_collision_keeps_the_sa_without_the_lowest_nonce(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RFC 7296 §2.8.2: of two simultaneous IKE rekeys, the new SA made by the exchange holding
    the lowest of the four nonces is the redundant one (both peers must pick the same, and
    the same as strongSwan would)."""
    made: list[IkeSa] = []
    real = ike_rekey._new_sa

    def recording(*args: Any, **kw: Any) -> IkeSa:
        made.append(real(*args, **kw))
        return made[-1]

    monkeypatch.setattr(ike_rekey, "_new_sa", recording)
    h = up((0.0, 0.0))
    h.a.rekey_ike(h.a.ike_sas()[0].ike_sa_id, h.now)
    h.b.rekey_ike(h.b.ike_sas()[0].ike_sa_id, h.now)
    h.run(60.0)
    check_consistent(h, 1)
    on_a = [sa for sa in made if sa.ep is h.a]
    assert len(on_a) == 2  # both exchanges completed: a collision, not a TEMPORARY_FAILURE
    redundant = min(on_a, key=lambda sa: sa.lowest_nonce or b"")
    kept = next(sa for sa in on_a if sa is not redundant)
    survivor = h.a.ike_sas()[0]
    assert (survivor.spi_i, survivor.spi_r) == (kept.spi_i.hex(), kept.spi_r.hex())


@pytest.mark.parametrize("delays", ORDERINGS)
def test_ike_rekey_vs_ike_delete(delays: tuple[float, float]) -> None:
    h = up(delays)
    h.a.rekey_ike(h.a.ike_sas()[0].ike_sa_id, h.now)
    h.b.delete_ike(h.b.ike_sas()[0].ike_sa_id, h.now)
    h.run(200.0)
    # Whatever the order, nothing may survive on one side only.
    assert h.b.ike_sas() == [] or len(h.b.ike_sas()) == len(h.a.ike_sas())
    a_children = {c.spi_in for c in h.a.child_sas()}
    assert kernel_view(h, "a") == a_children
    assert {c.spi_out for c in h.b.child_sas()} == a_children


def test_messages_in_collisions_are_well_formed() -> None:
    h = up((0.0, 0.03))
    h.a.rekey_child(h.a.child_sas()[0].spi_in, h.now)
    h.b.rekey_ike(h.b.ike_sas()[0].ike_sa_id, h.now)
    h.run(60.0)
    known = {e.value for e in ExchangeType}
    for _, data in h.log:
        msg = decode_message(data)
        assert msg.version == 0x20 and msg.exchange in known, msg.describe()
    # Both collisions settled into one IKE SA and one Child SA pair that both sides agree on.
    (ike_a,) = h.a.ike_sas()
    (ike_b,) = h.b.ike_sas()
    assert (ike_a.spi_i, ike_a.spi_r) == (ike_b.spi_i, ike_b.spi_r)
    (ca,) = h.a.child_sas()
    (cb,) = h.b.child_sas()
    assert (ca.spi_in, ca.spi_out) == (cb.spi_out, cb.spi_in)


@pytest.mark.parametrize("seed", range(25))
@pytest.mark.parametrize("pair", list(itertools.product(ACTIONS, ACTIONS)))
def test_random_reordering_and_loss(pair: tuple[str, str], seed: int) -> None:
    """Per-datagram random delays and 10% loss (recovered by retransmission)."""
    import random

    rng = random.Random(seed)
    h = up((0.0, 0.0), seed)

    def chaos(f: Flight) -> list[Flight]:
        if rng.random() < 0.1:
            return []
        return [Flight(f.dg, f.sender, f.deliver_at + rng.random() * 0.4)]

    h.hook = chaos
    ACTIONS[pair[0]](h, h.a, h.now)
    ACTIONS[pair[1]](h, h.b, h.now)
    h.run(400.0)
    expected = min(EXPECTED_CHILDREN[pair[0]], EXPECTED_CHILDREN[pair[1]])
    check_consistent(h, expected)


def rekey_readies(h: Harness, side: str) -> list[ChildSaReady]:
    return [e for e in h.of(side, ChildSaReady) if e.replaces_spi_in is not None]


def test_only_an_uncontested_rekey_initiator_sends_on_the_new_sa_at_once() -> None:
    """RFC 7296 §2.8: the responder installed its inbound SA before answering, so the rekey
    initiator may switch at once; the responder waits for the old pair to go, and so does
    everyone in a collision, where the new SA may turn out redundant (§2.8.1)."""
    h = up((0.0, 0.0))
    h.a.rekey_child(h.a.child_sas()[0].spi_in, h.now)
    h.run(10.0)
    assert [r.outbound_now for r in rekey_readies(h, "a")] == [True]
    assert [r.outbound_now for r in rekey_readies(h, "b")] == [False]
    h = up((0.0, 0.0))
    h.a.rekey_child(h.a.child_sas()[0].spi_in, h.now)
    h.b.rekey_child(h.b.child_sas()[0].spi_in, h.now)
    h.run(30.0)
    check_consistent(h, 1)
    readies = rekey_readies(h, "a") + rekey_readies(h, "b")
    assert len(readies) == 4 and not any(r.outbound_now for r in readies)
