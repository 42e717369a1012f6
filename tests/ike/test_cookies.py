"""Cookie secret rotation (RFC 7296 §2.6): driven by the engine clock, one period of grace."""

from __future__ import annotations

import ipaddress
import itertools

from harness import A_IP, B_IP, make_pair

from xfrmctl.ike.cookies import CookieJar
from xfrmctl.ike.engine import EndpointConfig, IkeEndpoint
from xfrmctl.ike.iana import ExchangeType, KeId, NotifyType
from xfrmctl.ike.message import Message, decode_message
from xfrmctl.ike.payloads import KePayload, NoncePayload, NotifyPayload, Payload, SaPayload

IP = ipaddress.ip_address("192.0.2.7")
NONCE = b"n" * 32
SPI = b"s" * 8


def _jar(period: float = 300.0) -> CookieJar:
    counter = itertools.count()
    return CookieJar(lambda n: bytes([next(counter)]) * n, period)


def test_cookie_stays_valid_for_one_period_after_rotation() -> None:
    jar = _jar()
    cookie = jar.make(NONCE, IP, SPI, 1000.0)
    assert jar.check(cookie, NONCE, IP, SPI, 1299.0)
    assert jar.make(NONCE, IP, SPI, 1299.0) == cookie  # same secret within the period
    assert jar.check(cookie, NONCE, IP, SPI, 1300.0)  # rotated: previous secret still good
    newer = jar.make(NONCE, IP, SPI, 1300.0)
    assert newer != cookie
    assert jar.check(cookie, NONCE, IP, SPI, 1599.0)
    assert not jar.check(cookie, NONCE, IP, SPI, 1600.0)  # two rotations: gone
    assert jar.check(newer, NONCE, IP, SPI, 1600.0)
    assert not jar.check(newer, NONCE, IP, SPI, 1900.0)


def test_long_silence_expires_both_secrets() -> None:
    jar = _jar()
    cookie = jar.make(NONCE, IP, SPI, 0.0)
    # Nothing happened for ten periods: the cookie's secret is not "the previous" one.
    assert not jar.check(cookie, NONCE, IP, SPI, 3000.0)
    fresh = jar.make(NONCE, IP, SPI, 3000.0)
    assert jar.check(fresh, NONCE, IP, SPI, 3300.0)


def test_cookie_binds_nonce_address_and_spi() -> None:
    jar = _jar()
    cookie = jar.make(NONCE, IP, SPI, 0.0)
    other_ip = ipaddress.ip_address("192.0.2.8")
    assert not jar.check(cookie, b"m" * 32, IP, SPI, 0.0)
    assert not jar.check(cookie, NONCE, other_ip, SPI, 0.0)
    assert not jar.check(cookie, NONCE, IP, b"t" * 8, 0.0)
    assert not jar.check(b"", NONCE, IP, SPI, 0.0)


def _init_request(spi: bytes, cookie: bytes | None) -> bytes:
    _h, a_spec, _ = make_pair()
    payloads: list[Payload] = [NotifyPayload(NotifyType.COOKIE, cookie)] if cookie else []
    payloads += [
        SaPayload(a_spec.ike_proposals),
        KePayload(KeId.CURVE25519, b"\x09" + bytes(31)),
        NoncePayload(NONCE),
    ]
    msg = Message(spi, bytes(8), ExchangeType.IKE_SA_INIT, 0, False, True, tuple(payloads))
    return msg.encode()


def _ask(ep: IkeEndpoint, spi: bytes, cookie: bytes | None, now: float) -> bytes | None:
    """Send an IKE_SA_INIT; the COOKIE demanded in return, or None if the SA was accepted."""
    ep.receive_datagram(_init_request(spi, cookie), (B_IP, 500), (A_IP, 500), now)
    (out,) = ep.datagrams_to_send()
    reply = decode_message(out.data)
    for p in reply.payloads:
        if isinstance(p, NotifyPayload) and p.notify_type == NotifyType.COOKIE:
            return p.data
    assert reply.spi_r != bytes(8) and any(isinstance(p, SaPayload) for p in reply.payloads)
    return None


def test_engine_rotates_cookie_secret_on_its_clock() -> None:
    cfg = EndpointConfig(cookie_threshold=0, cookie_secret_period=10.0)
    _h, _, b_spec = make_pair(config=cfg)
    ep = IkeEndpoint([b_spec], config=cfg)
    cookie = _ask(ep, b"\x01" * 8, None, 100.0)
    assert cookie is not None
    assert _ask(ep, b"\x01" * 8, cookie, 115.0) is None  # previous secret, still accepted
    late = _ask(ep, b"\x02" * 8, None, 200.0)
    assert late is not None
    again = _ask(ep, b"\x02" * 8, late, 225.0)  # two periods later: challenged again
    assert again is not None and again != late
    assert _ask(ep, b"\x02" * 8, again, 226.0) is None
