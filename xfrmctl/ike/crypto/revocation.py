"""Certificate revocation: CRLs (RFC 5280 §5, §6.3) and OCSP (RFC 6960), as RFC 4945 §5.1.3 asks.

Contract: pure. `check_chain` answers for every certificate of a verified chain that has its
issuer in it (leaf and intermediates): good, revoked (with serial, source, date and reason) or
"fetch these URIs first" (`NeedFetch`); it never does IO. The host fetches (CRL by HTTP GET of
the CRL distribution point, OCSP by HTTP POST of the request to the configured responder or the
AIA URL) and hands the bytes to `absorb`, which verifies them (signature by the issuer or by a
delegated OCSP signer, thisUpdate/nextUpdate window, serial) into a `RevocationCache` keyed by
issuer key and serial (OCSP) or issuer key (CRL), kept until nextUpdate. Policies are
strongSwan's: relaxed refuses only a known revoked certificate, ifuri also refuses when a URI
existed but gave no status, strict refuses unless a good status was obtained. OCSP requests
carry no nonce (RFC 5019 style, so answers can be cached); a nonce in a response is ignored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from xfrmctl.ike.crypto.errors import CertificateError
from xfrmctl.ike.crypto.revocation_data import (
    MAX_CHAIN,
    NO_NEXT_UPDATE,
    SCHEMES,
    SKEW,
    FetchRequest,
    FetchResult,
    Link,
    LoadedCrl,
    NeedFetch,
    Policy,
    Refusal,
    RevocationCache,
    RevocationConfig,
    Status,
    crl_entry_status,
    key_hash,
)

__all__ = [
    "SCHEMES",
    "FetchRequest",
    "FetchResult",
    "Link",
    "LoadedCrl",
    "NeedFetch",
    "Policy",
    "Refusal",
    "RevocationCache",
    "RevocationConfig",
    "Status",
    "absorb",
    "chain_links",
    "check_chain",
    "crl_file_problem",
    "key_hash",
    "load_crl",
    "load_crl_file",
]


def load_crl(data: bytes, source: str) -> x509.CertificateRevocationList:
    """A PEM or DER CRL; CertificateError naming `source` otherwise."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError:
        raise CertificateError(f"{source}: not a PEM or DER CRL") from None


def load_crl_file(path: Path) -> LoadedCrl:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CertificateError(f"cannot read CRL file {path}: {e.strerror}") from None
    return LoadedCrl(str(path), load_crl(data, f"CRL file {path}"))


def crl_file_problem(path: Path) -> str:
    """Why `path` is no usable CRL file, for the configuration check; "" when it is."""
    try:
        load_crl_file(path)
    except CertificateError as e:
        return str(e)
    return ""


def chain_links(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    cas: Sequence[x509.Certificate],
) -> list[Link]:
    """The verified chain as (certificate, issuer) pairs, leaf first, up to a trusted CA."""
    pool = [*intermediates, *cas]
    links: list[Link] = []
    cert = leaf
    while len(links) < MAX_CHAIN:
        issuer = next((c for c in pool if c is not cert and _issued(cert, c)), None)
        if issuer is None:
            break
        links.append(Link(cert, issuer))
        if issuer in cas or issuer.subject == issuer.issuer:
            break
        cert = issuer
    return links


def _issued(cert: x509.Certificate, by: x509.Certificate) -> bool:
    if cert.issuer != by.subject:
        return False
    try:
        cert.verify_directly_issued_by(by)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def ocsp_uris(link: Link, config: RevocationConfig) -> list[str]:
    try:
        aia = link.cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except (x509.ExtensionNotFound, ValueError):
        aia = []  # type: ignore[assignment]
    found = [
        d.access_location.value
        for d in aia
        if d.access_method == AuthorityInformationAccessOID.OCSP
        and isinstance(d.access_location, x509.UniformResourceIdentifier)
    ]
    return list(dict.fromkeys(u for u in [*config.ocsp_uris, *found] if u.startswith(SCHEMES)))


def crl_uris(link: Link) -> list[str]:
    try:
        cdp = link.cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except (x509.ExtensionNotFound, ValueError):
        return []
    uris = [
        n.value
        for point in cdp
        for n in point.full_name or ()
        if isinstance(n, x509.UniformResourceIdentifier)
    ]
    return list(dict.fromkeys(u for u in uris if u.startswith(SCHEMES)))


def ocsp_request(link: Link) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(link.cert, link.issuer, hashes.SHA1())
    return builder.build().public_bytes(serialization.Encoding.DER)


