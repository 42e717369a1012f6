"""Ephemeral key exchange for IKEv2 KE payloads: MODP (RFC 3526), ECP (RFC 5903), X25519/X448
(RFC 8031).

Peer values are validated before use (RFC 7296 §5.12 warns about small-subgroup attacks):
wrong length, zero, points off the curve and MODP values outside 1 < y < p-1 are rejected.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

# X25519PrivateKey.generate() and its kin import the OpenSSL backend on first use: loaded
# here, with the engine, so that it is part of the daemon's start and not of its first IKE
# SA (an `up`'s wait; ~0.2 MiB that a setup-rate measurement would charge to the SAs).
from cryptography.hazmat.backends.openssl import backend as _openssl  # noqa: F401
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dh, ec, x448, x25519
from cryptography.utils import CryptographyDeprecationWarning

from xfrmctl.ike.crypto.errors import InvalidKeyExchange, UnsupportedAlgorithm
from xfrmctl.ike.iana import KeId, name_of

# RFC 3526 §3-5 primes, generator 2.
_MODP_2048 = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
    "3995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF",
    16,
)
_MODP_3072 = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
    "3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33"
    "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7"
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864"
    "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2"
    "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A93AD2CAFFFFFFFFFFFFFFFF",
    16,
)
_MODP_4096 = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
    "3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33"
    "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7"
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864"
    "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2"
    "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A92108011A723C12A787E6D7"
    "88719A10BDBA5B2699C327186AF4E23C1A946834B6150BDA2583E9CA2AD44CE8"
    "DBBBC2DB04DE8EF92E8EFC141FBECAA6287C59474E6BC05D99B2964FA090C3A2"
    "233BA186515BE7ED1F612970CEE2D7AFB81BDD762170481CD0069127D5B05AA9"
    "93B4EA988D8FDDC186FFB7DC90A6C08F4DF435C934063199FFFFFFFFFFFFFFFF",
    16,
)

_MODP_PRIMES = {KeId.MODP2048: _MODP_2048, KeId.MODP3072: _MODP_3072, KeId.MODP4096: _MODP_4096}
_CURVES: dict[KeId, tuple[type[ec.EllipticCurve], int]] = {
    KeId.ECP256: (ec.SECP256R1, 32),
    KeId.ECP384: (ec.SECP384R1, 48),
    KeId.ECP521: (ec.SECP521R1, 66),
}


class KeyExchange(ABC):
    """One ephemeral private key of a group; use it for a single exchange and drop it."""

    group: KeId

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.group.name}>"

    @abstractmethod
    def public_value(self) -> bytes:
        """KE payload data in the group's RFC encoding."""

    @abstractmethod
    def shared_secret(self, peer_public: bytes) -> bytes:
        """g^ir from the peer's KE payload data; raises InvalidKeyExchange."""

    def _check_length(self, peer_public: bytes, size: int) -> None:
        if len(peer_public) != size:
            raise InvalidKeyExchange(
                f"{self.group.name} public value must be {size} bytes, got {len(peer_public)}"
            )


