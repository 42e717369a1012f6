"""Table-driven state checks (in the spirit of h2): every (state, exchange, direction) has a
handler or a defined answer, and the engine gives that answer on the wire."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from harness import A_IP, B_IP, Flight, Harness, make_pair

import xfrmctl.ike
from xfrmctl.ike.exchanges import (
    STATE_TABLE,
    Dispatch,
    IkeState,
    InvalidTransition,
    Transition,
    dispatch_for,
    next_state,
)
from xfrmctl.ike.iana import ExchangeType, NotifyType
from xfrmctl.ike.message import decode_message
from xfrmctl.ike.payloads import DeletePayload, NotifyPayload, Payload
from xfrmctl.ike.sa import IkeSa


def test_table_is_complete() -> None:
    for state in IkeState:
        for exchange in ExchangeType:
            for response in (False, True):
                assert (state, exchange, response) in STATE_TABLE


def test_every_handled_request_has_a_handler() -> None:
    h, _, _ = make_pair()
    for (_state, exchange, response), action in STATE_TABLE.items():
        if action == Dispatch.HANDLE and not response:
            assert exchange != ExchangeType.IKE_SA_INIT  # handled statelessly by the endpoint
            assert callable(h.a.request_handler(exchange))


def test_unknown_exchange_is_dropped() -> None:
    assert dispatch_for(IkeState.ESTABLISHED, 99, False) == Dispatch.DROP


def _sa(ep_sas: dict[bytes, IkeSa]) -> IkeSa:
    (sa,) = ep_sas.values()
    return sa


def _inject(
    h: Harness, sender: IkeSa, exchange: ExchangeType, payloads: list[Payload]
) -> list[Payload] | None:
    """Send a request from B's SA to A; return A's decrypted answer, or None if none came."""
    packets = sender._encode(exchange, sender.my_mid, False, payloads)
    for p in packets:
        h.a.receive_datagram(p, (A_IP, 500), (B_IP, 500), h.now)
    out = h.a.datagrams_to_send()
    h.events_a.extend(h.a.events())
    if not out:
        return None
    msg = decode_message(out[0].data)
    assert msg.is_response and msg.message_id == sender.my_mid
    sender.my_mid += 1
    return sender._open(msg, out[0].data)


def _established() -> tuple[Harness, IkeSa]:
    h, _, _ = make_pair()
    h.a.initiate("a-to-b", now=h.now)
    h.run(2.0)
    return h, _sa(h.b.sas)


def _notify(answer: list[Payload] | None) -> int | None:
    if not answer:
        return None
    n = answer[0]
    return n.notify_type if isinstance(n, NotifyPayload) else None


def test_established_rejects_ike_auth_request() -> None:
    h, b_sa = _established()
    answer = _inject(h, b_sa, ExchangeType.IKE_AUTH, [NotifyPayload(NotifyType.INITIAL_CONTACT)])
    # IKE_AUTH rules need IDi and AUTH: the payload check fires before the state table.
    assert _notify(answer) == NotifyType.INVALID_SYNTAX
    assert len(h.a.ike_sas()) == 1


@pytest.mark.parametrize("exchange", [ExchangeType.CREATE_CHILD_SA, ExchangeType.INFORMATIONAL])
def test_half_open_and_auth_sent_answers(exchange: ExchangeType) -> None:
    # A initiates; B's IKE_AUTH response is lost, so A sits in AUTH_SENT while B is established.
    h, _, _ = make_pair()

    def drop_auth_response(f: Flight) -> list[Flight]:
        m = decode_message(f.dg.data)
        return [] if f.sender == "b" and m.exchange == ExchangeType.IKE_AUTH else [f]

    h.hook = drop_auth_response
    h.a.initiate("a-to-b", now=h.now)
    h.run(1.0)
    a_sa = _sa(h.a.sas)
    assert a_sa.state == IkeState.AUTH_SENT
    b_sa = _sa(h.b.sas)
    payloads: list[Payload] = []
    if exchange == ExchangeType.CREATE_CHILD_SA:
        from xfrmctl.ike.payloads import NoncePayload, SaPayload

        payloads = [SaPayload(h.b.specs["b-from-a"].children[0].proposals), NoncePayload(bytes(32))]
    answer = _inject(h, b_sa, exchange, payloads)
    expected = dispatch_for(IkeState.AUTH_SENT, exchange, False)
    assert expected == Dispatch.TEMPORARY_FAILURE
    assert _notify(answer) == NotifyType.TEMPORARY_FAILURE


def test_deleting_state_refuses_new_children() -> None:
    h, b_sa = _established()
    (a_sa,) = h.a.sas.values()
    h.hook = lambda f: []  # A's delete request never arrives
    h.a.delete_ike(a_sa.id, h.now)
    h.run(0.5)
    assert a_sa.state == IkeState.DELETING
    from xfrmctl.ike.payloads import NoncePayload, SaPayload

    spec = h.b.specs["b-from-a"].children[0]
    answer = _inject(
        h, b_sa, ExchangeType.CREATE_CHILD_SA, [SaPayload(spec.proposals), NoncePayload(bytes(32))]
    )
    assert _notify(answer) == NotifyType.TEMPORARY_FAILURE
    # but still answers a delete of the IKE SA
    answer = _inject(h, b_sa, ExchangeType.INFORMATIONAL, [DeletePayload(1)])
    assert answer == []


def test_state_changes_go_through_the_transition_table() -> None:
    path = [
        (Transition.KEYS_MADE, IkeState.AUTH_SENT),
        (Transition.AUTHENTICATED, IkeState.ESTABLISHED),
        (Transition.REPLACED, IkeState.REKEYED),
        (Transition.CLOSING, IkeState.DELETING),
        (Transition.DROPPED, IkeState.DEAD),
    ]
    state = IkeState.INIT_SENT
    for transition, expected in path:
        state = next_state(state, transition)
        assert state == expected
    for transition in Transition:  # nothing leaves DEAD
        with pytest.raises(InvalidTransition, match="in state dead"):
            next_state(IkeState.DEAD, transition)
    with pytest.raises(InvalidTransition):  # a responder never sends IKE_SA_INIT's request
        next_state(IkeState.INIT_RESPONDED, Transition.KEYS_MADE)


def test_only_the_ike_sa_assigns_its_state() -> None:
    """Exchanges call `IkeSa.transition`; a direct assignment would bypass the table."""
    offenders = []
    for path in Path(xfrmctl.ike.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Attribute) and target.attr == "state":
                        value = ast.unparse(node.value)
                        if "IkeState" in value or "next_state" in value:
                            offenders.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    # The constructor's initial state and `transition` itself.
    assert len(offenders) == 2 and all(o.startswith("sa.py:") for o in offenders), offenders
