"""Wireshark's key tables: the exact line formats, and every algorithm the kernel (ESP) or the
engine (IKE) can negotiate either named as Wireshark 4.0 names it or refused in words."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from xfrmctl.daemon.transforms import UnsupportedTransformError, kernel_encr, kernel_integ
from xfrmctl.daemon.wireshark import (
    EspSaKeys,
    IkeSaKeys,
    NotDecryptable,
    esp_authentication_name,
    esp_encryption_name,
    esp_sa_record,
    ike_encryption_name,
    ike_integrity_name,
    ikev2_record,
)
from xfrmctl.ike.crypto.algorithms import encr_for, integ_for
from xfrmctl.ike.crypto.errors import UnsupportedAlgorithm
from xfrmctl.ike.iana import EncrId, IntegId, TransformType
from xfrmctl.ike.transforms import Transform

# Wireshark 4.0's value strings (packet-ipsec.c esp_encryption_type_vals and
# esp_authentication_type_vals, packet-isakmp.c's IKEv2 tables): a table holding any other
# name is rejected by Wireshark as a whole.
ESP_ENCR = {
    EncrId.NULL: "NULL",
    EncrId.DES3: "TripleDES-CBC [RFC2451]",
    EncrId.AES_CBC: "AES-CBC [RFC3602]",
    EncrId.AES_CTR: "AES-CTR [RFC3686]",
    EncrId.AES_GCM_8: "AES-GCM with 8 octet ICV [RFC4106]",
    EncrId.AES_GCM_12: "AES-GCM with 12 octet ICV [RFC4106]",
    EncrId.AES_GCM_16: "AES-GCM with 16 octet ICV [RFC4106]",
}
ESP_ENCR_REFUSED = {
    EncrId.AES_CCM_8,
    EncrId.AES_CCM_12,
    EncrId.AES_CCM_16,
    EncrId.NULL_AUTH_AES_GMAC,
    EncrId.CAMELLIA_CBC,
    EncrId.CHACHA20_POLY1305,
}
ESP_AUTH = {
    IntegId.NONE: "NULL",
    IntegId.HMAC_MD5_96: "HMAC-MD5-96 [RFC2403]",
    IntegId.HMAC_SHA1_96: "HMAC-SHA-1-96 [RFC2404]",
    IntegId.AES_XCBC_96: "ANY 96 bit authentication [no checking]",
    IntegId.AES_CMAC_96: "ANY 96 bit authentication [no checking]",
    IntegId.HMAC_SHA2_256_128: "HMAC-SHA-256-128 [RFC4868]",
    IntegId.HMAC_SHA2_384_192: "HMAC-SHA-384-192 [RFC4868]",
    IntegId.HMAC_SHA2_512_256: "HMAC-SHA-512-256 [RFC4868]",
}
IKE_ENCR = {
    (EncrId.AES_CBC, 128): "AES-CBC-128 [RFC3602]",
    (EncrId.AES_CBC, 192): "AES-CBC-192 [RFC3602]",
    (EncrId.AES_CBC, 256): "AES-CBC-256 [RFC3602]",
    **{
        (encr, bits): f"AES-GCM-{bits} with {icv} octet ICV [RFC5282]"
        for encr, icv in ((EncrId.AES_GCM_8, 8), (EncrId.AES_GCM_12, 12), (EncrId.AES_GCM_16, 16))
        for bits in (128, 192, 256)
    },
}
IKE_ENCR_REFUSED = {(EncrId.CHACHA20_POLY1305, None), (EncrId.CHACHA20_POLY1305, 256)}
IKE_INTEG = {
    IntegId.HMAC_SHA1_96: "HMAC_SHA1_96 [RFC2404]",
    IntegId.AES_XCBC_96: "ANY 96-bits of Authentication [No Checking]",
    IntegId.AES_CMAC_96: "ANY 96-bits of Authentication [No Checking]",
    IntegId.HMAC_SHA2_256_128: "HMAC_SHA2_256_128 [RFC4868]",
    IntegId.HMAC_SHA2_384_192: "HMAC_SHA2_384_192 [RFC4868]",
    IntegId.HMAC_SHA2_512_256: "HMAC_SHA2_512_256 [RFC4868]",
}
KEY_BITS = (None, 128, 192, 256)


def kernel_encrs() -> set[EncrId]:
    """Every ENCR transform the kernel mapping accepts with some key length."""
    found = set()
    for encr in EncrId:
        for bits in KEY_BITS:
            try:
                kernel_encr(encr, bits)
            except UnsupportedTransformError:
                continue
            found.add(encr)
    return found


def kernel_integs() -> set[IntegId]:
    found = set()
    for integ in IntegId:
        try:
            kernel_integ(integ)
        except UnsupportedTransformError:
            continue
        found.add(integ)
    return found


def engine_encrs() -> set[tuple[EncrId, int | None]]:
    found = set()
    for encr in EncrId:
        for bits in KEY_BITS:
            try:
                encr_for(Transform(TransformType.ENCR, encr, bits))
            except UnsupportedAlgorithm:
                continue
            found.add((encr, bits))
    return found


def engine_integs() -> set[IntegId]:
    found = set()
    for integ in IntegId:
        try:
            integ_for(Transform(TransformType.INTEG, integ))
        except UnsupportedAlgorithm:
            continue
        found.add(integ)
    return found


def test_every_algorithm_the_kernel_or_engine_takes_is_decided() -> None:
    """A new kernel (ESP) or engine (IKE) algorithm must be named or refused here."""
    assert set(ESP_ENCR) | ESP_ENCR_REFUSED == kernel_encrs()
    assert set(ESP_AUTH) - {IntegId.NONE} == kernel_integs()
    assert set(IKE_ENCR) | IKE_ENCR_REFUSED == engine_encrs()
    assert set(IKE_INTEG) == engine_integs()


@pytest.mark.parametrize("encr", sorted(ESP_ENCR))
def test_esp_encryption_names(encr: EncrId) -> None:
    assert esp_encryption_name(encr) == ESP_ENCR[encr]


@pytest.mark.parametrize("encr", sorted(ESP_ENCR_REFUSED))
def test_esp_encryption_wireshark_cannot_decrypt_is_refused_by_name(encr: EncrId) -> None:
    with pytest.raises(NotDecryptable, match=f"Wireshark cannot decrypt ESP with {encr.name}"):
        esp_encryption_name(encr)


@pytest.mark.parametrize("integ", sorted(ESP_AUTH))
def test_esp_authentication_names(integ: IntegId) -> None:
    assert esp_authentication_name(integ) == ESP_AUTH[integ]


def test_esp_authentication_none_for_an_aead() -> None:
    assert esp_authentication_name(None) == "NULL"


def test_esp_gmac_integrity_is_refused() -> None:
    with pytest.raises(NotDecryptable, match="cannot check ESP integrity AES_128_GMAC"):
        esp_authentication_name(IntegId.AES_128_GMAC)


@pytest.mark.parametrize(("encr", "bits"), sorted(IKE_ENCR))
def test_ike_encryption_names(encr: EncrId, bits: int) -> None:
    assert ike_encryption_name(encr, bits) == IKE_ENCR[(encr, bits)]


@pytest.mark.parametrize(("encr", "bits"), sorted(IKE_ENCR_REFUSED, key=str))
def test_ike_chacha20_is_refused_by_name(encr: EncrId, bits: int | None) -> None:
    with pytest.raises(NotDecryptable, match="cannot decrypt IKE with CHACHA20_POLY1305"):
        ike_encryption_name(encr, bits)


@pytest.mark.parametrize("integ", sorted(IKE_INTEG))
def test_ike_integrity_names(integ: IntegId) -> None:
    assert ike_integrity_name(integ) == IKE_INTEG[integ]
    assert ike_integrity_name(None) == "NONE [RFC4306]"  # an AEAD


def esp(**changes: object) -> EspSaKeys:
    base = EspSaKeys(
        label="site/net",
        src=ip_address("192.0.2.1"),
        dst=ip_address("192.0.2.2"),
        spi=0xC0FFEE01,
        encr=EncrId.AES_GCM_16,
        encr_key_bits=256,
        encr_key=bytes(range(36)),
        integ=None,
        integ_key=b"",
    )
    return EspSaKeys(**{**base.__dict__, **changes})  # type: ignore[arg-type]


def test_esp_sa_line_for_aes_gcm_over_ipv4() -> None:
    key = bytes(range(36)).hex()
    assert esp_sa_record(esp()) == (
        f'"IPv4","192.0.2.1","192.0.2.2","0xc0ffee01",'
        f'"AES-GCM with 16 octet ICV [RFC4106]","0x{key}","NULL",""'
    )


def test_esp_sa_line_for_aes_cbc_with_hmac_over_ipv6() -> None:
    sa = esp(
        src=ip_address("2001:db8::1"),
        dst=ip_address("2001:db8::2"),
        spi=0x0000ABCD,
        encr=EncrId.AES_CBC,
        encr_key_bits=128,
        encr_key=b"\x11" * 16,
        integ=IntegId.HMAC_SHA2_256_128,
        integ_key=b"\x22" * 32,
    )
    assert esp_sa_record(sa) == (
        f'"IPv6","2001:db8::1","2001:db8::2","0x0000abcd","AES-CBC [RFC3602]",'
        f'"0x{"11" * 16}","HMAC-SHA-256-128 [RFC4868]","0x{"22" * 32}"'
    )


def test_unchecked_integrity_writes_no_key() -> None:
    """Wireshark's unchecked ICV entries take no key; an unused secret stays out of the file."""
    sa = esp(encr=EncrId.AES_CBC, encr_key=b"\x11" * 16, integ=IntegId.AES_XCBC_96)
    sa = EspSaKeys(**{**sa.__dict__, "integ_key": b"\x33" * 16})
    line = esp_sa_record(sa)
    assert line.endswith('"ANY 96 bit authentication [no checking]",""') and "33" * 16 not in line


