"""The endpoint's SA index (by ID, by connection, by Child SA) answers what a scan of every SA
would, through establishment, a responder learning its connection in IKE_AUTH, Child and IKE
rekeys and deletions. A stale index would answer with a forgotten or misfiled SA."""

from __future__ import annotations

import dataclasses

from harness import Harness, make_pair

from xfrmctl.ike.engine import IkeEndpoint
from xfrmctl.ike.events import ChildSaReady, IkeSaEstablished
from xfrmctl.ike.exchanges import IkeState
from xfrmctl.ike.sa import ChildState
from xfrmctl.ike.spec import Identity


def scanned_ids(ep: IkeEndpoint, conn: str) -> list[int]:
    return [s.ike_sa_id for s in ep.ike_sas() if s.conn == conn]


def scanned_spis(ep: IkeEndpoint, conn: str) -> list[int]:
    return [c.spi_in for c in ep.child_sas() if c.conn == conn]


def agree(h: Harness) -> None:
    for ep, conn in ((h.a, "a-to-b"), (h.b, "b-from-a")):
        assert ep.ike_ids(conn) == scanned_ids(ep, conn)
        assert ep.child_spis(conn) == scanned_spis(ep, conn)
        for spi in scanned_spis(ep, conn):
            assert ep.has_child(spi)
        ep.index.check(ep.sas.values())


def test_the_index_follows_establish_rekeys_and_deletes() -> None:
    h, _, b_spec = make_pair()
    # A decoy the responder tries first (same addresses, another peer ID): IKE_AUTH moves the
    # IKE SA to b-from-a.
    decoy = dataclasses.replace(b_spec, name="decoy", remote_id=Identity.parse("c.example"))
    h.b.update_specs([decoy, b_spec])
    for ep in (h.a, h.b):  # strict mode checks (and so refreshes) the index after each step
        ep.config = dataclasses.replace(ep.config, strict=False)
    h.a.initiate("a-to-b", now=h.now)
    h.run(2.0)
    assert h.of("b", IkeSaEstablished)
    # The responder knew no connection at IKE_SA_INIT: it must be filed under the one
    # IKE_AUTH picked, not under "".
    assert h.b.ike_ids("b-from-a", IkeState.ESTABLISHED) == scanned_ids(h.b, "b-from-a") != []
    assert h.b.ike_ids("decoy") == []
    agree(h)

    (first,) = h.of("a", ChildSaReady)
    h.a.rekey_child(first.spi_in, h.now)
    h.run(3.0)
    assert not h.a.has_child(first.spi_in)
    assert h.a.child_spis("a-to-b", "net", ChildState.INSTALLED) == scanned_spis(h.a, "a-to-b")
    agree(h)

    (old_id,) = h.a.ike_ids("a-to-b")
    h.a.rekey_ike(old_id, h.now)
    h.run(3.0)
    (new_id,) = h.a.ike_ids("a-to-b")
    assert new_id != old_id
    # The children moved to the new IKE SA: found there by SPI, and deletable by SPI.
    (spi,) = h.a.child_spis("a-to-b")
    assert h.a.has_child(spi)
    agree(h)
    h.a.delete_child(spi, h.now)
    h.run(3.0)
    assert not h.a.has_child(spi) and h.a.child_spis("a-to-b") == []
    agree(h)

    h.b.delete_ike(h.b.ike_ids("b-from-a")[0], h.now)
    h.run(3.0)
    assert h.a.ike_ids("a-to-b") == [] and h.b.ike_ids("b-from-a") == []
    assert not h.a.index.by_id and not h.b.index.by_id
    agree(h)


def test_reqids_keep_counting_after_adopted_ones() -> None:
    h, _, _ = make_pair()
    first = h.a.reqid("x", "one", [], [])
    h.a.adopt_reqids({("y", "old", frozenset(), frozenset()): first + 10})
    assert h.a.reqid("x", "two", [], []) == first + 11
