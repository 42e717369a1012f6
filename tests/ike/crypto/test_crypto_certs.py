"""Certificate chains and ID matching with a CA, intermediate and leaves generated here."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from xfrmctl.ike.crypto.certs import (
    IPSEC_IKE,
    TrustStore,
    id_matches_certificate,
    load_certificate_chain,
)
from xfrmctl.ike.crypto.errors import CertificateError, CryptoError
from xfrmctl.ike.iana import IdType

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
DER = serialization.Encoding.DER
Pki = dict[str, tuple[x509.Certificate, ec.EllipticCurvePrivateKey]]


def name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "xfrmctl test"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def make_cert(
    subject: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool,
    eku: list[x509.ObjectIdentifier] | None = None,
    san: list[x509.GeneralName] | None = None,
    not_after: datetime = NOW + timedelta(days=365),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_name = issuer[0].subject if issuer else name(subject)
    signing_key = issuer[1] if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=30))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    if san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(signing_key, hashes.SHA256()), key


@pytest.fixture(scope="module")
def pki() -> Pki:
    root = make_cert("Root CA", None, ca=True)
    inter = make_cert("Intermediate CA", root, ca=True)
    other_root = make_cert("Other Root CA", None, ca=True)
    san: list[x509.GeneralName] = [
        x509.DNSName("moon.example.org"),
        x509.RFC822Name("carol@example.org"),
        x509.IPAddress(ipaddress.ip_address("192.0.2.1")),
        x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
    ]
    return {
        "root": root,
        "inter": inter,
        "other_root": other_root,
        "ike_only": make_cert("moon", inter, ca=False, eku=[IPSEC_IKE], san=san),
        "no_eku": make_cert("sun", inter, ca=False, san=[x509.DNSName("sun.example.org")]),
        "server": make_cert(
            "venus", inter, ca=False, eku=[ExtendedKeyUsageOID.SERVER_AUTH], san=san
        ),
        "code": make_cert("mars", inter, ca=False, eku=[ExtendedKeyUsageOID.CODE_SIGNING], san=san),
        "expired": make_cert("old", inter, ca=False, san=san, not_after=NOW - timedelta(days=1)),
        "foreign": make_cert("alien", other_root, ca=False, san=san),
    }


def der(pki: Pki, which: str) -> bytes:
    cert: x509.Certificate = pki[which][0]
    return cert.public_bytes(DER)


def store(pki: Pki, which: str = "root") -> TrustStore:
    return TrustStore([pki[which][0]])


@pytest.mark.parametrize("leaf", ["ike_only", "no_eku", "server"])
def test_accepted_leaves(pki: Pki, leaf: str) -> None:
    cert = store(pki).verify_chain(der(pki, leaf), [der(pki, "inter")], NOW)
    assert cert == pki[leaf][0]
    # also with a POSIX timestamp
    assert store(pki).verify_chain(der(pki, leaf), [der(pki, "inter")], NOW.timestamp()) == cert


def test_ipsec_ike_only_is_rejected_by_default_webpki_policy(pki: Pki) -> None:
    """Why the relaxed policy exists: cryptography's default client policy refuses this leaf."""
    from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

    verifier = PolicyBuilder().store(Store([pki["root"][0]])).time(NOW).build_client_verifier()
    with pytest.raises(VerificationError):
        verifier.verify(pki["ike_only"][0], [pki["inter"][0]])


def test_wrong_eku_rejected(pki: Pki) -> None:
    with pytest.raises(CertificateError, match="EKU"):
        store(pki).verify_chain(der(pki, "code"), [der(pki, "inter")], NOW)


def test_expired_rejected(pki: Pki) -> None:
    with pytest.raises(CertificateError, match="expired"):
        store(pki).verify_chain(der(pki, "expired"), [der(pki, "inter")], NOW)
    with pytest.raises(CertificateError, match="not valid before"):
        store(pki).verify_chain(der(pki, "ike_only"), [der(pki, "inter")], NOW - timedelta(60))


