"""IKE identities written the strongSwan way, typed as strongSwan types them.

`192.0.2.1` is an IPv4 ID, `user@host` RFC822, `C=CH, O=x, CN=y` a DN, `keyid:` a key ID and
anything else an FQDN; explicit `fqdn:`, `email:`, `ipv4:`, `ipv6:`, `dn:` prefixes override the
guess. Parsing happens at load time so `xfrmctl check` reports a bad ID with its line.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass

from xfrmctl.ike.iana import IdType

ANY = "%any"

# Attribute names strongSwan accepts in DNs, mapped to their dotted OIDs.
DN_ATTRIBUTES = {
    "C": "2.5.4.6",
    "ST": "2.5.4.8",
    "L": "2.5.4.7",
    "O": "2.5.4.10",
    "OU": "2.5.4.11",
    "CN": "2.5.4.3",
    "SN": "2.5.4.4",
    "GN": "2.5.4.42",
    "T": "2.5.4.12",
    "SERIALNUMBER": "2.5.4.5",
    "DC": "0.9.2342.19200300.100.1.25",
    "UID": "0.9.2342.19200300.100.1.1",
    "E": "1.2.840.113549.1.9.1",
    "EMAIL": "1.2.840.113549.1.9.1",
    "EMAILADDRESS": "1.2.840.113549.1.9.1",
}
_PREFIXES = {
    "fqdn": IdType.FQDN,
    "email": IdType.RFC822_ADDR,
    "rfc822": IdType.RFC822_ADDR,
    "userfqdn": IdType.RFC822_ADDR,
    "ipv4": IdType.IPV4_ADDR,
    "ipv6": IdType.IPV6_ADDR,
    "dn": IdType.DER_ASN1_DN,
    "asn1dn": IdType.DER_ASN1_DN,
    "keyid": IdType.KEY_ID,
}
_SPLIT_RE = re.compile(r"(?<!\\)[,/]")


@dataclass(frozen=True)
class Identity:
    """A typed identity; `text` is the value without any type prefix."""

    type: IdType
    text: str

    def __str__(self) -> str:
        return self.text

    def dn_attributes(self) -> list[tuple[str, str]]:
        """The DN's (OID, value) pairs in the order written (most significant first)."""
        return parse_dn(self.text)

    def encoded(self) -> bytes:
        """ID payload data (RFC 7296 §3.5); DNs need `cryptography`, imported only here."""
        if self.type in (IdType.IPV4_ADDR, IdType.IPV6_ADDR):
            return ipaddress.ip_address(self.text).packed
        if self.type == IdType.KEY_ID:
            return bytes.fromhex(self.text[1:]) if self.text.startswith("#") else self.text.encode()
        if self.type == IdType.DER_ASN1_DN:
            from cryptography import x509

            rdns = [
                x509.RelativeDistinguishedName(
                    [x509.NameAttribute(x509.ObjectIdentifier(oid), value)]
                )
                for oid, value in self.dn_attributes()
            ]
            return x509.Name(rdns).public_bytes()
        return self.text.encode()


def parse_dn(text: str) -> list[tuple[str, str]]:
    """Split `C=CH, O=x, CN=y` (or `/C=CH/O=x`) into (OID, value); errors name the bad part."""
    parts = [p.strip() for p in _SPLIT_RE.split(text) if p.strip()]
    if not parts:
        raise ValueError(f"distinguished name {text!r} is empty")
    out = []
    for part in parts:
        key, sep, value = part.partition("=")
        key = key.strip()
        value = value.strip().replace("\\,", ",").replace("\\/", "/")
        if not sep or not value:
            raise ValueError(f"distinguished name {text!r}: {part!r} is not ATTRIBUTE=value")
        oid = DN_ATTRIBUTES.get(key.upper())
        if oid is None:
            if re.fullmatch(r"\d+(\.\d+)+", key):
                oid = key
            else:
                known = ", ".join(sorted(k for k in DN_ATTRIBUTES if k not in ("EMAIL",)))
                raise ValueError(
                    f"distinguished name {text!r}: unknown attribute {key!r} (known: {known})"
                )
        out.append((oid, value))
    return out


@functools.lru_cache(maxsize=1024)
def parse_identity(text: str) -> Identity | None:
    """Type an identity string; None means `%any`. Raises ValueError naming what is wrong.

    Cached (an Identity is immutable): a fleet's connections share their identities, each
    parsed when validated and again for the specs (issue 15)."""
    text = text.strip()
    if not text:
        raise ValueError("identity is empty")
    if text == ANY:
        return None
    prefix, colon, rest = text.partition(":")
    if colon and prefix.lower() in _PREFIXES:
        return _typed(_PREFIXES[prefix.lower()], rest.strip(), text)
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        return Identity(IdType.IPV4_ADDR if addr.version == 4 else IdType.IPV6_ADDR, str(addr))
    if "=" in text:
        return _typed(IdType.DER_ASN1_DN, text, text)
    if text.startswith("@#"):
        return _typed(IdType.KEY_ID, "#" + text[2:], text)
    if text.startswith("@"):
        return _typed(IdType.FQDN, text[1:], text)
    if "@" in text:
        return _typed(IdType.RFC822_ADDR, text, text)
    return _typed(IdType.FQDN, text, text)


def _typed(kind: IdType, value: str, original: str) -> Identity:
    if not value:
        raise ValueError(f"identity {original!r} has no value after its type prefix")
    if kind in (IdType.IPV4_ADDR, IdType.IPV6_ADDR):
        try:
            addr = ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"identity {original!r} is not an IP address") from None
        want = 4 if kind == IdType.IPV4_ADDR else 6
        if addr.version != want:
            raise ValueError(f"identity {original!r} is not an IPv{want} address")
        value = str(addr)
    elif kind == IdType.DER_ASN1_DN:
        parse_dn(value)
    elif kind == IdType.KEY_ID and value.startswith("#"):
        try:
            bytes.fromhex(value[1:])
        except ValueError:
            raise ValueError(f"identity {original!r}: key ID after '#' must be hex") from None
    elif kind in (IdType.FQDN, IdType.RFC822_ADDR) and any(c.isspace() for c in value):
        raise ValueError(f"identity {original!r} contains white space; DNs need ATTRIBUTE=value")
    return Identity(kind, value)
