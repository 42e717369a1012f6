"""INVALID_IKE_SPI (RFC 7296 §2.21.4, §1.5): answered statelessly, rate-limited, never trusted."""

from __future__ import annotations

import ipaddress

from harness import A_IP, B_IP, Harness, make_pair, seeded_endpoint

from xfrmctl.ike.engine import EndpointConfig, IkeEndpoint
from xfrmctl.ike.events import IkeSaDeleted, IkeSaEstablished, MessageTrace, PeerDead
from xfrmctl.ike.iana import ExchangeType, NotifyType
from xfrmctl.ike.message import Message, decode_message
from xfrmctl.ike.payloads import NotifyPayload, SkPayload
from xfrmctl.ike.ratelimit import RateLimiter

OURS = (B_IP, 500)


def _stray(
    mid: int = 3, response: bool = False, exchange: int = ExchangeType.INFORMATIONAL
) -> bytes:
    """A protected message for an IKE SA nobody has."""
    msg = Message(
        b"\x11" * 8, b"\x22" * 8, exchange, mid, response, True, (SkPayload(0, bytes(48)),)
    )
    return msg.encode()


def _peer(n: int) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    return (ipaddress.ip_address(0xC6120000 + n), 500)  # 198.18.0.0/15, benchmarking range


def _up() -> Harness:
    h, _, _ = make_pair(config=EndpointConfig(retransmit_timeout=1.0, retransmit_tries=2))
    h.a.initiate("a-to-b", now=h.now)
    h.run(2.0)
    assert h.of("a", IkeSaEstablished) and h.of("b", IkeSaEstablished)
    return h


def test_request_for_unknown_sa_gets_unprotected_invalid_ike_spi() -> None:
    ep = IkeEndpoint(trace=True)
    ep.receive_datagram(_stray(mid=7), OURS, (A_IP, 4500), 0.0)
    traced = [e for e in ep.events() if isinstance(e, MessageTrace)]
    assert [t.direction for t in traced] == ["in", "out"]
    assert traced[0].lines[1].strip() == "SK (48 bytes)"
    assert traced[1].lines[1].strip() == "NOTIFY INVALID_IKE_SPI"
    (dg,) = ep.datagrams_to_send()
    assert dg.remote == (A_IP, 4500) and dg.local == OURS
    reply = decode_message(dg.data)
    assert reply.exchange == ExchangeType.INFORMATIONAL
    assert reply.is_response and not reply.from_initiator and reply.message_id == 7
    assert (reply.spi_i, reply.spi_r) == (b"\x11" * 8, b"\x22" * 8)
    assert reply.payloads == (NotifyPayload(NotifyType.INVALID_IKE_SPI),)
    assert ep.counters["invalid_ike_spi_sent"] == 1


def test_responses_and_ike_sa_init_for_unknown_sa_are_never_answered() -> None:
    ep = IkeEndpoint()
    ep.receive_datagram(_stray(response=True), OURS, (A_IP, 500), 0.0)
    ep.receive_datagram(_stray(exchange=ExchangeType.IKE_SA_INIT), OURS, (A_IP, 500), 0.0)
    # Not even an INVALID_IKE_SPI itself: two stateless nodes must not ping-pong.
    bounce = Message(
        b"\x11" * 8, b"\x22" * 8, 37, 0, True, False, (NotifyPayload(NotifyType.INVALID_IKE_SPI),)
    )
    ep.receive_datagram(bounce.encode(), OURS, (A_IP, 500), 0.0)
    assert ep.datagrams_to_send() == []
    assert ep.counters["unknown_spi_ignored"] == 3


def test_answers_are_rate_limited_per_address_and_in_total() -> None:
    cfg = EndpointConfig(
        invalid_spi_rate=1.0,
        invalid_spi_burst=3.0,
        invalid_spi_total_rate=10.0,
        invalid_spi_total_burst=20.0,
        rate_limit_peers=50,
    )
    ep = IkeEndpoint(config=cfg)
    for _ in range(100):
        ep.receive_datagram(_stray(), OURS, _peer(1), 0.0)
    assert len(ep.datagrams_to_send()) == 3
    ep.receive_datagram(_stray(), OURS, _peer(2), 0.0)
    assert len(ep.datagrams_to_send()) == 1  # another address has its own bucket
    for _ in range(10):
        ep.receive_datagram(_stray(), OURS, _peer(1), 2.0)
    assert len(ep.datagrams_to_send()) == 2  # refilled at 1/s
    # Many spoofed sources: the global bucket caps the answers, the table stays bounded.
    for n in range(1000):
        ep.receive_datagram(_stray(), OURS, _peer(100 + n), 2.0)
    assert len(ep.datagrams_to_send()) <= 20
    assert len(ep.invalid_spi_limiter) <= 50
    assert ep.counters["invalid_ike_spi_rate_limited"] >= 97 + 8 + 980


def test_rate_limiter_forgets_least_recently_used() -> None:
    lim = RateLimiter(rate=0.0, burst=1.0, total_rate=1e9, total_burst=1e9, max_keys=2)
    assert lim.allow("x", 0.0) and not lim.allow("x", 0.0)
    assert lim.allow("y", 0.0)
    assert not lim.allow("x", 0.0)  # x used more recently than y: y goes next
    assert lim.allow("z", 0.0)
    assert len(lim) == 2
    assert lim.allow("y", 0.0)  # forgotten, so it starts with a full bucket again


def test_peer_restart_is_reported_and_only_ends_the_sa_through_liveness() -> None:
    h = _up()
    b_spec = h.b.specs["b-from-a"]
    h.b = seeded_endpoint(b_spec, None, 42)  # B restarts without its SAs
    h.events_b.clear()
    (child,) = h.a.child_sas()
    h.a.delete_child(child.spi_in, h.now)
    h.run(0.5)
    # B answered the stray request; A counted it but kept its SA for now.
    assert h.b.counters["invalid_ike_spi_sent"] == 1
    assert h.a.counters["invalid_ike_spi_received"] == 1
    assert len(h.a.ike_sas()) == 1 and not h.of("a", IkeSaDeleted)
    h.run(30.0)
    assert h.of("a", PeerDead)  # retransmissions went unanswered
    assert h.a.ike_sas() == []


def _forged_invalid_spi(h: Harness) -> bytes:
    (sa,) = h.a.sas.values()
    msg = Message(
        sa.spi_i, sa.spi_r, 37, 0, True, False, (NotifyPayload(NotifyType.INVALID_IKE_SPI),)
    )
    return msg.encode()


def test_forged_invalid_ike_spi_only_triggers_one_liveness_check() -> None:
    h = _up()
    forged = _forged_invalid_spi(h)
    sent_before = len(h.log)
    h.a.receive_datagram(forged, (A_IP, 500), (B_IP, 500), h.now)
    h.a.receive_datagram(forged, (A_IP, 500), (B_IP, 500), h.now)  # within the hint interval
    h.run(5.0)
    exchanges = [decode_message(d).exchange for _, d in h.log[sent_before:]]
    # One empty INFORMATIONAL from A and B's answer: the real peer is alive, nothing ends.
    assert exchanges == [ExchangeType.INFORMATIONAL, ExchangeType.INFORMATIONAL]
    assert h.a.counters["invalid_ike_spi_received"] == 2
    assert len(h.a.ike_sas()) == 1 and len(h.a.child_sas()) == 1
    assert not h.of("a", IkeSaDeleted) and not h.of("a", PeerDead)
