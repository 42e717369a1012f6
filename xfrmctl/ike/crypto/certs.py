"""X.509 for IKE: verify a peer's chain against configured CAs and match its ID to the leaf.

Chains (RFC 7296 §3.6: the peer's leaf first, then intermediates) are built only from the
configured CAs and the certificates the peer sent; no issuer is ever fetched (no AIA
caIssuers). Revocation of a verified chain is checked afterwards (`revocation`). Self-signed
certificates in remote.cacerts are trust anchors; the others are intermediates that only help
build a path (as strongSwan's x509 folder), unless no self-signed one is configured, then they
are the anchors. Chains with Ed25519/Ed448 keys or signatures (RFC 8420), which
`cryptography`'s WebPKI verifier forbids, are checked link by link in `chains.verify_direct`. A
chain of RSA-4096 certificates makes IKE_AUTH bigger than one datagram: RFC 7383 fragmentation
(sk.py) carries it where IP fragments are dropped. Pinned peer certificates (remote.certs) are
accepted by equality, with or without CAs. `cryptography`'s WebPKI end-entity policy insists on
serverAuth/clientAuth EKUs, which IKE certificates often lack or replace by ipsecIKE, and on a
subjectAltName, which DN-identified IKE peers may not have; both checks are relaxed to what IKE
implementations accept.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm as UnsupportedKeyType
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from xfrmctl.ike.crypto.chains import is_self_signed, missing_link, uses_eddsa, verify_direct
from xfrmctl.ike.crypto.errors import CertificateError, MalformedCertificate
from xfrmctl.ike.iana import IdType

IPSEC_IKE = ObjectIdentifier("1.3.6.1.5.5.7.3.17")  # RFC 4945 §5.1.3.12
_ACCEPTED_EKUS = frozenset(
    {
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
        IPSEC_IKE,
        ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
    }
)
MAX_CHAIN_DEPTH = 8


def _check_eku(policy: Policy, cert: x509.Certificate, eku: x509.ExtendedKeyUsage | None) -> None:
    """RFC 4945 §5.1.3.12: no EKU is fine; otherwise one usable for IKE must be present."""
    _check_ike_eku(eku)


def _check_ike_eku(eku: x509.ExtendedKeyUsage | None) -> None:
    if eku is not None and not _ACCEPTED_EKUS.intersection(eku):
        names = ", ".join(o.dotted_string for o in eku)
        raise ValueError(f"certificate EKU ({names}) allows neither IKE nor TLS authentication")


def _ee_policy() -> ExtensionPolicy:
    # IKE peers are often identified by their subject DN alone (RFC 4945 §3.1.5), so unlike
    # WebPKI a leaf without subjectAltName is fine.
    return (
        ExtensionPolicy.webpki_defaults_ee()
        .may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _check_eku)
        .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
    )


def _ca_policy() -> ExtensionPolicy:
    return ExtensionPolicy.webpki_defaults_ca().may_be_present(
        x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _check_eku
    )


def load_certificate_chain(pem: bytes) -> list[x509.Certificate]:
    """All certificates of a PEM bundle, in file order (our own leaf first, then intermediates);
    or the one certificate of a DER file."""
    try:
        if b"-----BEGIN" not in pem and pem[:1] == b"\x30":
            return [x509.load_der_x509_certificate(pem)]
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as e:
        raise CertificateError(f"cannot parse PEM certificates: {e}") from None
    if not certs:
        raise CertificateError("no certificate found in PEM data")
    return certs


# What `cryptography` raises for certificates it cannot make sense of, eagerly or when a field
# is first read: each is the peer's malformed certificate, never a bug of ours.
MALFORMED = (ValueError, x509.InvalidVersion, UnsupportedKeyType)


def load_der_certificate(der: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except MALFORMED as e:
        raise MalformedCertificate(f"cannot parse DER certificate: {e}") from None


class TrustStore:
    """What one connection accepts from its peers (swanctl remote.cacerts / remote.certs): CA
    certificates to chain to, and/or pinned peer certificates; with both, the peer's
    certificate must be one of the pinned ones and chain to a CA."""

    def __init__(
        self,
        cas: Sequence[x509.Certificate] = (),
        pinned: Sequence[x509.Certificate] = (),
        origins: Sequence[str] = (),
    ) -> None:
        if not cas and not pinned:
            raise CertificateError("no CA certificates or pinned peer certificates configured")
        self.cas = list(cas)  # all configured, named in our CERTREQ
        roots = [c for c in self.cas if is_self_signed(c)]
        self.anchors = roots or self.cas
        self.intermediates = [c for c in self.cas if c not in self.anchors]
        self.pinned = list(pinned)
        self.origins = tuple(origins)  # the files they came from, for error messages
        self._store = Store(self.anchors) if self.anchors else None

    def __repr__(self) -> str:
        names = "; ".join(c.subject.rfc4514_string() for c in [*self.cas, *self.pinned])
        return f"<TrustStore {names}>"

    @classmethod
    def from_pem_files(cls, paths: Sequence[Path], pinned: Sequence[Path] = ()) -> TrustStore:
        cas = _load_files(paths, "CA file")
        certs = _load_files(pinned, "certificate file")
        return cls(cas, certs, [str(p) for p in [*paths, *pinned]])

    def verify_chain(
        self, leaf_der: bytes, intermediates_der: Sequence[bytes], now: datetime | float
    ) -> x509.Certificate:
        """The peer's leaf once it is acceptable at `now`; else CertificateError saying why."""
        leaf = load_der_certificate(leaf_der)
        intermediates = [load_der_certificate(d) for d in intermediates_der]
        when = (now if isinstance(now, datetime) else datetime.fromtimestamp(now, UTC)).astimezone(
            UTC
        )
        if when > leaf.not_valid_after_utc:
            raise CertificateError(f"certificate {_name(leaf)} expired {leaf.not_valid_after_utc}")
        if when < leaf.not_valid_before_utc:
            raise CertificateError(
                f"certificate {_name(leaf)} is not valid before {leaf.not_valid_before_utc}"
            )
        if self.pinned and leaf not in self.pinned:
            raise CertificateError(
                f"certificate {_name(leaf)} is not one of the pinned peer certificates "
                f"({_names(self.pinned)}{self._from()})"
            )
        if self._store is None:
            return leaf
        pool = [*intermediates, *self.intermediates]
        issuers = {c.issuer for c in [leaf, *pool]}
        if uses_eddsa([leaf, *pool, *(a for a in self.anchors if a.subject in issuers)]):
            self._verify_eddsa(leaf, pool, when)
            return leaf
        verifier = (
            PolicyBuilder()
            .store(self._store)
            .time(when)
            .max_chain_depth(MAX_CHAIN_DEPTH)
            .extension_policies(ca_policy=_ca_policy(), ee_policy=_ee_policy())
            .build_client_verifier()
        )
        try:
            verifier.verify(leaf, pool)
        except VerificationError as e:
            raise CertificateError(self._untrusted(leaf, pool, e)) from None
        return leaf

    def _verify_eddsa(
        self, leaf: x509.Certificate, pool: list[x509.Certificate], when: datetime
    ) -> None:
        """What the WebPKI policies would check, for the chains they refuse (RFC 8420)."""
        try:
            _check_leaf_usage(leaf)
            verify_direct(leaf, pool, self.anchors, when, MAX_CHAIN_DEPTH)
        except (CertificateError, ValueError) as e:
            raise CertificateError(self._untrusted(leaf, pool, e)) from None

    def _from(self) -> str:
        return f" from {', '.join(self.origins)}" if self.origins else ""

    def _untrusted(
        self, leaf: x509.Certificate, intermediates: list[x509.Certificate], e: Exception
    ) -> str:
        """Why `leaf` does not chain, in the operator's terms (not the verifier's)."""
        trusted = f"trusted CAs: {_names(self.anchors)}{self._from()}"
        missing = missing_link(leaf, intermediates, self.anchors, MAX_CHAIN_DEPTH)
        if missing is not None:
            return f"certificate {_name(leaf)} is not trusted: {missing} ({trusted})"
        detail = str(e).removeprefix("validation failed: ").removeprefix("candidates exhausted: ")
        if "all candidates exhausted with no interior errors" in detail:
            detail = "no signature by a trusted CA checks out (a CA of the same name, another key?)"
        return f"certificate {_name(leaf)} is not trusted: {detail} ({trusted})"


