"""Message ID window (RFC 7296 §2.3): out-of-window requests and stray responses are dropped
and counted; the retransmission of the last request gets the cached response."""

from __future__ import annotations

from harness import A_IP, B_IP, Harness, make_pair

from xfrmctl.ike.events import IkeSaEstablished, IkeSaRekeyed, ProtocolViolation
from xfrmctl.ike.iana import ExchangeType
from xfrmctl.ike.message import decode_message
from xfrmctl.ike.sa import IkeSa


def _up() -> tuple[Harness, IkeSa, IkeSa]:
    h, _, _ = make_pair()
    h.a.initiate("a-to-b", now=h.now)
    h.run(2.0)
    assert h.of("a", IkeSaEstablished)
    (sa_a,) = h.a.sas.values()
    (sa_b,) = h.b.sas.values()
    return h, sa_a, sa_b


def _to_a(h: Harness, packets: list[bytes]) -> list[bytes]:
    for p in packets:
        h.a.receive_datagram(p, (A_IP, 500), (B_IP, 500), h.now)
    h.events_a.extend(h.a.events())
    return [d.data for d in h.a.datagrams_to_send()]


def _dpd_from_b(sa_b: IkeSa, mid: int) -> list[bytes]:
    """An authentic (correctly protected) empty INFORMATIONAL request with message ID `mid`."""
    return sa_b._encode(ExchangeType.INFORMATIONAL, mid, False, [])


def test_requests_outside_the_window_are_dropped_and_counted() -> None:
    h, sa_a, sa_b = _up()
    expected = sa_a.peer_mid
    assert expected == sa_b.my_mid == 0
    for mid in (expected + 1, expected + 1000, 0xFFFFFFFF):
        assert _to_a(h, _dpd_from_b(sa_b, mid)) == []
    assert h.a.counters["request_outside_window"] == 3
    assert sa_a.peer_mid == expected
    assert len(h.of("a", ProtocolViolation)) == 3
    # The window did not move: the right request is still answered.
    (answer,) = _to_a(h, _dpd_from_b(sa_b, expected))
    reply = decode_message(answer)
    assert reply.is_response and reply.message_id == expected
    assert sa_a.peer_mid == expected + 1


def test_retransmitted_request_gets_the_same_response_and_older_ones_nothing() -> None:
    h, sa_a, sa_b = _up()
    first = _to_a(h, _dpd_from_b(sa_b, 0))
    second = _to_a(h, _dpd_from_b(sa_b, 1))
    assert len(first) == len(second) == 1
    assert _to_a(h, _dpd_from_b(sa_b, 1)) == second  # cached, byte for byte
    assert h.a.counters["retransmitted_request"] == 1
    assert _to_a(h, _dpd_from_b(sa_b, 0)) == []  # two behind: outside the window
    assert h.a.counters["request_outside_window"] == 1
    assert sa_a.peer_mid == 2


def test_response_to_a_request_we_did_not_send_is_dropped() -> None:
    h, sa_a, sa_b = _up()
    assert sa_a.outstanding is None
    mid_before = sa_a.my_mid
    stray = sa_b._encode(ExchangeType.INFORMATIONAL, sa_a.my_mid, True, [])
    assert _to_a(h, stray) == []
    assert h.a.counters["unexpected_response"] == 1
    assert sa_a.my_mid == mid_before


def test_response_with_wrong_id_or_exchange_leaves_the_request_waiting() -> None:
    h, sa_a, sa_b = _up()
    h.a.rekey_ike(sa_a.id, h.now)
    (request,) = [d.data for d in h.a.datagrams_to_send()]
    o = sa_a.outstanding
    assert o is not None and o.exchange == ExchangeType.CREATE_CHILD_SA
    wrong_id = sa_b._encode(ExchangeType.CREATE_CHILD_SA, o.message_id + 1, True, [])
    wrong_exchange = sa_b._encode(ExchangeType.INFORMATIONAL, o.message_id, True, [])
    assert _to_a(h, wrong_id + wrong_exchange) == []
    assert h.a.counters["unexpected_response"] == 2
    assert sa_a.outstanding is o  # still waiting for the real answer
    # The real answer still completes the exchange.
    h.b.receive_datagram(request, (B_IP, 500), (A_IP, 500), h.now)
    (answer,) = [d.data for d in h.b.datagrams_to_send()]
    _to_a(h, [answer])
    assert sa_a.outstanding is not o
    h.run(2.0)
    assert h.of("a", IkeSaRekeyed) and h.of("b", IkeSaRekeyed)
