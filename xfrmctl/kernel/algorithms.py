"""IKEv2 transform IDs to kernel algorithm names and key lengths, and what this kernel can do.

Key lengths here are what the kernel wants in `alg_key_len`: for AEAD and counter modes that
includes the salt/nonce that IKE derives with the key (RFC 4106 §8.1, RFC 7634 §4, RFC 3686 §5),
so these are also the KEYMAT lengths the IKE engine must derive per direction.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from xfrmctl.ike.iana import EncrId, IntegId
from xfrmctl.kernel.errors import XfrmError
from xfrmctl.kernel.types import SA, Aead, Auth, Crypt, Mode, Proto


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


@dataclass(frozen=True)
class KernelInteg:
    name: str
    key_bits: int
    trunc_bits: int

    @property
    def key_bytes(self) -> int:
        return self.key_bits // 8


# (kernel name, allowed cipher key lengths, salt bits, ICV bits or None)
_ENCR: dict[EncrId, tuple[str, tuple[int, ...], int, int | None]] = {
    EncrId.AES_CBC: ("cbc(aes)", (128, 192, 256), 0, None),
    EncrId.AES_CTR: ("rfc3686(ctr(aes))", (128, 192, 256), 32, None),
    EncrId.AES_GCM_8: ("rfc4106(gcm(aes))", (128, 192, 256), 32, 64),
    EncrId.AES_GCM_12: ("rfc4106(gcm(aes))", (128, 192, 256), 32, 96),
    EncrId.AES_GCM_16: ("rfc4106(gcm(aes))", (128, 192, 256), 32, 128),
    EncrId.AES_CCM_8: ("rfc4309(ccm(aes))", (128, 192, 256), 24, 64),
    EncrId.AES_CCM_12: ("rfc4309(ccm(aes))", (128, 192, 256), 24, 96),
    EncrId.AES_CCM_16: ("rfc4309(ccm(aes))", (128, 192, 256), 24, 128),
    EncrId.NULL_AUTH_AES_GMAC: ("rfc4543(gcm(aes))", (128, 192, 256), 32, 128),
    EncrId.CHACHA20_POLY1305: ("rfc7539esp(chacha20,poly1305)", (256,), 32, 128),
    EncrId.CAMELLIA_CBC: ("cbc(camellia)", (128, 192, 256), 0, None),
    EncrId.DES3: ("cbc(des3_ede)", (192,), 0, None),
    EncrId.NULL: ("ecb(cipher_null)", (0,), 0, None),
}

_INTEG: dict[IntegId, KernelInteg] = {
    IntegId.HMAC_MD5_96: KernelInteg("hmac(md5)", 128, 96),
    IntegId.HMAC_SHA1_96: KernelInteg("hmac(sha1)", 160, 96),
    IntegId.AES_XCBC_96: KernelInteg("xcbc(aes)", 128, 96),
    IntegId.AES_CMAC_96: KernelInteg("cmac(aes)", 128, 96),
    IntegId.HMAC_SHA2_256_128: KernelInteg("hmac(sha256)", 256, 128),  # RFC 4868
    IntegId.HMAC_SHA2_384_192: KernelInteg("hmac(sha384)", 384, 192),
    IntegId.HMAC_SHA2_512_256: KernelInteg("hmac(sha512)", 512, 256),
}

_FIXED_KEY = {EncrId.CHACHA20_POLY1305: 256, EncrId.DES3: 192, EncrId.NULL: 0}


def kernel_encr(encr: EncrId | int, key_bits: int | None = None) -> KernelEncr:
    """The kernel cipher/AEAD for an IKEv2 ENCR transform and its KEY_LENGTH attribute (bits)."""
    try:
        eid = EncrId(encr)
        name, lengths, salt, icv = _ENCR[eid]
    except (ValueError, KeyError):
        raise UnsupportedTransformError(f"ENCR transform {encr} has no kernel algorithm") from None
    bits = key_bits if key_bits is not None else _FIXED_KEY.get(eid)
    if bits is None:
        raise UnsupportedTransformError(f"ENCR {eid.name} needs a key length")
    if bits not in lengths:
        allowed = "/".join(map(str, lengths))
        raise UnsupportedTransformError(
            f"ENCR {eid.name} with a {bits}-bit key: the kernel takes {allowed} bits"
        )
    return KernelEncr(name, bits + salt, icv, salt)


def kernel_integ(integ: IntegId | int) -> KernelInteg:
    """The kernel HMAC/MAC and truncation for an IKEv2 INTEG transform."""
    try:
        return _INTEG[IntegId(integ)]
    except (ValueError, KeyError):
        raise UnsupportedTransformError(
            f"INTEG transform {integ} has no kernel algorithm"
        ) from None


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


# --- capability probe ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Capabilities:
    """What this kernel installs: ESP/AH at all, and each kernel algorithm by name."""

    esp: bool
    ah: bool
    available: frozenset[str]
    missing: dict[str, str] = field(default_factory=dict)  # name -> why

    def supports_encr(self, encr: EncrId | int, key_bits: int | None = None) -> bool:
        try:
            return self.esp and kernel_encr(encr, key_bits).name in self.available
        except UnsupportedTransformError:
            return False

    def supports_integ(self, integ: IntegId | int) -> bool:
        try:
            return kernel_integ(integ).name in self.available
        except UnsupportedTransformError:
            return False


def probe_sas() -> list[SA]:
    """One throw-away SA per kernel algorithm, integrity ones over ESP-NULL, then one AH SA."""
    src, dst = IPv4Address("192.0.2.1"), IPv4Address("192.0.2.2")
    out: list[SA] = []
    seen: set[str] = set()
    null = Crypt("ecb(cipher_null)", b"")
    for name, lengths, salt, icv in _ENCR.values():
        if name in seen:
            continue
        seen.add(name)
        key = secrets.token_bytes((max(lengths) + salt) // 8)
        spi = 0x100 + len(out)
        if icv is not None:
            out.append(SA(src, dst, spi, aead=Aead(name, key, icv)))
        else:
            out.append(SA(src, dst, spi, crypt=Crypt(name, key)))
    for ki in _INTEG.values():
        auth = Auth(ki.name, secrets.token_bytes(ki.key_bytes), ki.trunc_bits)
        out.append(SA(src, dst, 0x100 + len(out), crypt=null, auth=auth))
    ah_auth = Auth("hmac(sha256)", secrets.token_bytes(32), 128)
    out.append(SA(src, dst, 0x100 + len(out), proto=Proto.AH, mode=Mode.TRANSPORT, auth=ah_auth))
    return out


async def probe(netns: str | None = None) -> Capabilities:
    """Install one SA per algorithm in a private, temporary network namespace (one batch).

    `netns` is accepted for symmetry but the probe always uses a fresh namespace so that it
    never disturbs a live SAD; it needs CAP_SYS_ADMIN to create one.
    """
    from pyroute2 import netns as pyroute2_netns

    from xfrmctl.kernel import sa as sa_ops
    from xfrmctl.kernel.socket import Connection

    name = f"xfrmctl-probe-{os.getpid()}-{secrets.token_hex(3)}"
    try:
        pyroute2_netns.create(name)
    except OSError as exc:
        raise XfrmError(f"cannot create a namespace to probe algorithms: {exc}") from exc
    try:
        conn = Connection(netns=name)
        await conn.open()
        try:
            sas = probe_sas()
            requests = [sa_ops.add_request(sa) for sa in sas]
            await conn.batch(requests)
        finally:
            conn.close()
    finally:
        with contextlib.suppress(OSError):
            pyroute2_netns.remove(name)
    available: set[str] = set()
    missing: dict[str, str] = {}
    esp = ah = False
    for sa, req in zip(sas, requests, strict=True):
        if sa.proto == Proto.AH:
            ah = req.ok
            if not req.ok:
                missing["ah"] = str(req.error)
            continue
        alg = sa.aead or (sa.auth if sa.auth is not None else sa.crypt)
        name = alg.name if alg is not None else ""
        if req.ok:
            available.add(name)
            esp = True
        else:
            missing[name] = str(req.error)
    return Capabilities(esp, ah, frozenset(available), missing)
