"""AUTH payloads (RFC 7296 §2.15, RFC 7427): ours by PSK or signature, and checking the peer's.

Each direction has its own method: `local.auth` is how we prove ourselves, the peer's method
is what it must prove. Certificates come only from the peer's CERT payloads and our trust
store: nothing is fetched for an unauthenticated peer (no hash-and-URL). Revocation (RFC 4945
§5.1.3) is checked last, once the chain and the signature hold, so only a CA-certified peer
that proved its key makes us fetch a CRL or OCSP answer (`crypto.revocation`). CERTREQ names our
CAs by the SHA-1 of their public keys (§3.7); the peer's CERTREQs pick which of our
configured chains' certificates we send in CERT payloads (§3.6, leaf first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from xfrmctl.ike import revocation_wait
from xfrmctl.ike.crypto import revocation_data as rv
from xfrmctl.ike.crypto.auth import psk_auth_data, psk_verify, verify_signature
from xfrmctl.ike.crypto.errors import CryptoError, MalformedCertificate
from xfrmctl.ike.errors import RemoteProtocolError
from xfrmctl.ike.iana import AuthMethod, CertEncoding, HashAlgorithm, IdType, name_of
from xfrmctl.ike.payloads import AuthPayload, CertPayload, CertReqPayload, IdPayload, Payload
from xfrmctl.ike.sa import IkeSa
from xfrmctl.ike.spec import Auth, CertAuth, Identity, PeerAuth, PeerCertAuth, PskAuth

if TYPE_CHECKING:
    from cryptography import x509

SIGNATURE_METHODS = {
    AuthMethod.RSA_SIG,
    AuthMethod.ECDSA_SHA256_P256,
    AuthMethod.ECDSA_SHA384_P384,
    AuthMethod.ECDSA_SHA512_P521,
    AuthMethod.DIGITAL_SIGNATURE,
}


def certreq_payload(auth: CertAuth | PeerCertAuth) -> CertReqPayload:
    """CERTREQ listing SHA-1 hashes of our CAs' public keys (RFC 7296 §3.7)."""
    # lazy for start-up cost: x509 loads only where certificates are used
    from xfrmctl.ike.crypto.chains import key_hash

    cas: list[x509.Certificate] = list(auth.trust_store.cas) if auth.trust_store else []
    return CertReqPayload(CertEncoding.X509_SIG, b"".join(key_hash(ca) for ca in cas))


def note_certreqs(sa: IkeSa, payloads: list[Payload]) -> None:
    """Remember the CA key hashes the peer's CERTREQs list (RFC 7296 §3.7)."""
    for p in payloads:
        if isinstance(p, CertReqPayload) and p.encoding == CertEncoding.X509_SIG:
            n = len(p.data) // 20
            sa.peer_certreq |= {p.data[20 * i : 20 * (i + 1)] for i in range(n)}


def chain_to_send(sa: IkeSa, auth: CertAuth) -> list[bytes]:
    """Our leaf and the intermediates leading to a CA the peer requested, as strongSwan
    does; the whole configured chain without CERTREQ or when none matches."""
    if len(auth.cert_chain) < 2 or not sa.peer_certreq:
        return list(auth.cert_chain)
    # lazy for start-up cost: x509 loads only where certificates are used
    from cryptography.hazmat.primitives import serialization

    from xfrmctl.ike.crypto.certs import load_der_certificate
    from xfrmctl.ike.crypto.chains import chain_for_request

    ours = [load_der_certificate(d) for d in auth.cert_chain]
    # The CAs a request can name that we know: ours (remote.cacerts), often the peer's too.
    peer = sa.spec.peer_auth if sa.spec is not None else None
    stores = [a.trust_store for a in (auth, peer) if isinstance(a, CertAuth | PeerCertAuth)]
    known = [ca for store in stores if store is not None for ca in store.cas]
    chosen = chain_for_request(ours, sa.peer_certreq, known)
    return [c.public_bytes(serialization.Encoding.DER) for c in chosen]


def id_payload(identity: Identity, responder: bool) -> IdPayload:
    return IdPayload(identity.type, identity.data, responder)


def id_text(p: IdPayload) -> str:
    try:
        return str(Identity(IdType(p.id_type), p.data))
    except ValueError:
        return f"{p.id_type}:{p.data.hex()}"


def make_auth(sa: IkeSa, auth: Auth, octets: bytes) -> list[Payload]:
    if sa.crypto is None:
        raise RemoteProtocolError("no keys", None)
    if isinstance(auth, PskAuth):
        return [AuthPayload(AuthMethod.PSK, psk_auth_data(sa.crypto.prf, auth.psk, octets))]
    algos = (
        [HashAlgorithm(h) for h in sa.peer_hash_algorithms if h in HashAlgorithm._value2member_map_]
        if sa.peer_hash_algorithms is not None
        else None
    )
    method, data = auth.signer.sign(octets, algos)
    certs: list[Payload] = [
        CertPayload(CertEncoding.X509_SIG, der) for der in chain_to_send(sa, auth)
    ]
    return [*certs, AuthPayload(method, data)]


