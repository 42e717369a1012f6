"""Revocation data the engine holds whatever its authentication: settings, fetch requests and
results, statuses and their cache (see `revocation`, which re-exports all of it).

Contract: importing this costs no X.509 stack (cryptography.x509 and OCSP cost a daemon a
few tens of ms at start, far more under the lab's emulation, and a PSK-only daemon never needs
them); the functions that read certificates or CRLs load it when first called. Equality,
hash and repr come from `values.Value` (the same as generated, compiled once).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import TYPE_CHECKING, Any

from xfrmctl.ike.values import Value

if TYPE_CHECKING:
    from cryptography import x509

SKEW = timedelta(minutes=5)  # tolerated clock difference on thisUpdate
NO_NEXT_UPDATE = timedelta(minutes=5)  # how long a status without nextUpdate is used
MAX_CHAIN = 8
SCHEMES = ("http://", "https://")


class Policy(Enum):
    STRICT = "strict"
    IFURI = "ifuri"
    RELAXED = "relaxed"


@dataclass(frozen=True, eq=False, repr=False)
class LoadedCrl(Value):
    source: str  # the file it came from, for messages
    crl: x509.CertificateRevocationList


@dataclass(frozen=True, eq=False, repr=False)
class RevocationConfig(Value):
    """One remote auth round's revocation settings (swanctl `remote.revocation`...)."""

    policy: Policy = Policy.RELAXED
    crls: tuple[LoadedCrl, ...] = ()
    ocsp_uris: tuple[str, ...] = ()  # tried before the certificate's AIA OCSP URLs
    timeout: float = 5.0  # seconds the host gives one fetch


@dataclass(frozen=True, eq=False, repr=False)
class Link(Value):
    """A certificate of the chain and the certificate that issued it."""

    cert: x509.Certificate
    issuer: x509.Certificate


@dataclass(frozen=True, eq=False, repr=False)
class Status(Value):
    revoked: bool
    source: str  # "OCSP http://...", "CRL http://...", "CRL file /etc/..."
    until: datetime  # usable until (nextUpdate)
    revoked_at: datetime | None = None
    reason: str = ""


@dataclass(frozen=True, eq=False, repr=False)
class FetchRequest(Value):
    kind: str  # "ocsp" or "crl"
    uri: str
    body: bytes = field(default=b"", repr=False)  # the DER OCSP request to POST


@dataclass(frozen=True, eq=False, repr=False)
class FetchResult(Value):
    kind: str
    uri: str
    data: bytes | None = field(default=None, repr=False)
    error: str = ""  # why there is no data


@dataclass(frozen=True, eq=False, repr=False)
class NeedFetch(Value):
    """No status yet, but these requests may give one; each maps to the links it is for."""

    requests: dict[FetchRequest, tuple[Link, ...]]


@dataclass(frozen=True, eq=False, repr=False)
class Refusal(Value):
    reason: str
    kind: str  # "revoked" (known revoked) or "revocation" (no status under strict/ifuri)


class RevocationCache:
    """Statuses learnt from fetches, until their nextUpdate; bounded, soonest-expiring evicted."""

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self.ocsp: dict[tuple[bytes, int], Status] = {}
        self.crls: dict[bytes, tuple[x509.CertificateRevocationList, str, datetime]] = {}

    def ocsp_status(self, link: Link, now: datetime) -> Status | None:
        key = (key_hash(link.issuer), link.cert.serial_number)
        st = self.ocsp.get(key)
        if st is not None and now > st.until:
            del self.ocsp[key]
            return None
        return st

    def crl_status(self, link: Link, now: datetime) -> Status | None:
        entry = self.crls.get(key_hash(link.issuer))
        if entry is None:
            return None
        crl, source, until = entry
        if now > until:
            del self.crls[key_hash(link.issuer)]
            return None
        return crl_entry_status(crl, link.cert, source, until)

    def put_ocsp(self, link: Link, status: Status) -> None:
        self.ocsp[(key_hash(link.issuer), link.cert.serial_number)] = status
        _trim(self.ocsp, self.max_entries, lambda s: s.until)

    def put_crl(
        self, issuer: x509.Certificate, crl: x509.CertificateRevocationList, src: str
    ) -> None:
        until = crl.next_update_utc or crl.last_update_utc + NO_NEXT_UPDATE
        self.crls[key_hash(issuer)] = (crl, src, until)
        _trim(self.crls, self.max_entries, lambda e: e[2])


def _trim(table: dict[Any, Any], limit: int, until: Callable[[Any], datetime]) -> None:
    while len(table) > limit:
        del table[min(table, key=lambda k: until(table[k]))]


def key_hash(cert: x509.Certificate) -> bytes:
    """SHA-1 of the subjectPublicKey bits (RFC 6960 §4.1.1 issuerKeyHash, byKey ResponderID)."""
    from cryptography import x509  # start-up cost: x509 loads only where certificates are used

    return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def crl_entry_status(
    crl: x509.CertificateRevocationList, cert: x509.Certificate, source: str, until: datetime
) -> Status:
    """What `crl` says of `cert`, usable until `until`."""
    from cryptography import x509  # start-up cost: x509 loads only where certificates are used

    entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    if entry is None:
        return Status(False, source, until)
    try:
        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.name
    except (x509.ExtensionNotFound, ValueError):
        reason = "unspecified"
    return Status(True, source, until, entry.revocation_date_utc, reason)
