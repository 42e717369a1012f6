"""INITIAL_CONTACT (RFC 7296 §2.4): sent only for a first IKE SA, and acted on by the peer."""

from __future__ import annotations

from typing import Any

import pytest
from harness import Harness, make_pair, pair_specs, seeded_endpoint

from xfrmctl.ike.events import (
    ChildSaDeleted,
    IkeSaDeleted,
    IkeSaEstablished,
    MessageTrace,
)


def _auth_requests(h: Harness) -> list[MessageTrace]:
    return [
        t
        for t in h.of("a", MessageTrace)
        if t.direction == "out" and "IKE_AUTH request" in t.lines[0]
    ]


def _sends_initial_contact(t: MessageTrace) -> bool:
    return any(line.strip() == "NOTIFY INITIAL_CONTACT" for line in t.lines)


@pytest.mark.parametrize("a_side", [{}, {"remote_id": None}])
def test_only_the_first_ike_sa_carries_initial_contact(a_side: dict[str, Any]) -> None:
    h, _, _ = make_pair(a=a_side)
    h.a.trace = True
    h.a.initiate("a-to-b", now=h.now)
    h.run(2.0)
    h.a.initiate("a-to-b", now=h.now)
    h.run(2.0)
    assert len(h.of("a", IkeSaEstablished)) == 2 and len(h.of("b", IkeSaEstablished)) == 2
    first, second = _auth_requests(h)
    assert _sends_initial_contact(first)
    assert not _sends_initial_contact(second)
    # So B keeps both IKE SAs and both Child SAs.
    assert len(h.b.ike_sas()) == 2 and len(h.b.child_sas()) == 2
    assert not h.of("b", IkeSaDeleted) and not h.of("b", ChildSaDeleted)


def test_initial_contact_after_restart_deletes_old_sa_and_its_children() -> None:
    h, a_spec, _ = make_pair()
    h.a.initiate("a-to-b", now=h.now)
    h.run(2.0)
    (old_ike,) = h.b.ike_sas()
    (old_child,) = h.b.child_sas()
    h.a = seeded_endpoint(a_spec, None, 99)  # A reboots and has no state
    h.a.initiate("a-to-b", now=h.now)
    h.run(2.0)
    deleted = h.of("b", IkeSaDeleted)
    assert [(e.ike_sa_id, e.reason) for e in deleted] == [
        (old_ike.ike_sa_id, "peer sent INITIAL_CONTACT")
    ]
    assert [e.spi_in for e in h.of("b", ChildSaDeleted)] == [old_child.spi_in]
    assert [s.ike_sa_id for s in h.b.ike_sas()] != [old_ike.ike_sa_id]
    assert len(h.b.ike_sas()) == 1 and len(h.b.child_sas()) == 1


def test_initial_contact_spares_other_peer_identities() -> None:
    # B accepts any identity; a second peer (other ID, same address) says INITIAL_CONTACT.
    h, _, _ = make_pair(b={"remote_id": None})
    h.a.initiate("a-to-b", now=h.now)
    h.run(2.0)
    other_a, _ = pair_specs(a={"local_id": "c.example"})
    h.a = seeded_endpoint(other_a, None, 7)
    h.a.initiate("a-to-b", now=h.now)
    h.run(2.0)
    assert len(h.of("b", IkeSaEstablished)) == 2
    assert not h.of("b", IkeSaDeleted)
    assert sorted(s.remote_id for s in h.b.ike_sas()) == ["a.example", "c.example"]
