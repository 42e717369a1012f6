"""Kernel IPsec algorithms by crypto-API name, their key lengths, and what this kernel can do.

Key lengths are what the kernel wants in `alg_key_len`: for AEAD and counter modes the cipher
key is followed by a salt/nonce (RFC 4106 §8.1, RFC 7634 §4, RFC 3686 §5). This layer knows
algorithms by name only; which IKEv2 transform maps to which is the daemon's business
(xfrmctl/daemon/transforms.py).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from xfrmctl.kernel.errors import XfrmError
from xfrmctl.kernel.types import SA, Aead, Auth, Crypt, Mode, Proto


@dataclass(frozen=True)
class Cipher:
    """A kernel cipher or AEAD: the cipher key lengths it takes and the salt that follows."""

    name: str
    key_bits: tuple[int, ...]  # salt excluded
    salt_bits: int = 0
    aead: bool = False


@dataclass(frozen=True)
class Integrity:
    """A kernel MAC with its key length and the truncation IPsec uses (RFC 4868 for SHA-2)."""

    name: str
    key_bits: int
    trunc_bits: int

    @property
    def key_bytes(self) -> int:
        return self.key_bits // 8


CIPHERS: dict[str, Cipher] = {
    c.name: c
    for c in (
        Cipher("cbc(aes)", (128, 192, 256)),
        Cipher("rfc3686(ctr(aes))", (128, 192, 256), 32),
        Cipher("rfc4106(gcm(aes))", (128, 192, 256), 32, aead=True),
        Cipher("rfc4309(ccm(aes))", (128, 192, 256), 24, aead=True),
        Cipher("rfc4543(gcm(aes))", (128, 192, 256), 32, aead=True),
        Cipher("rfc7539esp(chacha20,poly1305)", (256,), 32, aead=True),
        Cipher("cbc(camellia)", (128, 192, 256)),
        Cipher("cbc(des3_ede)", (192,)),
        Cipher("ecb(cipher_null)", (0,)),
    )
}

INTEGRITY: dict[str, Integrity] = {
    i.name: i
    for i in (
        Integrity("hmac(md5)", 128, 96),
        Integrity("hmac(sha1)", 160, 96),
        Integrity("xcbc(aes)", 128, 96),
        Integrity("cmac(aes)", 128, 96),
        Integrity("hmac(sha256)", 256, 128),
        Integrity("hmac(sha384)", 384, 192),
        Integrity("hmac(sha512)", 512, 256),
    )
}


# --- capability probe ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Capabilities:
    """What this kernel installs: ESP/AH at all, and each kernel algorithm by name."""

    esp: bool
    ah: bool
    available: frozenset[str]
    missing: dict[str, str] = field(default_factory=dict)  # name -> why

    def has(self, name: str) -> bool:
        """Whether ESP SAs with this kernel algorithm install here."""
        return self.esp and name in self.available


def probe_sas() -> list[SA]:
    """One throw-away SA per kernel algorithm, integrity ones over ESP-NULL, then one AH SA."""
    src, dst = IPv4Address("192.0.2.1"), IPv4Address("192.0.2.2")
    out: list[SA] = []
    null = Crypt("ecb(cipher_null)", b"")
    for cipher in CIPHERS.values():
        key = secrets.token_bytes((max(cipher.key_bits) + cipher.salt_bits) // 8)
        spi = 0x100 + len(out)
        if cipher.aead:
            out.append(SA(src, dst, spi, aead=Aead(cipher.name, key, 128)))
        else:
            out.append(SA(src, dst, spi, crypt=Crypt(cipher.name, key)))
    for ki in INTEGRITY.values():
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
