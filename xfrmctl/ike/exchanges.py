"""An IKE SA's states: how it moves between them, what each exchange may carry, and which
(state, exchange, direction) has a handler.

As h11's state machine, these tables own the rules: an IKE SA changes state only through
`next_state` (an unlisted move is a bug, raised as `InvalidTransition`), and the payload
and dispatch tables are consulted before any handler runs, so handlers can rely on the
payloads they read being present at most once and of the expected kind.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from xfrmctl.ike.errors import RemoteProtocolError, UnsupportedCriticalPayload
from xfrmctl.ike.iana import ExchangeType, NotifyType, PayloadType, name_of
from xfrmctl.ike.payloads import NotifyPayload, Payload, UnknownPayload

P = PayloadType


class IkeState(Enum):
    INIT_SENT = "init-sent"  # initiator, waiting for the IKE_SA_INIT response
    AUTH_SENT = "auth-sent"  # initiator, waiting for the IKE_AUTH response
    INIT_RESPONDED = "half-open"  # responder, waiting for IKE_AUTH
    ESTABLISHED = "established"
    REKEYED = "rekeyed"  # replaced by a new IKE SA, waiting for its deletion
    DELETING = "deleting"
    DEAD = "dead"


class Transition(Enum):
    KEYS_MADE = "keys-made"  # initiator: IKE_SA_INIT answered, IKE_AUTH next (RFC 7296 §1.2)
    AUTHENTICATED = "authenticated"  # IKE_AUTH done, either role
    REKEY_MADE = "rekey-made"  # a new IKE SA from a CREATE_CHILD_SA rekey (§1.3.2)
    REPLACED = "replaced"  # its children moved to the IKE SA that rekeyed it
    CLOSING = "closing"  # our Delete or closing notify is on its way (§1.4.1, §2.21.2)
    DROPPED = "dropped"  # gone, with its children


TRANSITIONS: dict[tuple[IkeState, Transition], IkeState] = {
    (IkeState.INIT_SENT, Transition.KEYS_MADE): IkeState.AUTH_SENT,
    (IkeState.AUTH_SENT, Transition.AUTHENTICATED): IkeState.ESTABLISHED,
    (IkeState.INIT_RESPONDED, Transition.AUTHENTICATED): IkeState.ESTABLISHED,
    (IkeState.INIT_SENT, Transition.REKEY_MADE): IkeState.ESTABLISHED,
    (IkeState.INIT_RESPONDED, Transition.REKEY_MADE): IkeState.ESTABLISHED,
    (IkeState.ESTABLISHED, Transition.REPLACED): IkeState.REKEYED,
    (IkeState.REKEYED, Transition.REPLACED): IkeState.REKEYED,
    (IkeState.AUTH_SENT, Transition.CLOSING): IkeState.DELETING,
    (IkeState.ESTABLISHED, Transition.CLOSING): IkeState.DELETING,
    (IkeState.REKEYED, Transition.CLOSING): IkeState.DELETING,
    **{(state, Transition.DROPPED): IkeState.DEAD for state in IkeState if state != IkeState.DEAD},
}


class InvalidTransition(Exception):
    """A move the table does not allow: a bug in the engine, never the peer's doing."""


def next_state(state: IkeState, transition: Transition) -> IkeState:
    try:
        return TRANSITIONS[(state, transition)]
    except KeyError:
        raise InvalidTransition(f"{transition.value} in state {state.value}") from None


@dataclass(frozen=True)
class PayloadRule:
    allowed: frozenset[int]
    required: frozenset[int]
    once: frozenset[int]


_ONCE = frozenset({P.SA, P.KE, P.NONCE, P.IDi, P.IDr, P.AUTH, P.TSi, P.TSr, P.CP})


def _rule(allowed: set[PayloadType], required: set[PayloadType]) -> PayloadRule:
    return PayloadRule(
        frozenset(int(p) for p in allowed | {P.NOTIFY, P.VENDOR}),
        frozenset(int(p) for p in required),
        frozenset(int(p) for p in _ONCE),
    )


# (exchange, is_response) -> payloads allowed (inside SK for protected exchanges).
PAYLOAD_RULES: dict[tuple[int, bool], PayloadRule] = {
    (ExchangeType.IKE_SA_INIT, False): _rule(
        {P.SA, P.KE, P.NONCE, P.CERTREQ}, {P.SA, P.KE, P.NONCE}
    ),
    (ExchangeType.IKE_SA_INIT, True): _rule(
        {P.SA, P.KE, P.NONCE, P.CERTREQ}, {P.SA, P.KE, P.NONCE}
    ),
    (ExchangeType.IKE_AUTH, False): _rule(
        {P.IDi, P.IDr, P.CERT, P.CERTREQ, P.AUTH, P.SA, P.TSi, P.TSr, P.CP, P.EAP}, {P.IDi, P.AUTH}
    ),
    (ExchangeType.IKE_AUTH, True): _rule(
        {P.IDr, P.CERT, P.AUTH, P.SA, P.TSi, P.TSr, P.CP, P.EAP}, {P.IDr, P.AUTH}
    ),
    (ExchangeType.CREATE_CHILD_SA, False): _rule(
        {P.SA, P.NONCE, P.KE, P.TSi, P.TSr}, {P.SA, P.NONCE}
    ),
    (ExchangeType.CREATE_CHILD_SA, True): _rule(
        {P.SA, P.NONCE, P.KE, P.TSi, P.TSr}, {P.SA, P.NONCE}
    ),
    (ExchangeType.INFORMATIONAL, False): _rule({P.DELETE, P.CP}, set()),
    (ExchangeType.INFORMATIONAL, True): _rule({P.DELETE, P.CP}, set()),
}