@contextmanager
def _ffdh_allowed() -> Iterator[None]:
    """MODP groups are still needed for interop (RFC 8247: group 14 is a MUST) but cryptography
    deprecates finite-field DH; keep that warning out of every exchange's output."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning)
        yield


@cache
def _dh_parameters(group: KeId) -> dh.DHParameters:
    with _ffdh_allowed():
        return dh.DHParameterNumbers(_MODP_PRIMES[group], 2).parameters()


class ModpKeyExchange(KeyExchange):
    def __init__(self, group: KeId, private: bytes | None = None) -> None:
        self.group = group
        self._p = _MODP_PRIMES[group]
        self._size = (self._p.bit_length() + 7) // 8
        params = _dh_parameters(group)
        with _ffdh_allowed():
            if private is None:
                self._key = params.generate_private_key()
            else:
                x = int.from_bytes(private, "big")
                pub = dh.DHPublicNumbers(pow(2, x, self._p), params.parameter_numbers())
                self._key = dh.DHPrivateNumbers(x, pub).private_key()

    def public_value(self) -> bytes:
        return self._key.public_key().public_numbers().y.to_bytes(self._size, "big")

    def shared_secret(self, peer_public: bytes) -> bytes:
        self._check_length(peer_public, self._size)
        y = int.from_bytes(peer_public, "big")
        if not 1 < y < self._p - 1:
            raise InvalidKeyExchange(f"{self.group.name} public value is outside 1 < y < p-1")
        try:
            with _ffdh_allowed():
                numbers = dh.DHPublicNumbers(y, _dh_parameters(self.group).parameter_numbers())
                secret = self._key.exchange(numbers.public_key())
        except ValueError:
            raise InvalidKeyExchange(f"{self.group.name} public value was rejected") from None
        # RFC 7296 §2.14: g^ir is fixed length, padded with leading zeros.
        return secret.rjust(self._size, b"\0")


class EcpKeyExchange(KeyExchange):
    """RFC 5903: public value x || y without the 0x04 prefix; shared secret is x alone."""

    def __init__(self, group: KeId, private: bytes | None = None) -> None:
        self.group = group
        curve, self._coord = _CURVES[group]
        self._curve = curve()
        if private is None:
            self._key = ec.generate_private_key(self._curve)
        else:
            self._key = ec.derive_private_key(int.from_bytes(private, "big"), self._curve)

    def public_value(self) -> bytes:
        point = self._key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return point[1:]

    def shared_secret(self, peer_public: bytes) -> bytes:
        self._check_length(peer_public, 2 * self._coord)
        try:
            peer = ec.EllipticCurvePublicKey.from_encoded_point(self._curve, b"\x04" + peer_public)
            return self._key.exchange(ec.ECDH(), peer)
        except ValueError:
            raise InvalidKeyExchange(
                f"{self.group.name} public value is not on the curve"
            ) from None


class MontgomeryKeyExchange(KeyExchange):
    """RFC 8031: Curve25519/Curve448 public values are the raw u-coordinate."""

    def __init__(self, group: KeId, private: bytes | None = None) -> None:
        self.group = group
        self._key: x25519.X25519PrivateKey | x448.X448PrivateKey
        if group == KeId.CURVE25519:
            self._size = 32
            self._key = (
                x25519.X25519PrivateKey.generate()
                if private is None
                else x25519.X25519PrivateKey.from_private_bytes(private)
            )
        else:
            self._size = 56
            self._key = (
                x448.X448PrivateKey.generate()
                if private is None
                else x448.X448PrivateKey.from_private_bytes(private)
            )

    def public_value(self) -> bytes:
        return self._key.public_key().public_bytes_raw()

    def shared_secret(self, peer_public: bytes) -> bytes:
        self._check_length(peer_public, self._size)
        if not any(peer_public):
            raise InvalidKeyExchange(f"{self.group.name} public value is zero")
        try:
            if isinstance(self._key, x25519.X25519PrivateKey):
                secret = self._key.exchange(x25519.X25519PublicKey.from_public_bytes(peer_public))
            else:
                secret = self._key.exchange(x448.X448PublicKey.from_public_bytes(peer_public))
        except ValueError:
            secret = b""
        # RFC 8031 §2.3: an all-zero result means a low-order point; abort.
        if not any(secret):
            raise InvalidKeyExchange(f"{self.group.name} public value is a low-order point")
        return secret


def new_key_exchange(group: KeId | int) -> KeyExchange:
    """A fresh ephemeral key for `group`; raises UnsupportedAlgorithm for groups we lack."""
    return _build(group, None)


def key_exchange_from_private(group: KeId | int, private: bytes) -> KeyExchange:
    """A key exchange with a fixed private value, for known-answer tests only."""
    try:
        return _build(group, private)
    except ValueError:
        raise InvalidKeyExchange(f"invalid private value for {name_of(KeId, group)}") from None


def _build(group: KeId | int, private: bytes | None) -> KeyExchange:
    if group in _MODP_PRIMES:
        return ModpKeyExchange(KeId(group), private)
    if group in _CURVES:
        return EcpKeyExchange(KeId(group), private)
    if group in (KeId.CURVE25519, KeId.CURVE448):
        return MontgomeryKeyExchange(KeId(group), private)
    raise UnsupportedAlgorithm(f"key exchange group {name_of(KeId, group)} is not supported")


def is_modp(group: KeId | int) -> bool:
    """A finite-field group: its key generation is a modular exponentiation of 2048+ bits."""
    return group in _MODP_PRIMES


def supported_groups() -> frozenset[KeId]:
    return frozenset((*_MODP_PRIMES, *_CURVES, KeId.CURVE25519, KeId.CURVE448))


def public_value_size(group: KeId) -> int:
    """Expected KE payload data length for `group` (lets the engine check before computing)."""
    if group in _MODP_PRIMES:
        return (_MODP_PRIMES[group].bit_length() + 7) // 8
    if group in _CURVES:
        return 2 * _CURVES[group][1]
    if group == KeId.CURVE25519:
        return 32
    if group == KeId.CURVE448:
        return 56
    raise UnsupportedAlgorithm(f"key exchange group {name_of(KeId, group)} is not supported")
