"""Wireshark's key tables (UATs) for decrypting captures: `esp_sa` and `ikev2_decryption_table`.

Contract: pure formatting. Given one SA's negotiated transforms (IANA IDs, RFC 7296 §3.3.2)
and keys, return the line Wireshark reads from its profile directory, or raise NotDecryptable
naming an algorithm Wireshark cannot decrypt. Nothing here reads files or logs; key material
only ever leaves as the returned line.

Formats (Wireshark 4.0's packet-ipsec.c and packet-isakmp.c, one record a line, `#` comments):

- `esp_sa`: quoted strings `"IPv4","SRC","DST","0xSPI","ENCRYPTION","0xKEY","AUTH","0xKEY"`.
  Counter-mode and AEAD keys carry their 4-byte salt/nonce (RFC 3686 §5, RFC 4106 §8.1), as
  the kernel's do.
- `ikev2_decryption_table`: `SPIi,SPIr,SK_ei,SK_er,"ENCRYPTION",SK_ai,SK_ar,"INTEGRITY"`,
  the byte fields in bare hex; SK_e* of AES-GCM carry their salt (RFC 5282 §7.1), and an
  AEAD has empty SK_a* with integrity "NONE [RFC4306]".

The algorithm names are Wireshark's value strings; a name it does not know makes it reject
the whole table. AES-XCBC and AES-CMAC, which Wireshark cannot verify, map to its unchecked
96-bit ICV entry, which takes no key: it still decrypts, and shows the ICV as unchecked.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from xfrmctl.ike.iana import EncrId, IntegId, name_of

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ESP_SA = "esp_sa"
IKEV2_TABLE = "ikev2_decryption_table"
TABLES = (ESP_SA, IKEV2_TABLE)

_ESP_ENCR = {
    EncrId.NULL: "NULL",
    EncrId.DES3: "TripleDES-CBC [RFC2451]",
    EncrId.AES_CBC: "AES-CBC [RFC3602]",
    EncrId.AES_CTR: "AES-CTR [RFC3686]",
    EncrId.AES_GCM_8: "AES-GCM with 8 octet ICV [RFC4106]",
    EncrId.AES_GCM_12: "AES-GCM with 12 octet ICV [RFC4106]",
    EncrId.AES_GCM_16: "AES-GCM with 16 octet ICV [RFC4106]",
}
_ESP_AUTH = {
    IntegId.NONE: "NULL",
    IntegId.HMAC_MD5_96: "HMAC-MD5-96 [RFC2403]",
    IntegId.HMAC_SHA1_96: "HMAC-SHA-1-96 [RFC2404]",
    IntegId.AES_XCBC_96: "ANY 96 bit authentication [no checking]",
    IntegId.AES_CMAC_96: "ANY 96 bit authentication [no checking]",
    IntegId.HMAC_SHA2_256_128: "HMAC-SHA-256-128 [RFC4868]",
    IntegId.HMAC_SHA2_384_192: "HMAC-SHA-384-192 [RFC4868]",
    IntegId.HMAC_SHA2_512_256: "HMAC-SHA-512-256 [RFC4868]",
}
_IKE_GCM_ICV = {EncrId.AES_GCM_8: 8, EncrId.AES_GCM_12: 12, EncrId.AES_GCM_16: 16}
_IKE_INTEG = {
    IntegId.NONE: "NONE [RFC4306]",
    IntegId.HMAC_MD5_96: "HMAC_MD5_96 [RFC2403]",
    IntegId.HMAC_SHA1_96: "HMAC_SHA1_96 [RFC2404]",
    IntegId.AES_XCBC_96: "ANY 96-bits of Authentication [No Checking]",
    IntegId.AES_CMAC_96: "ANY 96-bits of Authentication [No Checking]",
    IntegId.HMAC_SHA2_256_128: "HMAC_SHA2_256_128 [RFC4868]",
    IntegId.HMAC_SHA2_384_192: "HMAC_SHA2_384_192 [RFC4868]",
    IntegId.HMAC_SHA2_512_256: "HMAC_SHA2_512_256 [RFC4868]",
}
_AES_BITS = (128, 192, 256)
# Integrity Wireshark does not verify: it takes no key, so none is written.
_UNCHECKED = frozenset({IntegId.AES_XCBC_96, IntegId.AES_CMAC_96})


class NotDecryptable(ValueError):
    """An SA whose algorithm Wireshark cannot decrypt (or that this export cannot describe)."""


@dataclass(frozen=True)
class EspSaKeys:
    """One direction of an ESP SA: the outer addresses as on the wire, and its keys."""

    label: str  # "conn/child", for messages
    src: IPAddress
    dst: IPAddress
    spi: int
    encr: int
    encr_key_bits: int | None  # KEY_LENGTH attribute
    encr_key: bytes = field(repr=False)
    integ: int | None  # None or NONE for an AEAD
    integ_key: bytes = field(repr=False)

    def describe(self) -> str:
        return f"ESP SA 0x{self.spi:08x} of {self.label} ({self.src} -> {self.dst})"


@dataclass(frozen=True)
class IkeSaKeys:
    """One IKE SA: its SPIs (8 bytes each) and SK_e*/SK_a* (RFC 7296 §2.14)."""

    label: str  # "conn[unique id]", for messages
    spi_i: bytes
    spi_r: bytes
    encr: int
    encr_key_bits: int | None
    sk_ei: bytes = field(repr=False)
    sk_er: bytes = field(repr=False)
    integ: int | None
    sk_ai: bytes = field(repr=False)
    sk_ar: bytes = field(repr=False)

    def describe(self) -> str:
        return f"IKE SA {self.label} (SPIs {self.spi_i.hex()}_i {self.spi_r.hex()}_r)"


def _quoted(text: str) -> str:
    return f'"{text}"'


def _encr_name(encr: int) -> str:
    return name_of(EncrId, encr)


def esp_encryption_name(encr: int) -> str:
    """Wireshark's name for an ESP ENCR transform; NotDecryptable names what it lacks."""
    try:
        return _ESP_ENCR[EncrId(encr)]
    except (ValueError, KeyError):
        raise NotDecryptable(f"Wireshark cannot decrypt ESP with {_encr_name(encr)}") from None