def describe(cert: x509.Certificate) -> str:
    return f"{cert.subject.rfc4514_string()!r} (serial {cert.serial_number:#x})"


def _crl_problem(
    crl: x509.CertificateRevocationList, issuer: x509.Certificate, now: datetime
) -> str:
    """Why this CRL cannot speak for `issuer`'s certificates at `now`; "" when it can."""
    if crl.issuer != issuer.subject:
        return f"issued by {crl.issuer.rfc4514_string()!r}, not by the certificate's issuer"
    try:
        valid = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError, UnsupportedAlgorithm):
        valid = False
    if not valid:
        return "its signature does not verify with the issuer's key"
    if crl.last_update_utc > now + SKEW:
        return f"thisUpdate {crl.last_update_utc} is in the future"
    if crl.next_update_utc is not None and now > crl.next_update_utc:
        return f"expired at nextUpdate {crl.next_update_utc}"
    return ""


def cert_status(
    link: Link, config: RevocationConfig, cache: RevocationCache, now: datetime
) -> Status | None:
    """What is known about one certificate: a revoked status wins over a good one, and the
    configured CRL files speak first."""
    found: list[Status | None] = []
    for loaded in config.crls:
        if not _crl_problem(loaded.crl, link.issuer, now):
            until = loaded.crl.next_update_utc or now + NO_NEXT_UPDATE
            found.append(
                crl_entry_status(loaded.crl, link.cert, f"CRL file {loaded.source}", until)
            )
    found += [cache.ocsp_status(link, now), cache.crl_status(link, now)]
    known = [s for s in found if s is not None]
    return next((s for s in known if s.revoked), known[0] if known else None)


def revoked_text(link: Link, st: Status) -> str:
    when = st.revoked_at.isoformat() if st.revoked_at else "an unknown date"
    return (
        f"certificate {describe(link.cert)} is revoked: {st.source} says revoked on {when}, "
        f"reason {st.reason}"
    )


def check_chain(
    links: Sequence[Link],
    config: RevocationConfig,
    cache: RevocationCache,
    now: datetime,
    failures: Mapping[tuple[str, str], str],
) -> Refusal | NeedFetch | None:
    """None when the chain may be used; `failures` are the fetches already tried, by (kind, uri)."""
    requests: dict[FetchRequest, tuple[Link, ...]] = {}
    unresolved: list[tuple[Link, list[str]]] = []
    for link in links:
        st = cert_status(link, config, cache, now)
        if st is not None and st.revoked:
            return Refusal(revoked_text(link, st), "revoked")
        if st is not None:
            continue
        o_uris, c_uris = ocsp_uris(link, config), crl_uris(link)
        todo = [FetchRequest("ocsp", u, ocsp_request(link)) for u in o_uris]
        todo += [FetchRequest("crl", u) for u in c_uris]
        todo = [r for r in todo if (r.kind, r.uri) not in failures]
        for r in todo:
            requests[r] = (*requests.get(r, ()), link)
        if not todo:
            unresolved.append((link, [f"OCSP {u}" for u in o_uris] + [f"CRL {u}" for u in c_uris]))
    if requests:
        return NeedFetch(requests)
    for link, tried in unresolved:
        if config.policy == Policy.STRICT or (config.policy == Policy.IFURI and tried):
            why = (
                "; ".join(f"{k.upper()} {u}: {e}" for (k, u), e in failures.items())
                or "no CRL or OCSP URI and no configured CRL covers it"
            )
            return Refusal(
                f"no revocation status for certificate {describe(link.cert)} "
                f"(revocation: {config.policy.value}): {why}",
                "revocation",
            )
    return None


def absorb(
    result: FetchResult, links: Sequence[Link], cache: RevocationCache, now: datetime
) -> str:
    """Put a fetch's answer into `cache`; "" when it gave a status, else why not."""
    if result.data is None:
        return result.error or "no answer"
    try:
        if result.kind == "crl":
            return _absorb_crl(result, links, cache, now)
        return _absorb_ocsp(result, links, cache, now)
    except CertificateError as e:
        return str(e)


def _absorb_crl(
    result: FetchResult, links: Sequence[Link], cache: RevocationCache, now: datetime
) -> str:
    assert result.data is not None
    crl = load_crl(result.data, "answer")
    problems = [_crl_problem(crl, link.issuer, now) for link in links]
    for link, problem in zip(links, problems, strict=True):
        if not problem:
            cache.put_crl(link.issuer, crl, f"CRL {result.uri}")
    return next((f"CRL {p}" for p in problems if p), "")


