"""Stateless responder cookies (RFC 7296 §2.6) against half-open SA floods.

The secret changes every `period` seconds of the engine's clock (the host's `now`, never a
clock read here), and a cookie made with the previous secret stays valid for one more period,
so an initiator that got a cookie just before a change can still use it (§2.6: "the responder
... should accept cookies computed with the previous secret").
"""

from __future__ import annotations

import hmac as _hmac
import ipaddress
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes, hmac

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
SECRET_SIZE = 32


class CookieJar:
    """Cookie = version byte || HMAC-SHA256(secret, Ni | IPi | SPIi); the secret rotates."""

    def __init__(self, new_secret: Callable[[int], bytes], period: float = 300.0) -> None:
        self._new_secret = new_secret
        self.period = period
        self._version = 0
        self._secrets = {0: new_secret(SECRET_SIZE)}
        self._since: float | None = None  # start of the current secret's period

    def rotate(self) -> None:
        """New secret; the previous one stays valid so cookies in flight still work."""
        old = self._secrets[self._version]
        self._version = (self._version + 1) % 256
        self._secrets = {
            self._version: self._new_secret(SECRET_SIZE),
            (self._version - 1) % 256: old,
        }

    def advance(self, now: float) -> None:
        """Rotate for every period that ended by `now`; after two, no old secret survives."""
        if self._since is None or now < self._since:
            self._since = now
            return
        periods = int((now - self._since) // self.period) if self.period > 0 else 0
        if periods <= 0:
            return
        for _ in range(min(periods, 2)):
            self.rotate()
        self._since += periods * self.period

    def _compute(self, version: int, nonce: bytes, ip: IPAddress, spi_i: bytes) -> bytes:
        mac = hmac.HMAC(self._secrets[version], hashes.SHA256())
        mac.update(nonce + ip.packed + spi_i)
        return bytes([version]) + mac.finalize()

    def make(self, nonce: bytes, ip: IPAddress, spi_i: bytes, now: float) -> bytes:
        self.advance(now)
        return self._compute(self._version, nonce, ip, spi_i)

    def check(self, cookie: bytes, nonce: bytes, ip: IPAddress, spi_i: bytes, now: float) -> bool:
        self.advance(now)
        if not cookie or cookie[0] not in self._secrets:
            return False
        return _hmac.compare_digest(cookie, self._compute(cookie[0], nonce, ip, spi_i))
