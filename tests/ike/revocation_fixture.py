"""A CA issuing certificates with CRL distribution points and OCSP URLs, and the CRLs and OCSP
responses it (or a delegated signer) would publish, for the revocation tests."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from certs_fixture import NOW, make_ca
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from xfrmctl.ike.crypto.certs import TrustStore
from xfrmctl.ike.crypto.signatures import LocalSigner
from xfrmctl.ike.spec import CertAuth

CRL_URI = "http://crl.test/ca.crl"
OCSP_URI = "http://ocsp.test/"
DAY = dt.timedelta(days=1)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class Pki:
    """One CA; `revoked` maps serial numbers to (date, reason) for its CRLs and OCSP answers."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    revoked: dict[int, tuple[dt.datetime, x509.ReasonFlags]] = field(default_factory=dict)

    @classmethod
    def new(cls, cn: str = "Revocation CA") -> Pki:
        key, cert = make_ca(cn)
        return cls(key, cert)

    def issue(
        self,
        cn: str,
        crl: str | None = CRL_URI,
        ocsp_uri: str | None = OCSP_URI,
        ca: bool = False,
        eku: list[x509.ObjectIdentifier] | None = None,
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        b = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - 30 * DAY)
            .not_valid_after(NOW + 90 * DAY)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        if ca:
            b = b.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
            ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        else:
            b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), False)
        if eku:
            b = b.add_extension(x509.ExtendedKeyUsage(eku), False)
        if crl:
            point = x509.DistributionPoint([x509.UniformResourceIdentifier(crl)], None, None, None)
            b = b.add_extension(x509.CRLDistributionPoints([point]), False)
        if ocsp_uri:
            aia = x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_uri)
            )
            b = b.add_extension(x509.AuthorityInformationAccess([aia]), False)
        return key, b.sign(self.key, hashes.SHA256())

    def sub_ca(self, cn: str) -> Pki:
        key, cert = self.issue(cn, ca=True)
        return Pki(key, cert)

    def revoke(self, cert: x509.Certificate, reason: x509.ReasonFlags) -> None:
        self.revoked[cert.serial_number] = (NOW - 2 * DAY, reason)

    def crl(
        self,
        last: dt.datetime = NOW - DAY,
        next_: dt.datetime | None = NOW + 7 * DAY,
        key: ec.EllipticCurvePrivateKey | None = None,
    ) -> bytes:
        b = x509.CertificateRevocationListBuilder().issuer_name(self.cert.subject)
        b = b.last_update(last).next_update(next_ or last + DAY)
        for serial, (when, reason) in self.revoked.items():
            entry = (
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(when)
                .add_extension(x509.CRLReason(reason), False)
                .build()
            )
            b = b.add_revoked_certificate(entry)
        return b.sign(key or self.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    def ocsp(
        self,
        cert: x509.Certificate,
        signer: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None = None,
        status: ocsp.OCSPCertStatus | None = None,
        next_: dt.datetime | None = NOW + DAY,
    ) -> bytes:
        key, responder = signer or (self.key, self.cert)
        revoked = self.revoked.get(cert.serial_number)
        if status is None:
            status = ocsp.OCSPCertStatus.REVOKED if revoked else ocsp.OCSPCertStatus.GOOD
        b = ocsp.OCSPResponseBuilder().add_response(
            cert,
            self.cert,
            hashes.SHA1(),
            status,
            NOW - dt.timedelta(hours=1),
            next_,
            revoked[0] if revoked and status == ocsp.OCSPCertStatus.REVOKED else None,
            revoked[1] if revoked and status == ocsp.OCSPCertStatus.REVOKED else None,
        )
        b = b.responder_id(ocsp.OCSPResponderEncoding.HASH, responder)
        if responder is not self.cert:
            b = b.certificates([responder])
        resp = b.sign(key, hashes.SHA256())
        return resp.public_bytes(serialization.Encoding.DER)

    def ocsp_signer(
        self, with_eku: bool = True
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        eku = [ExtendedKeyUsageOID.OCSP_SIGNING] if with_eku else None
        return self.issue("OCSP signer", crl=None, ocsp_uri=None, eku=eku)

    def auth(self, cn: str, **kw: object) -> tuple[CertAuth, x509.Certificate]:
        """Our CertAuth with a fresh certificate for `cn`, trusting this CA for the peer."""
        key, leaf = self.issue(cn, **kw)  # type: ignore[arg-type]
        chain = (leaf.public_bytes(serialization.Encoding.DER),)
        return CertAuth(LocalSigner.from_key(key), chain, TrustStore([self.cert])), leaf
