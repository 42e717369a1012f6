"""Negotiated ENCR, INTEG and PRF transforms, and prf+ (RFC 7296 §2.13).

Each transform object is stateless: keys are passed per call, so one object is shared by every
SA that negotiated the same transform (`encr_for`, `integ_for` and `prf_for` keep one per
transform: ~240 bytes less per IKE SA) and no key material hides inside long-lived objects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import cmac, constant_time, hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from xfrmctl.ike.crypto.errors import CryptoError, IntegrityError, UnsupportedAlgorithm
from xfrmctl.ike.crypto.xcbc import aes_xcbc_mac, aes_xcbc_prf128
from xfrmctl.ike.iana import EncrId, IntegId, PrfId, TransformType, name_of
from xfrmctl.ike.transforms import Transform


class Encr(Protocol):
    """One negotiated ENCR transform with its key length.

    key_size counts all KEYMAT bytes taken (for GCM and ChaCha20 it includes the 4-byte salt);
    icv_size is 0 for non-AEAD ciphers, whose plaintext the caller pads to block_size.
    """

    @property
    def transform(self) -> Transform: ...
    @property
    def is_aead(self) -> bool: ...
    @property
    def key_size(self) -> int: ...
    @property
    def iv_size(self) -> int: ...
    @property
    def block_size(self) -> int: ...
    @property
    def icv_size(self) -> int: ...
    def encrypt(self, key: bytes, iv: bytes, plaintext: bytes, aad: bytes) -> bytes: ...
    def decrypt(self, key: bytes, iv: bytes, data: bytes, aad: bytes) -> bytes: ...


class Integ(Protocol):
    @property
    def transform(self) -> Transform: ...
    @property
    def key_size(self) -> int: ...
    @property
    def icv_size(self) -> int: ...
    def compute(self, key: bytes, data: bytes) -> bytes: ...
    def verify(self, key: bytes, data: bytes, icv: bytes) -> bool: ...


class Prf(Protocol):
    """A PRF; fixed_key marks AES-XCBC/CMAC, whose first SKEYSEED uses truncated nonces."""

    @property
    def transform(self) -> Transform: ...
    @property
    def key_size(self) -> int: ...
    @property
    def output_size(self) -> int: ...
    @property
    def fixed_key(self) -> bool: ...
    def __call__(self, key: bytes, data: bytes) -> bytes: ...
    def keyed(self, key: bytes) -> Callable[[bytes], bytes]:
        """The PRF under one key, for many inputs (prf+ blocks)."""
        ...

    def __hash__(self) -> int:
        """Hashable: `auth.padded_key` remembers a result per PRF and key."""
        ...


def _check_len(what: str, value: bytes, size: int) -> None:
    if len(value) != size:
        raise CryptoError(f"{what} must be {size} bytes, got {len(value)}")


# --- ENCR -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AesCbc:
    transform: Transform
    key_size: int
    is_aead: bool = False
    iv_size: int = 16
    block_size: int = 16
    icv_size: int = 0

    def _cipher(self, key: bytes, iv: bytes, data: bytes) -> Cipher[modes.CBC]:
        _check_len(f"{self.transform} key", key, self.key_size)
        _check_len(f"{self.transform} IV", iv, self.iv_size)
        if len(data) % self.block_size:
            raise CryptoError(
                f"{self.transform} data length {len(data)} is not a multiple of the block size"
            )
        return Cipher(algorithms.AES(key), modes.CBC(iv))

    def encrypt(self, key: bytes, iv: bytes, plaintext: bytes, aad: bytes) -> bytes:
        enc = self._cipher(key, iv, plaintext).encryptor()
        return enc.update(plaintext) + enc.finalize()

    def decrypt(self, key: bytes, iv: bytes, data: bytes, aad: bytes) -> bytes:
        dec = self._cipher(key, iv, data).decryptor()
        return dec.update(data) + dec.finalize()


# A 16-byte ICV (aes*gcm16, the usual) is the one-shot AEAD's own tag: one call per message
# instead of a Cipher, a mode and a context (issue 15: ~5% of a responder's CPU in the lab).
# The shorter ICVs of gcm8 and gcm12 need the context, which can truncate its tag.
_FULL_TAG = 16


@dataclass(frozen=True)
class AesGcm:
    """AES-GCM for IKE (RFC 5282): the last 4 key bytes are the salt, nonce = salt || IV."""

    transform: Transform
    key_size: int
    icv_size: int
    is_aead: bool = True
    iv_size: int = 8
    block_size: int = 1

    def _nonce(self, key: bytes, iv: bytes) -> tuple[bytes, bytes]:
        _check_len(f"{self.transform} key", key, self.key_size)
        _check_len(f"{self.transform} IV", iv, self.iv_size)
        return key[:-4], key[-4:] + iv

    def encrypt(self, key: bytes, iv: bytes, plaintext: bytes, aad: bytes) -> bytes:
        aes_key, nonce = self._nonce(key, iv)
        if self.icv_size == _FULL_TAG:
            return AESGCM(aes_key).encrypt(nonce, plaintext, aad)
        enc = Cipher(algorithms.AES(aes_key), modes.GCM(nonce)).encryptor()
        enc.authenticate_additional_data(aad)
        ct = enc.update(plaintext) + enc.finalize()
        return ct + enc.tag[: self.icv_size]

    def decrypt(self, key: bytes, iv: bytes, data: bytes, aad: bytes) -> bytes:
        aes_key, nonce = self._nonce(key, iv)
        if len(data) < self.icv_size:
            raise IntegrityError(f"{self.transform} data shorter than its ICV")
        if self.icv_size == _FULL_TAG:
            try:
                return AESGCM(aes_key).decrypt(nonce, data, aad)
            except InvalidTag:
                raise IntegrityError(f"{self.transform} ICV mismatch") from None
        ct, tag = data[: -self.icv_size], data[-self.icv_size :]
        mode = modes.GCM(nonce, tag, min_tag_length=self.icv_size)
        dec = Cipher(algorithms.AES(aes_key), mode).decryptor()
        dec.authenticate_additional_data(aad)
        try:
            return dec.update(ct) + dec.finalize()
        except InvalidTag:
            raise IntegrityError(f"{self.transform} ICV mismatch") from None


@dataclass(frozen=True)
class ChaChaPoly:
    """ChaCha20-Poly1305 for IKE (RFC 7634): 32-byte key + 4-byte salt, nonce = salt || IV."""

    transform: Transform
    key_size: int = 36
    icv_size: int = 16
    is_aead: bool = True
    iv_size: int = 8
    block_size: int = 1

    def _split(self, key: bytes, iv: bytes) -> tuple[ChaCha20Poly1305, bytes]:
        _check_len(f"{self.transform} key", key, self.key_size)
        _check_len(f"{self.transform} IV", iv, self.iv_size)
        return ChaCha20Poly1305(key[:32]), key[32:] + iv

    def encrypt(self, key: bytes, iv: bytes, plaintext: bytes, aad: bytes) -> bytes:
        aead, nonce = self._split(key, iv)
        return aead.encrypt(nonce, plaintext, aad)

    def decrypt(self, key: bytes, iv: bytes, data: bytes, aad: bytes) -> bytes:
        aead, nonce = self._split(key, iv)
        try:
            return aead.decrypt(nonce, data, aad)
        except InvalidTag:
            raise IntegrityError(f"{self.transform} ICV mismatch") from None


_SHARED = 64  # algorithm objects kept per factory; a peer's odd offers cannot grow it
_GCM_ICV = {EncrId.AES_GCM_8: 8, EncrId.AES_GCM_12: 12, EncrId.AES_GCM_16: 16}
_AES_KEY_BITS = (128, 192, 256)


@lru_cache(maxsize=_SHARED)
def encr_for(t: Transform) -> Encr:
    """The ENCR implementation for a negotiated transform (AES needs its KEY_LENGTH)."""
    if t.type != TransformType.ENCR:
        raise UnsupportedAlgorithm(f"{t} is not an encryption transform")
    if t.id == EncrId.CHACHA20_POLY1305:
        if t.key_length not in (None, 256):
            raise UnsupportedAlgorithm(f"{t}: ChaCha20-Poly1305 takes no other key length")
        return ChaChaPoly(t)
    if t.id == EncrId.AES_CBC or t.id in _GCM_ICV:
        if t.key_length not in _AES_KEY_BITS:
            raise UnsupportedAlgorithm(f"{t}: AES key length must be 128, 192 or 256 bits")
        size = t.key_length // 8
        if t.id == EncrId.AES_CBC:
            return AesCbc(t, size)
        return AesGcm(t, size + 4, _GCM_ICV[EncrId(t.id)])
    raise UnsupportedAlgorithm(f"encryption algorithm {name_of(EncrId, t.id)} is not supported")


# --- INTEG ----------------------------------------------------------------------------------


# One instance each: they are stateless descriptors, checked against the ABC per HMAC made.
_HASHES: dict[str, hashes.HashAlgorithm] = {
    "sha1": hashes.SHA1(),
    "sha256": hashes.SHA256(),
    "sha384": hashes.SHA384(),
    "sha512": hashes.SHA512(),
}


def _hmac(hash_name: str, key: bytes, data: bytes) -> bytes:
    h = hmac.HMAC(key, _HASHES[hash_name])
    h.update(data)
    return h.finalize()


def _keyed_hmac(hash_name: str, key: bytes) -> Callable[[bytes], bytes]:
    """HMAC under one key: keyed once, then copied per input (OpenSSL copies the keyed
    inner and outer states instead of hashing the padded key twice again)."""
    base = hmac.HMAC(key, _HASHES[hash_name])

    def mac(data: bytes) -> bytes:
        h = base.copy()
        h.update(data)
        return h.finalize()

    return mac


def _cmac(key: bytes, data: bytes) -> bytes:
    c = cmac.CMAC(algorithms.AES(key))
    c.update(data)
    return c.finalize()


@dataclass(frozen=True)
class MacInteg:
    """A truncated MAC (RFC 4868 for HMAC-SHA2, RFC 2404 / 3566 / 4494 for the 96-bit ones)."""

    transform: Transform
    key_size: int
    icv_size: int
    mac: str  # hashlib name, or "xcbc" / "cmac"

    def compute(self, key: bytes, data: bytes) -> bytes:
        _check_len(f"{self.transform} key", key, self.key_size)
        if self.mac == "xcbc":
            full = aes_xcbc_mac(key, data)
        elif self.mac == "cmac":
            full = _cmac(key, data)
        else:
            full = _hmac(self.mac, key, data)
        return full[: self.icv_size]

    def verify(self, key: bytes, data: bytes, icv: bytes) -> bool:
        return constant_time.bytes_eq(self.compute(key, data), icv)


_INTEG = {
    IntegId.HMAC_SHA1_96: (20, 12, "sha1"),
    IntegId.AES_XCBC_96: (16, 12, "xcbc"),
    IntegId.AES_CMAC_96: (16, 12, "cmac"),
    IntegId.HMAC_SHA2_256_128: (32, 16, "sha256"),
    IntegId.HMAC_SHA2_384_192: (48, 24, "sha384"),
    IntegId.HMAC_SHA2_512_256: (64, 32, "sha512"),
}


@lru_cache(maxsize=_SHARED)
def integ_for(t: Transform) -> Integ:
    if t.type != TransformType.INTEG:
        raise UnsupportedAlgorithm(f"{t} is not an integrity transform")
    if t.key_length is not None:
        raise UnsupportedAlgorithm(f"{t}: integrity algorithms take no key length attribute")
    try:
        key_size, icv_size, mac = _INTEG[IntegId(t.id)]
    except (KeyError, ValueError):
        raise UnsupportedAlgorithm(
            f"integrity algorithm {name_of(IntegId, t.id)} is not supported"
        ) from None
    return MacInteg(t, key_size, icv_size, mac)


# --- PRF ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HmacPrf:
    transform: Transform
    key_size: int
    output_size: int
    hash_name: str
    fixed_key: bool = False

    def __call__(self, key: bytes, data: bytes) -> bytes:
        return _hmac(self.hash_name, key, data)

    def keyed(self, key: bytes) -> Callable[[bytes], bytes]:
        return _keyed_hmac(self.hash_name, key)


@dataclass(frozen=True)
class AesPrf:
    """AES-XCBC-PRF-128 (RFC 4434) or AES-CMAC-PRF-128 (RFC 4615), any key length."""

    transform: Transform
    cmac: bool
    key_size: int = 16
    output_size: int = 16
    fixed_key: bool = True

    def __call__(self, key: bytes, data: bytes) -> bytes:
        if not self.cmac:
            return aes_xcbc_prf128(key, data)
        if len(key) != 16:
            key = _cmac(bytes(16), key)
        return _cmac(key, data)

    def keyed(self, key: bytes) -> Callable[[bytes], bytes]:
        return partial(self, key)


_HMAC_PRF = {
    PrfId.HMAC_SHA1: ("sha1", 20),
    PrfId.HMAC_SHA2_256: ("sha256", 32),
    PrfId.HMAC_SHA2_384: ("sha384", 48),
    PrfId.HMAC_SHA2_512: ("sha512", 64),
}


@lru_cache(maxsize=_SHARED)
def prf_for(t: Transform) -> Prf:
    if t.type != TransformType.PRF:
        raise UnsupportedAlgorithm(f"{t} is not a PRF transform")
    if t.key_length is not None:
        raise UnsupportedAlgorithm(f"{t}: PRFs take no key length attribute")
    if t.id == PrfId.AES128_XCBC:
        return AesPrf(t, cmac=False)
    if t.id == PrfId.AES128_CMAC:
        return AesPrf(t, cmac=True)
    try:
        name, size = _HMAC_PRF[PrfId(t.id)]
    except (KeyError, ValueError):
        raise UnsupportedAlgorithm(f"PRF {name_of(PrfId, t.id)} is not supported") from None
    return HmacPrf(t, size, size, name)


def prf_plus(prf: Prf, key: bytes, seed: bytes, length: int) -> bytes:
    """prf+ (RFC 7296 §2.13): T1 | T2 | ... with Tn = prf(K, Tn-1 | S | n), n at most 255."""
    if length < 0 or length > 255 * prf.output_size:
        raise CryptoError(f"prf+ cannot produce {length} bytes with {prf.transform}")
    keyed = prf.keyed(key)
    out = bytearray()
    block = b""
    counter = 1
    while len(out) < length:
        block = keyed(block + seed + bytes((counter,)))
        out += block
        counter += 1
    return bytes(out[:length])


def supported_transforms() -> dict[TransformType, tuple[int, ...]]:
    """IDs we implement per transform type (for proposal checks and status output)."""
    return {
        TransformType.ENCR: (EncrId.AES_CBC, *_GCM_ICV, EncrId.CHACHA20_POLY1305),
        TransformType.PRF: (*_HMAC_PRF, PrfId.AES128_XCBC, PrfId.AES128_CMAC),
        TransformType.INTEG: tuple(_INTEG),
    }
