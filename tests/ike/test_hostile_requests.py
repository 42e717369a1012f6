"""Hostile but authenticated requests (found by mutation fuzzing): each is answered as RFC 7296
asks and costs nothing else; the engine's last-resort guard is loud in strict mode."""

from __future__ import annotations

import dataclasses

import pytest
from harness import A_IP, B_IP, Harness, make_pair

from xfrmctl.ike import engine as engine_module
from xfrmctl.ike.engine import EndpointConfig
from xfrmctl.ike.events import ChildSaDeleted, ProtocolViolation
from xfrmctl.ike.iana import NotifyType
from xfrmctl.ike.message import decode_message
from xfrmctl.ike.payloads import NotifyPayload, decode_payloads
from xfrmctl.ike.sa import IkeSa
from xfrmctl.ike.sk import unprotect


def established(config: EndpointConfig | None = None) -> Harness:
    h, _, _ = make_pair(config=config)
    h.a.initiate("a-to-b", now=h.now)
    h.run(2.0)
    assert h.a.child_sas() and h.b.child_sas()
    return h


def only_sa(ep: object) -> IkeSa:
    (sa,) = ep.sas.values()  # type: ignore[attr-defined]
    return sa


def test_unknown_exchange_type_is_answered_invalid_syntax_and_the_sa_lives() -> None:
    h = established()
    sa_a, sa_b = only_sa(h.a), only_sa(h.b)
    mid = sa_a.my_mid
    (packet,) = sa_a._encode(255, mid, False, [])
    h.b.receive_datagram(packet, (B_IP, 500), (A_IP, 500), h.now)
    (answer,) = h.b.datagrams_to_send()
    msg = decode_message(answer.data)
    assert msg.is_response and msg.exchange == 255 and msg.message_id == mid
    assert sa_a.crypto is not None
    inner_next, plain = unprotect(sa_a.crypto.in_keys(), answer.data, msg)
    payloads = decode_payloads(inner_next, plain)
    assert [p.notify_type for p in payloads if isinstance(p, NotifyPayload)] == [
        NotifyType.INVALID_SYNTAX
    ]
    assert sa_b.peer_mid == mid + 1  # the window moved on: the next request is accepted
    sa_a.my_mid = mid + 1  # as if A had sent it (it was hand-made here)
    # B kept its IKE SA and Child SA: a delete over the same SA pair still works.
    h.a.delete_child(h.a.child_sas()[0].spi_in, h.now)
    h.run(5.0)
    assert h.a.child_sas() == [] and h.b.child_sas() == []
    assert len(h.of("b", ChildSaDeleted)) == 1
    assert h.b.ike_sas(), "B must keep its IKE SA"


def test_the_guard_is_loud_when_strict_and_costs_one_request_when_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def bug(*args: object, **kwargs: object) -> list[object]:
        raise KeyError("a bug in a request handler")

    strict, lenient = established(), established()
    lenient.b.config = dataclasses.replace(lenient.b.config, strict=False)
    monkeypatch.setattr(engine_module.IkeEndpoint, "request_handler", lambda self, x: bug)
    for h in (strict, lenient):
        h.a.delete_child(h.a.child_sas()[0].spi_in, h.now)
    with pytest.raises(KeyError, match="a bug in a request handler"):
        strict.run(5.0)  # the harness runs strict
    lenient.run(5.0)
    violations = [e.reason for e in lenient.of("b", ProtocolViolation)]
    assert any("internal error KeyError" in v for v in violations), violations