def test_wrong_ca_and_missing_intermediate_rejected(pki: Pki) -> None:
    with pytest.raises(CertificateError, match="not trusted"):
        store(pki).verify_chain(der(pki, "foreign"), [], NOW)
    with pytest.raises(CertificateError, match="not trusted"):
        store(pki, "other_root").verify_chain(der(pki, "ike_only"), [der(pki, "inter")], NOW)
    with pytest.raises(CertificateError, match="not trusted"):
        store(pki).verify_chain(der(pki, "ike_only"), [], NOW)


def test_garbage_certificate(pki: Pki) -> None:
    with pytest.raises(CertificateError, match="cannot parse DER"):
        store(pki).verify_chain(b"\x30\x03junk", [], NOW)
    with pytest.raises(CertificateError, match="cannot parse DER"):
        store(pki).verify_chain(der(pki, "ike_only"), [b""], NOW)


@pytest.mark.parametrize(
    ("id_type", "data", "expected"),
    [
        (IdType.FQDN, b"moon.example.org", True),
        (IdType.FQDN, b"MOON.example.org", True),
        (IdType.FQDN, b"sun.example.org", False),
        (IdType.RFC822_ADDR, b"carol@example.org", True),
        (IdType.RFC822_ADDR, b"dave@example.org", False),
        (IdType.IPV4_ADDR, bytes([192, 0, 2, 1]), True),
        (IdType.IPV4_ADDR, bytes([192, 0, 2, 2]), False),
        (IdType.IPV4_ADDR, bytes([192, 0, 2]), False),
        (IdType.IPV6_ADDR, ipaddress.ip_address("2001:db8::1").packed, True),
        (IdType.IPV6_ADDR, ipaddress.ip_address("2001:db8::2").packed, False),
        (IdType.FQDN, b"\xff\xfe", False),
        (IdType.KEY_ID, b"moon.example.org", False),
    ],
)
def test_id_matching(pki: Pki, id_type: IdType, data: bytes, expected: bool) -> None:
    assert id_matches_certificate(id_type, data, pki["ike_only"][0]) is expected


def test_dn_matching(pki: Pki) -> None:
    cert = pki["ike_only"][0]
    assert id_matches_certificate(IdType.DER_ASN1_DN, name("moon").public_bytes(), cert)
    assert not id_matches_certificate(IdType.DER_ASN1_DN, name("sun").public_bytes(), cert)
    assert not id_matches_certificate(IdType.DER_ASN1_DN, b"\x30\x00", cert)
    # a certificate without SAN verifies, and matches only its DN
    no_san, _ = make_cert("plain", pki["inter"], ca=False)
    got = store(pki).verify_chain(no_san.public_bytes(DER), [der(pki, "inter")], NOW)
    assert got == no_san
    assert not id_matches_certificate(IdType.FQDN, b"plain", no_san)
    assert id_matches_certificate(IdType.DER_ASN1_DN, name("plain").public_bytes(), no_san)


def test_from_pem_files(pki: Pki, tmp_path: Path) -> None:
    pem = pki["root"][0].public_bytes(serialization.Encoding.PEM)
    good = tmp_path / "ca.pem"
    good.write_bytes(pem + pki["other_root"][0].public_bytes(serialization.Encoding.PEM))
    ts = TrustStore.from_pem_files([good])
    assert len(ts.cas) == 2
    assert ts.verify_chain(der(pki, "ike_only"), [der(pki, "inter")], NOW) == pki["ike_only"][0]
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(CertificateError, match=r"bad\.pem"):
        TrustStore.from_pem_files([bad])
    with pytest.raises(CertificateError, match=r"missing\.pem"):
        TrustStore.from_pem_files([tmp_path / "missing.pem"])
    with pytest.raises(CryptoError, match="no CA"):
        TrustStore.from_pem_files([])
    assert load_certificate_chain(pem) == [pki["root"][0]]