def test_esp_line_refuses_chacha20() -> None:
    with pytest.raises(NotDecryptable, match="CHACHA20_POLY1305"):
        esp_sa_record(esp(encr=EncrId.CHACHA20_POLY1305, encr_key_bits=None))


def ike(**changes: object) -> IkeSaKeys:
    base = IkeSaKeys(
        label="site[1]",
        spi_i=bytes.fromhex("0102030405060708"),
        spi_r=bytes.fromhex("a1a2a3a4a5a6a7a8"),
        encr=EncrId.AES_GCM_16,
        encr_key_bits=256,
        sk_ei=b"\xe1" * 36,
        sk_er=b"\xe2" * 36,
        integ=None,
        sk_ai=b"",
        sk_ar=b"",
    )
    return IkeSaKeys(**{**base.__dict__, **changes})  # type: ignore[arg-type]


def test_ikev2_line_for_aes_gcm() -> None:
    assert ikev2_record(ike()) == (
        f"0102030405060708,a1a2a3a4a5a6a7a8,{'e1' * 36},{'e2' * 36},"
        '"AES-GCM-256 with 16 octet ICV [RFC5282]",,,"NONE [RFC4306]"'
    )


def test_ikev2_line_for_aes_cbc_with_hmac() -> None:
    sa = ike(
        encr=EncrId.AES_CBC,
        encr_key_bits=128,
        sk_ei=b"\xe1" * 16,
        sk_er=b"\xe2" * 16,
        integ=IntegId.HMAC_SHA2_256_128,
        sk_ai=b"\xa1" * 32,
        sk_ar=b"\xa2" * 32,
    )
    assert ikev2_record(sa) == (
        f"0102030405060708,a1a2a3a4a5a6a7a8,{'e1' * 16},{'e2' * 16},"
        f'"AES-CBC-128 [RFC3602]",{"a1" * 32},{"a2" * 32},"HMAC_SHA2_256_128 [RFC4868]"'
    )


def test_ikev2_unchecked_integrity_has_empty_keys() -> None:
    """Wireshark rejects the table if an unchecked entry carries SK_a* (it wants 0 octets)."""
    sa = ike(
        encr=EncrId.AES_CBC,
        encr_key_bits=128,
        sk_ei=b"\xe1" * 16,
        sk_er=b"\xe2" * 16,
        integ=IntegId.AES_CMAC_96,
        sk_ai=b"\xa1" * 16,
        sk_ar=b"\xa2" * 16,
    )
    assert ikev2_record(sa).endswith(',,"ANY 96-bits of Authentication [No Checking]"')


def test_reprs_show_no_keys() -> None:
    text = repr(esp()) + repr(ike())
    assert "site/net" in text and "site[1]" in text
    for key in (bytes(range(36)), b"\xe1" * 36):
        assert repr(key)[2:12] not in text and key.hex()[:10] not in text