def _check_leaf_usage(leaf: x509.Certificate) -> None:
    """EKU as the relaxed EE policy; keyUsage, when present, must allow signing (RFC 4945)."""
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = None
    _check_ike_eku(eku)
    try:
        ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not (ku.digital_signature or ku.content_commitment):
        raise ValueError(f"certificate {_name(leaf)} keyUsage allows no signature")


def _load_files(paths: Sequence[Path], what: str) -> list[x509.Certificate]:
    certs: list[x509.Certificate] = []
    for path in paths:
        try:
            certs += load_certificate_chain(Path(path).read_bytes())
        except OSError as e:
            raise CertificateError(f"cannot read {what} {path}: {e.strerror}") from None
        except CertificateError as e:
            raise CertificateError(f"{what} {path}: {e}") from None
    return certs


def _names(certs: Sequence[x509.Certificate]) -> str:
    return "; ".join(repr(c.subject.rfc4514_string()) for c in certs)


def _name(cert: x509.Certificate) -> str:
    return repr(cert.subject.rfc4514_string())


def _san(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    except ValueError:  # malformed extension
        return None


def id_matches_certificate(id_type: IdType | int, id_data: bytes, cert: x509.Certificate) -> bool:
    """Does the peer's IKE ID appear in its certificate (RFC 4945 §3.1)?

    FQDN and RFC822 compare case-insensitively with SAN dNSName/rfc822Name; IP addresses with
    SAN iPAddress; DER_ASN1_DN with the subject DN's DER encoding byte for byte.
    """
    san = _san(cert)
    try:
        if id_type == IdType.FQDN:
            name = id_data.decode("ascii").lower().rstrip(".")
            return san is not None and any(
                n.lower().rstrip(".") == name for n in san.get_values_for_type(x509.DNSName)
            )
        if id_type == IdType.RFC822_ADDR:
            addr = id_data.decode("ascii").lower()
            return san is not None and any(
                n.lower() == addr for n in san.get_values_for_type(x509.RFC822Name)
            )
        if id_type in (IdType.IPV4_ADDR, IdType.IPV6_ADDR):
            if len(id_data) != (4 if id_type == IdType.IPV4_ADDR else 16):
                return False
            ip = ipaddress.ip_address(id_data)
            return san is not None and ip in san.get_values_for_type(x509.IPAddress)
        if id_type == IdType.DER_ASN1_DN:
            return id_data == cert.subject.public_bytes()
    except (UnicodeDecodeError, ValueError):
        return False
    return False
