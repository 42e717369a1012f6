"""Certificate paths for IKE: which chain we send, and verifying the ones WebPKI cannot take.

Contract: pure functions over parsed `cryptography` certificates; nothing is fetched.

- `chain_for_request`: RFC 7296 §3.6/§3.7. CERT payloads carry our leaf first, then the
  intermediates; a CERTREQ names the CAs the peer trusts by the SHA-1 of their
  SubjectPublicKeyInfo. As strongSwan does, we send the path from our leaf to a requested CA
  (without that CA, which the peer holds), and everything configured when nothing matches.
- `verify_direct`: `cryptography`'s WebPKI verifier forbids Ed25519/Ed448 keys and signatures
  (RFC 8410), which RFC 8420 uses in IKEv2. For chains holding one, we build the path
  ourselves with `Certificate.verify_directly_issued_by` and check what RFC 5280 §6.1 asks of
  each link: signature, validity, basicConstraints cA and pathLenConstraint, keyUsage
  keyCertSign, no unknown critical extension, bounded depth.
- `missing_link`: which certificate of a broken chain has no issuer at hand, for the error.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed448, ed25519
from cryptography.x509.oid import SignatureAlgorithmOID

from xfrmctl.ike.crypto.errors import CertificateError

_EDDSA_SIGNATURES = {SignatureAlgorithmOID.ED25519, SignatureAlgorithmOID.ED448}
_EDDSA_KEYS = (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)


def key_hash(cert: x509.Certificate) -> bytes:
    """SHA-1 of the SubjectPublicKeyInfo: how a CERTREQ names a CA (RFC 7296 §3.7)."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    h = hashes.Hash(hashes.SHA1())
    h.update(spki)
    return h.finalize()


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def is_self_signed(cert: x509.Certificate) -> bool:
    return cert.subject == cert.issuer and signed_by(cert, cert)


def uses_eddsa(certs: Sequence[x509.Certificate]) -> bool:
    """Does any certificate carry or bear an EdDSA key or signature (WebPKI refuses those)?"""
    for c in certs:
        if c.signature_algorithm_oid in _EDDSA_SIGNATURES:
            return True
        try:
            if isinstance(c.public_key(), _EDDSA_KEYS):
                return True
        except ValueError:  # an unknown key type: let the verifier say so
            continue
    return False


def _paths(
    leaf: x509.Certificate,
    pool: Sequence[x509.Certificate],
    max_depth: int,
    link_ok: Callable[[list[x509.Certificate], x509.Certificate], bool],
) -> list[list[x509.Certificate]]:
    """Every path leaf → ... through `pool`, breadth first (shortest first), bounded."""
    out: list[list[x509.Certificate]] = []
    frontier = [[leaf]]
    while frontier:
        path = frontier.pop(0)
        out.append(path)
        if len(path) >= max_depth:
            continue
        for cand in pool:
            if cand.subject == path[-1].issuer and cand not in path and link_ok(path, cand):
                frontier.append([*path, cand])
    return out


def chain_for_request(
    certs: Sequence[x509.Certificate],
    requested: Collection[bytes],
    known_cas: Sequence[x509.Certificate] = (),
    max_depth: int = 8,
) -> list[x509.Certificate]:
    """Our leaf and the intermediates up to a CA the peer requested; all of `certs` if none."""
    if not requested or not certs:
        return list(certs)
    leaf, pool = certs[0], list(certs[1:])
    candidates = [*pool, *(c for c in known_cas if c not in pool)]
    for path in _paths(leaf, pool, max_depth, lambda p, c: signed_by(p[-1], c)):
        top = path[-1]
        for ca in candidates:
            if ca not in path and key_hash(ca) in requested and signed_by(top, ca):
                return path
    return list(certs)


def _name(cert: x509.Certificate) -> str:
    return repr(cert.subject.rfc4514_string())


def _unknown_critical(cert: x509.Certificate) -> str | None:
    for ext in cert.extensions:
        if ext.critical and isinstance(ext.value, x509.UnrecognizedExtension):
            return f"{_name(cert)} has an unknown critical extension {ext.oid.dotted_string}"
    return None


def _issuer_problem(
    path: list[x509.Certificate], ca: x509.Certificate, when: datetime
) -> str | None:
    """Why `ca` cannot issue the top of `path` (RFC 5280 §6.1.3/§6.1.4), or None."""
    below = path[-1]
    if not signed_by(below, ca):
        return f"the signature of {_name(below)} by {_name(ca)} does not verify"
    if not ca.not_valid_before_utc <= when <= ca.not_valid_after_utc:
        return f"CA {_name(ca)} is not valid at {when} (until {ca.not_valid_after_utc})"
    try:
        bc = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return f"{_name(ca)} has no basicConstraints: not a CA"
    if not bc.ca:
        return f"{_name(ca)} is not a CA (basicConstraints cA is false)"
    if bc.path_length is not None and len(path) - 1 > bc.path_length:
        return f"CA {_name(ca)} allows {bc.path_length} intermediates below it, not {len(path) - 1}"
    try:
        ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
        if not ku.key_cert_sign:
            return f"CA {_name(ca)} keyUsage lacks keyCertSign"
    except x509.ExtensionNotFound:
        pass
    return _unknown_critical(ca)


def verify_direct(
    leaf: x509.Certificate,
    pool: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    when: datetime,
    max_depth: int,
) -> list[x509.Certificate]:
    """The path leaf → anchor (both included) checked link by link; else CertificateError."""
    problems: list[str] = []
    why_leaf = _unknown_critical(leaf)
    if why_leaf:
        raise CertificateError(why_leaf)

    def link_ok(path: list[x509.Certificate], ca: x509.Certificate) -> bool:
        why = _issuer_problem(path, ca, when)
        if why:
            problems.append(why)
        return why is None

    everything = [*anchors, *(c for c in pool if c not in anchors)]
    for path in _paths(leaf, everything, max_depth + 1, link_ok):
        if len(path) > 1 and path[-1] in anchors:
            return path
    missing = missing_link(leaf, pool, anchors)
    raise CertificateError(missing or (problems[0] if problems else "no valid path to a CA"))


def missing_link(
    leaf: x509.Certificate,
    pool: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    max_depth: int = 8,
) -> str | None:
    """ "no issuer for CN=...": the first certificate up from the leaf whose issuer (by name)
    is neither a trusted CA nor an intermediate at hand; None when names lead to a CA."""
    current = leaf
    seen = [leaf]
    for _ in range(max_depth):
        if any(a.subject == current.issuer for a in anchors):
            return None
        up = next((c for c in pool if c.subject == current.issuer and c not in seen), None)
        if up is None:
            return (
                f"no issuer for {current.subject.rfc4514_string()}: its issuer "
                f"{current.issuer.rfc4514_string()!r} is neither a trusted CA nor an intermediate "
                "sent by the peer or configured"
            )
        seen.append(up)
        current = up
    return f"chain from {_name(leaf)} longer than {max_depth} certificates"
