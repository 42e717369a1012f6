"""IKEv2 ENCR and INTEG transform IDs (RFC 7296 §3.3.2) to the kernel algorithms that carry them.

The kernel layer knows algorithms by crypto-API name only; the IKE engine knows transform IDs
only. Here they meet. The kernel's key includes the salt that IKE derives with the cipher key
(RFC 4106 §8.1, RFC 4309 §7.1, RFC 7634 §4, RFC 3686 §5), so `KernelEncr.key_bytes` is also the
KEYMAT length per direction.
"""

from __future__ import annotations

from dataclasses import dataclass

from xfrmctl.ike.iana import EncrId, IntegId
from xfrmctl.kernel.algorithms import CIPHERS, INTEGRITY, Capabilities, Integrity
from xfrmctl.kernel.types import Aead, Auth, Crypt


class UnsupportedTransformError(ValueError):
    """An IKE transform (or key length) that has no kernel equivalent here."""


@dataclass(frozen=True)
class KernelEncr:
    name: str
    key_bits: int  # what the kernel gets, salt included
    icv_bits: int | None = None  # AEAD only
    salt_bits: int = 0

    @property
    def aead(self) -> bool:
        return self.icv_bits is not None

    @property
    def key_bytes(self) -> int:
        return self.key_bits // 8


# ENCR transform -> (kernel name, ICV bits for an AEAD)
_ENCR: dict[EncrId, tuple[str, int | None]] = {
    EncrId.AES_CBC: ("cbc(aes)", None),
    EncrId.AES_CTR: ("rfc3686(ctr(aes))", None),
    EncrId.AES_GCM_8: ("rfc4106(gcm(aes))", 64),
    EncrId.AES_GCM_12: ("rfc4106(gcm(aes))", 96),
    EncrId.AES_GCM_16: ("rfc4106(gcm(aes))", 128),
    EncrId.AES_CCM_8: ("rfc4309(ccm(aes))", 64),
    EncrId.AES_CCM_12: ("rfc4309(ccm(aes))", 96),
    EncrId.AES_CCM_16: ("rfc4309(ccm(aes))", 128),
    EncrId.NULL_AUTH_AES_GMAC: ("rfc4543(gcm(aes))", 128),
    EncrId.CHACHA20_POLY1305: ("rfc7539esp(chacha20,poly1305)", 128),
    EncrId.CAMELLIA_CBC: ("cbc(camellia)", None),
    EncrId.DES3: ("cbc(des3_ede)", None),
    EncrId.NULL: ("ecb(cipher_null)", None),
}

_INTEG: dict[IntegId, str] = {
    IntegId.HMAC_MD5_96: "hmac(md5)",
    IntegId.HMAC_SHA1_96: "hmac(sha1)",
    IntegId.AES_XCBC_96: "xcbc(aes)",
    IntegId.AES_CMAC_96: "cmac(aes)",
    IntegId.HMAC_SHA2_256_128: "hmac(sha256)",  # RFC 4868
    IntegId.HMAC_SHA2_384_192: "hmac(sha384)",
    IntegId.HMAC_SHA2_512_256: "hmac(sha512)",
}

_FIXED_KEY = {EncrId.CHACHA20_POLY1305: 256, EncrId.DES3: 192, EncrId.NULL: 0}


def kernel_encr(encr: EncrId | int, key_bits: int | None = None) -> KernelEncr:
    """The kernel cipher/AEAD for an IKEv2 ENCR transform and its KEY_LENGTH attribute (bits)."""
    try:
        eid = EncrId(encr)
        name, icv = _ENCR[eid]
    except (ValueError, KeyError):
        raise UnsupportedTransformError(f"ENCR transform {encr} has no kernel algorithm") from None
    cipher = CIPHERS[name]
    bits = key_bits if key_bits is not None else _FIXED_KEY.get(eid)
    if bits is None:
        raise UnsupportedTransformError(f"ENCR {eid.name} needs a key length")
    if bits not in cipher.key_bits:
        allowed = "/".join(map(str, cipher.key_bits))
        raise UnsupportedTransformError(
            f"ENCR {eid.name} with a {bits}-bit key: the kernel takes {allowed} bits"
        )
    return KernelEncr(name, bits + cipher.salt_bits, icv, cipher.salt_bits)


def kernel_integ(integ: IntegId | int) -> Integrity:
    """The kernel HMAC/MAC and truncation for an IKEv2 INTEG transform."""
    try:
        return INTEGRITY[_INTEG[IntegId(integ)]]
    except (ValueError, KeyError):
        raise UnsupportedTransformError(
            f"INTEG transform {integ} has no kernel algorithm"
        ) from None


def supports_encr(caps: Capabilities, encr: EncrId | int, key_bits: int | None = None) -> bool:
    try:
        return caps.has(kernel_encr(encr, key_bits).name)
    except UnsupportedTransformError:
        return False


def supports_integ(caps: Capabilities, integ: IntegId | int) -> bool:
    try:
        return caps.has(kernel_integ(integ).name)
    except UnsupportedTransformError:
        return False


def sa_algorithms(
    encr: EncrId | int | None,
    encr_key_bits: int | None,
    integ: IntegId | int | None,
    encr_key: bytes = b"",
    integ_key: bytes = b"",
) -> tuple[Aead | None, Crypt | None, Auth | None]:
    """Algorithm fields for an SA from negotiated transforms and keys from KEYMAT."""
    aead = crypt = auth = None
    if encr is not None:
        ke = kernel_encr(encr, encr_key_bits)
        if len(encr_key) != ke.key_bytes:
            raise ValueError(
                f"{ke.name} needs a {ke.key_bytes}-byte key (salt included), got {len(encr_key)}"
            )
        if ke.aead:
            if integ not in (None, IntegId.NONE):
                raise UnsupportedTransformError(f"{ke.name} is an AEAD: no INTEG transform")
            aead = Aead(ke.name, encr_key, ke.icv_bits or 0)
        else:
            crypt = Crypt(ke.name, encr_key)
    if integ not in (None, IntegId.NONE):
        ki = kernel_integ(integ)
        if len(integ_key) != ki.key_bytes:
            raise ValueError(f"{ki.name} needs a {ki.key_bytes}-byte key, got {len(integ_key)}")
        auth = Auth(ki.name, integ_key, ki.trunc_bits)
    return aead, crypt, auth