@dataclass(frozen=True)
class AuthProblem:
    """Why the peer's AUTH failed: `reason` for logs, `kind` for AuthenticationFailed.kind."""

    reason: str
    kind: str = "certificate"
    issuer: str = ""  # an untrusted certificate's issuer (RFC 4514)
    ca_files: tuple[str, ...] = ()  # the files our trusted CAs came from


def _untrusted(exc: CryptoError, leaf_der: bytes, auth: PeerAuth) -> AuthProblem:
    """A certificate error; "ca" when its chain ends at no CA we trust."""
    if "not trusted" not in str(exc):
        return AuthProblem(str(exc))
    # lazy for start-up cost: x509 loads only where certificates are used
    from xfrmctl.ike.crypto.certs import MALFORMED, load_der_certificate

    try:
        issuer = load_der_certificate(leaf_der).issuer.rfc4514_string()
    except (CryptoError, *MALFORMED):
        issuer = ""
    store = None if isinstance(auth, PskAuth) else auth.trust_store
    files = store.origins if store is not None else ()
    return AuthProblem(str(exc), "ca", issuer, files)


def verify_auth(
    sa: IkeSa, auth: PeerAuth, payloads: list[Payload], id_p: IdPayload, octets: bytes
) -> AuthProblem | rv.NeedFetch | None:
    """None when the peer's AUTH checks out, else why not (for AuthenticationFailed), or the
    revocation fetches to make before it can be decided."""
    why = _verify(sa, auth, payloads, id_p, octets)
    return AuthProblem(why, "certificate") if isinstance(why, str) else why


def revocation_config(auth: PeerAuth) -> rv.RevocationConfig:
    config = None if isinstance(auth, PskAuth) else auth.revocation
    return config or rv.RevocationConfig()


def _revocation(
    sa: IkeSa, auth: CertAuth | PeerCertAuth, cert: x509.Certificate, chain: list[bytes]
) -> AuthProblem | rv.NeedFetch | None:
    """The revocation status of every certificate of the chain that has its issuer in it."""
    if auth.trust_store is None:
        return None
    # lazy for start-up cost: x509 loads only where certificates are used
    from xfrmctl.ike.crypto.certs import load_der_certificate
    from xfrmctl.ike.crypto.revocation import chain_links, check_chain

    try:
        intermediates = [load_der_certificate(d) for d in chain]
    except MalformedCertificate:
        intermediates = []
    store = auth.trust_store  # configured intermediates are links too, up to an anchor
    links = chain_links(cert, [*intermediates, *store.intermediates], store.anchors)
    config = revocation_config(auth)
    verdict = check_chain(
        links,
        config,
        sa.ep.revocations.cache,
        sa.ep.wall_clock(),
        revocation_wait.failures(sa),
    )
    if isinstance(verdict, rv.Refusal):
        return AuthProblem(verdict.reason, verdict.kind)
    return verdict


def _verify(
    sa: IkeSa, auth: PeerAuth, payloads: list[Payload], id_p: IdPayload, octets: bytes
) -> AuthProblem | rv.NeedFetch | str | None:
    if sa.crypto is None:
        return "no keys"
    auth_p = next((p for p in payloads if isinstance(p, AuthPayload)), None)
    if auth_p is None:
        return "no AUTH payload"
    if isinstance(auth, PskAuth):
        if auth_p.method != AuthMethod.PSK:
            used = name_of(AuthMethod, auth_p.method)
            return AuthProblem(f"peer used {used}, we expect PSK", "auth_method")
        if not psk_verify(sa.crypto.prf, auth.psk, octets, auth_p.data):
            return AuthProblem("pre-shared key mismatch", "psk")
        return None
    if auth_p.method not in SIGNATURE_METHODS:
        used = name_of(AuthMethod, auth_p.method)
        return AuthProblem(f"peer used {used}, we expect a signature", "auth_method")
    certs = [
        p.data
        for p in payloads
        if isinstance(p, CertPayload) and p.encoding == CertEncoding.X509_SIG
    ]
    if not certs:
        return "peer sent no X.509 certificate"
    # lazy for start-up cost: x509 loads only where certificates are used
    from xfrmctl.ike.crypto.certs import MALFORMED, id_matches_certificate

    if auth.trust_store is None:
        return (
            "no CA or pinned certificate is configured for the peer (remote.cacerts, remote.certs)"
        )
    try:
        cert = auth.trust_store.verify_chain(certs[0], certs[1:], sa.ep.wall_clock())
    except MalformedCertificate as exc:
        return f"bad certificate: {exc}"
    except CryptoError as exc:  # says which certificate, which CAs and why
        return _untrusted(exc, certs[0], auth)
    except MALFORMED as exc:
        return f"bad certificate: {exc}"
    try:
        if not id_matches_certificate(IdType(id_p.id_type), id_p.data, cert):
            return f"identity {id_text(id_p)} does not match the certificate"
        ok = verify_signature(cert.public_key(), AuthMethod(auth_p.method), auth_p.data, octets)
    except (CryptoError, *MALFORMED) as exc:
        return f"signature check failed: {exc}"
    if not ok:
        return "signature does not verify"
    return _revocation(sa, auth, cert, certs[1:])
