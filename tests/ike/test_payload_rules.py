"""The payload table (RFC 7296 §3.10-§3.15 per exchange): `check_payloads` names the first
payload that breaks an exchange's rules, and lets through what the rules allow."""

from __future__ import annotations

import pytest

from xfrmctl.ike.errors import RemoteProtocolError, UnsupportedCriticalPayload
from xfrmctl.ike.exchanges import check_payloads
from xfrmctl.ike.iana import ExchangeType, NotifyType
from xfrmctl.ike.payloads import (
    AuthPayload,
    IdPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    SaPayload,
    UnknownPayload,
)

INIT = ExchangeType.IKE_SA_INIT
AUTH = ExchangeType.IKE_AUTH
NONCE = NoncePayload(bytes(16))
KE = KePayload(31, bytes(32))
SA = SaPayload(())


def rejected(exchange: int, is_response: bool, payloads: list[Payload]) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        check_payloads(exchange, is_response, payloads)
    return info.value


def test_what_the_rules_allow_passes() -> None:
    check_payloads(INIT, False, [SA, KE, NONCE, NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP)])
    ids = [IdPayload(2, b"a.example", False), AuthPayload(2, bytes(32))]
    check_payloads(int(AUTH), False, ids)  # a plain number as it comes off the wire
    check_payloads(INIT, False, [SA, KE, NONCE, UnknownPayload(99, b"")])  # not critical


def test_an_unknown_critical_payload_is_refused_first() -> None:
    exc = rejected(INIT, False, [UnknownPayload(99, b"", critical=True), SA])
    assert isinstance(exc, UnsupportedCriticalPayload) and "99" in str(exc)


def test_an_unknown_exchange_is_invalid_syntax() -> None:
    exc = rejected(99, False, [NONCE])
    assert "unknown exchange type 99" in str(exc) and exc.notify == NotifyType.INVALID_SYNTAX


def test_a_payload_the_exchange_does_not_carry_is_named() -> None:
    exc = rejected(INIT, False, [SA, KE, NONCE, AuthPayload(2, b"")])
    assert str(exc) == "AUTH payload not allowed in IKE_SA_INIT"


def test_a_payload_allowed_once_and_repeated_is_named() -> None:
    assert str(rejected(INIT, True, [SA, KE, NONCE, NONCE])) == (
        "NONCE payload repeated in IKE_SA_INIT"
    )
    notifies = [NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP)] * 2  # may repeat
    check_payloads(INIT, True, [SA, KE, NONCE, *notifies])


def test_missing_payloads_are_all_named() -> None:
    assert str(rejected(INIT, False, [SA])) == "IKE_SA_INIT is missing KE, NONCE"


def test_an_error_answer_needs_none_of_the_usual_payloads() -> None:
    check_payloads(INIT, True, [NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN)])
    check_payloads(INIT, True, [NotifyPayload(NotifyType.COOKIE, bytes(8))])
    exc = rejected(INIT, False, [NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN)])
    assert "missing" in str(exc)  # a request is not an answer