def _is_error_answer(payloads: Sequence[Payload]) -> bool:
    """Responses made of an error or COOKIE notify need none of the usual payloads."""
    return any(
        isinstance(p, NotifyPayload)
        and (p.notify_type < 16384 or p.notify_type == NotifyType.COOKIE)
        for p in payloads
    )


def check_payloads(exchange: int, is_response: bool, payloads: Sequence[Payload]) -> None:
    """Raise RemoteProtocolError naming the first payload that breaks the exchange's rules.
    Runs on every message: names are formatted only for an error (issue 15)."""
    kinds: list[int] = []
    for p in payloads:
        if isinstance(p, UnknownPayload):
            if p.critical:
                raise UnsupportedCriticalPayload(p.payload_type)
        else:
            kinds.append(p.ptype)
    rule = PAYLOAD_RULES.get((exchange, is_response))
    if rule is None:
        raise RemoteProtocolError(
            f"unknown exchange type {exchange}", notify=NotifyType.INVALID_SYNTAX
        )
    if not rule.allowed.issuperset(kinds):
        k = next(k for k in kinds if k not in rule.allowed)
        raise RemoteProtocolError(f"{_name(k)} payload not allowed in {_exchange(exchange)}")
    if len(set(kinds)) != len(kinds):
        for k, n in Counter(kinds).items():
            if n > 1 and k in rule.once:
                raise RemoteProtocolError(f"{_name(k)} payload repeated in {_exchange(exchange)}")
    if is_response and _is_error_answer(payloads):
        return
    missing = rule.required.difference(kinds)
    if missing:
        names = ", ".join(sorted(_name(m) for m in missing))
        raise RemoteProtocolError(f"{_exchange(exchange)} is missing {names}")


def _name(ptype: int) -> str:
    return name_of(PayloadType, ptype)


def _exchange(exchange: int) -> str:
    return name_of(ExchangeType, exchange)


class Dispatch(Enum):
    """What to do with an incoming message in a given state, when there is no handler."""

    HANDLE = "handle"
    DROP = "drop"  # silently: retransmits, or messages that cannot be from a live peer
    TEMPORARY_FAILURE = "temporary-failure"  # request answered with TEMPORARY_FAILURE
    INVALID_SYNTAX = "invalid-syntax"  # request answered with INVALID_SYNTAX


E = ExchangeType
S = IkeState

# (state, exchange, is_response) -> Dispatch. Every combination is listed (see the tests).
STATE_TABLE: dict[tuple[IkeState, ExchangeType, bool], Dispatch] = {}
for _s in IkeState:
    for _e in ExchangeType:
        for _r in (False, True):
            STATE_TABLE[(_s, _e, _r)] = Dispatch.DROP
for _key in [
    (S.INIT_SENT, E.IKE_SA_INIT, True),
    (S.AUTH_SENT, E.IKE_AUTH, True),
    (S.INIT_RESPONDED, E.IKE_AUTH, False),
]:
    STATE_TABLE[_key] = Dispatch.HANDLE
for _s in (S.ESTABLISHED, S.REKEYED, S.DELETING):
    STATE_TABLE[(_s, E.INFORMATIONAL, False)] = Dispatch.HANDLE
    STATE_TABLE[(_s, E.INFORMATIONAL, True)] = Dispatch.HANDLE
    STATE_TABLE[(_s, E.CREATE_CHILD_SA, True)] = Dispatch.HANDLE
    STATE_TABLE[(_s, E.IKE_AUTH, False)] = Dispatch.INVALID_SYNTAX
STATE_TABLE[(S.ESTABLISHED, E.CREATE_CHILD_SA, False)] = Dispatch.HANDLE
STATE_TABLE[(S.REKEYED, E.CREATE_CHILD_SA, False)] = Dispatch.TEMPORARY_FAILURE
STATE_TABLE[(S.DELETING, E.CREATE_CHILD_SA, False)] = Dispatch.TEMPORARY_FAILURE
# Before IKE_AUTH completes only the exchange in flight makes sense; a request from a peer
# that has not authenticated yet is answered so it does not retransmit forever.
STATE_TABLE[(S.AUTH_SENT, E.CREATE_CHILD_SA, False)] = Dispatch.TEMPORARY_FAILURE
STATE_TABLE[(S.AUTH_SENT, E.INFORMATIONAL, False)] = Dispatch.TEMPORARY_FAILURE
STATE_TABLE[(S.INIT_RESPONDED, E.CREATE_CHILD_SA, False)] = Dispatch.INVALID_SYNTAX
STATE_TABLE[(S.INIT_RESPONDED, E.INFORMATIONAL, False)] = Dispatch.INVALID_SYNTAX


def dispatch_for(state: IkeState, exchange: int, is_response: bool) -> Dispatch:
    try:
        return STATE_TABLE[(state, ExchangeType(exchange), is_response)]
    except ValueError:
        return Dispatch.DROP
