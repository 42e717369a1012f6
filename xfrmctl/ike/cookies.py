"""Stateless responder cookies (RFC 7296 §2.6) against half-open SA floods."""

from __future__ import annotations

import hmac as _hmac
import ipaddress

from cryptography.hazmat.primitives import hashes, hmac

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class CookieJar:
    """Cookie = version byte || HMAC-SHA256(secret, Ni | IPi | SPIi); the secret rotates."""

    def __init__(self, secret: bytes) -> None:
        self._version = 0
        self._secrets = {0: secret}

    def rotate(self, secret: bytes) -> None:
        """New secret; the previous one stays valid so cookies in flight still work."""
        old = self._secrets[self._version]
        self._version = (self._version + 1) % 256
        self._secrets = {self._version: secret, (self._version - 1) % 256: old}

    def _compute(self, version: int, nonce: bytes, ip: IPAddress, spi_i: bytes) -> bytes:
        mac = hmac.HMAC(self._secrets[version], hashes.SHA256())
        mac.update(nonce + ip.packed + spi_i)
        return bytes([version]) + mac.finalize()

    def make(self, nonce: bytes, ip: IPAddress, spi_i: bytes) -> bytes:
        return self._compute(self._version, nonce, ip, spi_i)

    def check(self, cookie: bytes, nonce: bytes, ip: IPAddress, spi_i: bytes) -> bool:
        if not cookie or cookie[0] not in self._secrets:
            return False
        return _hmac.compare_digest(cookie, self._compute(cookie[0], nonce, ip, spi_i))