def _absorb_ocsp(
    result: FetchResult, links: Sequence[Link], cache: RevocationCache, now: datetime
) -> str:
    assert result.data is not None
    try:
        resp = ocsp.load_der_ocsp_response(result.data)
    except ValueError as e:
        raise CertificateError(f"not an OCSP response ({e})") from None
    if resp.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        return f"OCSP responder answered {resp.response_status.name}"
    why = ""
    for link in links:
        problem = _ocsp_signed(resp, link.issuer, now)
        single = _single(resp, link) if not problem else None
        if single is None:
            why = why or problem or "the response has no status for the certificate"
            continue
        this, nxt = single.this_update_utc, single.next_update_utc
        if this > now + SKEW or (nxt is not None and now > nxt):
            why = why or f"the response is outside its validity ({this} to {nxt})"
            continue
        until = nxt or now + NO_NEXT_UPDATE
        if single.certificate_status == ocsp.OCSPCertStatus.UNKNOWN:
            why = why or "the responder does not know the certificate"
            continue
        revoked = single.certificate_status == ocsp.OCSPCertStatus.REVOKED
        reason = single.revocation_reason.name if single.revocation_reason else "unspecified"
        source = f"OCSP {result.uri}"
        at = single.revocation_time_utc if revoked else None
        cache.put_ocsp(link, Status(revoked, source, until, at, reason if revoked else ""))
    return why


def _single(resp: ocsp.OCSPResponse, link: Link) -> ocsp.OCSPSingleResponse | None:
    want = key_hash(link.issuer)
    for single in resp.responses:
        if single.serial_number != link.cert.serial_number:
            continue
        h = hashlib.new(single.hash_algorithm.name, _spk_bits(link.issuer)).digest()
        if single.issuer_key_hash == h or single.issuer_key_hash == want:
            return single
    return None


def _spk_bits(cert: x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING contents, which issuerKeyHash hashes."""
    return _bitstring_contents(
        cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _bitstring_contents(spki: bytes) -> bytes:
    def header(data: bytes, at: int) -> tuple[int, int]:  # (content start, content length)
        n = data[at + 1]
        if n < 0x80:
            return at + 2, n
        k = n & 0x7F
        return at + 2 + k, int.from_bytes(data[at + 2 : at + 2 + k], "big")

    start, _ = header(spki, 0)  # SEQUENCE
    alg_start, alg_len = header(spki, start)  # AlgorithmIdentifier
    bits_start, bits_len = header(spki, alg_start + alg_len)
    return spki[bits_start + 1 : bits_start + bits_len]  # skip the unused-bits octet


def _responder_is(resp: ocsp.OCSPResponse, cert: x509.Certificate) -> bool:
    if resp.responder_name is not None:
        return resp.responder_name == cert.subject
    return resp.responder_key_hash == key_hash(cert)


def _ocsp_signed(resp: ocsp.OCSPResponse, issuer: x509.Certificate, now: datetime) -> str:
    """Empty when the issuer, or an OCSP signer it delegated to, signed `resp` (RFC 6960
    §4.2.2.2); else why not."""
    signers = [issuer] if _responder_is(resp, issuer) else []
    for c in resp.certificates:
        if _responder_is(resp, c) and _delegated(c, issuer, now):
            signers.append(c)
    if not signers:
        return "the OCSP response is signed by neither the issuer nor a delegated OCSP signer"
    for signer in signers:
        if _signature_ok(
            signer, resp.signature, resp.tbs_response_bytes, resp.signature_hash_algorithm
        ):
            return ""
    return "the OCSP response signature does not verify"


def _delegated(cert: x509.Certificate, issuer: x509.Certificate, now: datetime) -> bool:
    if (
        not _issued(cert, issuer)
        or not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc
    ):
        return False
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except (x509.ExtensionNotFound, ValueError):
        return False
    return ExtendedKeyUsageOID.OCSP_SIGNING in eku


def _signature_ok(
    signer: x509.Certificate, signature: bytes, data: bytes, algo: hashes.HashAlgorithm | None
) -> bool:
    key = signer.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey) and algo is not None:
            key.verify(signature, data, padding.PKCS1v15(), algo)
        elif isinstance(key, ec.EllipticCurvePublicKey) and algo is not None:
            key.verify(signature, data, ec.ECDSA(algo))
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, data)
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm, ValueError):
        return False
    return True
