"""Identities, traffic selectors, durations and sizes parsed as strongSwan writes them."""

from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from xfrmctl.config.identities import parse_identity
from xfrmctl.config.selectors import parse_selector
from xfrmctl.config.units import parse_duration, parse_size
from xfrmctl.ike.iana import IdType


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("192.0.2.1", IdType.IPV4_ADDR, "192.0.2.1"),
        ("2001:db8::1", IdType.IPV6_ADDR, "2001:db8::1"),
        ("gw.example.org", IdType.FQDN, "gw.example.org"),
        ("fqdn:192.0.2.1", IdType.FQDN, "192.0.2.1"),
        ("@gw.example.org", IdType.FQDN, "gw.example.org"),
        ("alice@example.org", IdType.RFC822_ADDR, "alice@example.org"),
        ("email:alice@example.org", IdType.RFC822_ADDR, "alice@example.org"),
        ("keyid:abc", IdType.KEY_ID, "abc"),
        ("@#0102", IdType.KEY_ID, "#0102"),
        ("C=CH, O=x, CN=y", IdType.DER_ASN1_DN, "C=CH, O=x, CN=y"),
    ],
)
def test_identity_typing(text: str, kind: IdType, value: str) -> None:
    identity = parse_identity(text)
    assert identity is not None
    assert (identity.type, identity.text) == (kind, value)


def test_any_identity() -> None:
    assert parse_identity("%any") is None


def test_identity_encodings() -> None:
    assert parse_identity("192.0.2.1").encoded() == bytes([192, 0, 2, 1])  # type: ignore[union-attr]
    assert parse_identity("@#0102ff").encoded() == b"\x01\x02\xff"  # type: ignore[union-attr]
    dn = parse_identity("C=CH, O=Example, CN=gw")
    assert dn is not None
    der = dn.encoded()
    expected = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CH"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example"),
            x509.NameAttribute(NameOID.COMMON_NAME, "gw"),
        ]
    ).public_bytes()
    assert der == expected  # written order is kept: C first, as strongSwan encodes it


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "empty"),
        ("ipv4:2001:db8::1", "not an IPv4 address"),
        ("C=CH, FOO=x", "unknown attribute 'FOO'"),
        ("C=CH, O", "'O' is not ATTRIBUTE=value"),
        ("keyid:#zz", "must be hex"),
        ("gw example", "white space"),
        ("fqdn:", "no value"),
    ],
)
def test_identity_errors(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_identity(text)


@pytest.mark.parametrize(
    ("text", "net", "proto", "ports"),
    [
        ("10.1.0.0/16", "10.1.0.0/16", 0, (0, 65535)),
        ("192.0.2.1", "192.0.2.1/32", 0, (0, 65535)),
        ("10.1.0.0/16[tcp/443]", "10.1.0.0/16", 6, (443, 443)),
        ("10.1.0.0/16[udp/1000-2000]", "10.1.0.0/16", 17, (1000, 2000)),
        ("10.1.0.0/16[tcp]", "10.1.0.0/16", 6, (0, 65535)),
        ("10.1.0.0/16[17/%any]", "10.1.0.0/16", 17, (0, 65535)),
        ("2001:db8::/32[tcp/https]", "2001:db8::/32", 6, (443, 443)),
        ("10.1.0.0/16[/53]", "10.1.0.0/16", 0, (53, 53)),
    ],
)
def test_selectors(text: str, net: str, proto: int, ports: tuple[int, int]) -> None:
    sel = parse_selector(text)
    assert sel.network == ipaddress.ip_network(net)
    assert (sel.protocol, (sel.port_start, sel.port_end)) == (proto, ports)


def test_dynamic_selector_resolves_per_family() -> None:
    sel = parse_selector("dynamic[tcp/22]")
    assert sel.network is None
    resolved = sel.resolve(ipaddress.ip_address("2001:db8::5"))
    assert str(resolved.network) == "2001:db8::5/128" and resolved.port_start == 22


@pytest.mark.parametrize(
    "text", ["10.0.0.0/8[tcp/2000-1000]", "10.0.0.0/8[tcp/nosuchservice]", "10.0.0.0/8[999]"]
)
def test_selector_errors(text: str) -> None:
    with pytest.raises(ValueError, match="traffic selector"):
        parse_selector(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(30, 30), ("30", 30), ("30s", 30), ("5m", 300), ("4h", 14400), ("1d", 86400)],
)
def test_durations(text: object, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["4 hours", "1.5h", "-1", True, -5, "h"])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_sizes() -> None:
    assert parse_size("500M") == 500 * 2**20
    assert parse_size("1G") == 2**30
    assert parse_size("64k") == 65536
    assert parse_size(7) == 7
    with pytest.raises(ValueError, match="size"):
        parse_size("1Q")