def esp_authentication_name(integ: int | None) -> str:
    try:
        return _ESP_AUTH[IntegId(integ or IntegId.NONE)]
    except (ValueError, KeyError):
        name = name_of(IntegId, integ or 0)
        raise NotDecryptable(f"Wireshark cannot check ESP integrity {name}") from None


def ike_encryption_name(encr: int, key_bits: int | None) -> str:
    """Wireshark's name for an IKE ENCR transform with its key length."""
    if key_bits in _AES_BITS:
        if encr == EncrId.AES_CBC:
            return f"AES-CBC-{key_bits} [RFC3602]"
        if encr in _IKE_GCM_ICV:
            return f"AES-GCM-{key_bits} with {_IKE_GCM_ICV[EncrId(encr)]} octet ICV [RFC5282]"
    raise NotDecryptable(f"Wireshark cannot decrypt IKE with {_encr_name(encr)}")


def ike_integrity_name(integ: int | None) -> str:
    try:
        return _IKE_INTEG[IntegId(integ or IntegId.NONE)]
    except (ValueError, KeyError):
        name = name_of(IntegId, integ or 0)
        raise NotDecryptable(f"Wireshark cannot check IKE integrity {name}") from None


def _hex_key(key: bytes) -> str:
    return f"0x{key.hex()}" if key else ""


def _integ_key(integ: int | None, key: bytes) -> bytes:
    return b"" if integ in _UNCHECKED else key


def esp_sa_record(sa: EspSaKeys) -> str:
    """The `esp_sa` line for one ESP SA."""
    family = "IPv4" if sa.src.version == 4 else "IPv6"
    fields = [
        family,
        str(sa.src),
        str(sa.dst),
        f"0x{sa.spi:08x}",
        esp_encryption_name(sa.encr),
        _hex_key(sa.encr_key),
        esp_authentication_name(sa.integ),
        _hex_key(_integ_key(sa.integ, sa.integ_key)),
    ]
    return ",".join(_quoted(f) for f in fields)


def ikev2_record(sa: IkeSaKeys) -> str:
    """The `ikev2_decryption_table` line for one IKE SA."""
    encr = ike_encryption_name(sa.encr, sa.encr_key_bits)
    integ = ike_integrity_name(sa.integ)
    return ",".join(
        [
            sa.spi_i.hex(),
            sa.spi_r.hex(),
            sa.sk_ei.hex(),
            sa.sk_er.hex(),
            _quoted(encr),
            _integ_key(sa.integ, sa.sk_ai).hex(),
            _integ_key(sa.integ, sa.sk_ar).hex(),
            _quoted(integ),
        ]
    )
