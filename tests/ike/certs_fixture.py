"""A throwaway CA (ECDSA P-256) and end-entity certificates for the certificate tests."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from xfrmctl.ike.crypto.certs import TrustStore
from xfrmctl.ike.crypto.signatures import LocalSigner
from xfrmctl.ike.spec import CertAuth

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn: str = "Test CA") -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=30))
        .not_valid_after(NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca: x509.Certificate,
    fqdn: str,
    key: CertificateIssuerPrivateKeyTypes | None = None,
) -> tuple[CertificateIssuerPrivateKeyTypes, x509.Certificate]:
    """A leaf for `fqdn` signed by the CA; an ECDSA P-256 key unless `key` is given."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(fqdn))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(fqdn)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def cert_auth(
    ca_key: ec.EllipticCurvePrivateKey,
    ca: x509.Certificate,
    fqdn: str,
    trust: x509.Certificate,
    key: CertificateIssuerPrivateKeyTypes | None = None,
) -> CertAuth:
    key, leaf = make_leaf(ca_key, ca, fqdn, key)
    return CertAuth(
        LocalSigner.from_key(key),
        (leaf.public_bytes(serialization.Encoding.DER),),
        TrustStore([trust]),
    )
