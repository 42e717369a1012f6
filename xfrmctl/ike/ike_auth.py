"""IKE_AUTH (RFC 7296 §1.2, §2.15): identities, AUTH by PSK or signature, and the first Child SA.

Certificates come only from the peer's CERT payloads and our trust store: nothing is fetched
for an unauthenticated peer (no hash-and-URL).
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from xfrmctl.ike import childsa, initial_contact, reauth
from xfrmctl.ike.crypto.auth import (
    psk_auth_data,
    psk_verify,
    signed_octets,
    verify_signature,
)
from xfrmctl.ike.crypto.certs import MALFORMED, id_matches_certificate
from xfrmctl.ike.crypto.errors import CryptoError, MalformedCertificate
from xfrmctl.ike.errors import RemoteProtocolError
from xfrmctl.ike.events import AuthenticationFailed, IkeSaEstablished, NegotiationFailed, Offer
from xfrmctl.ike.exchanges import IkeState
from xfrmctl.ike.iana import (
    AuthMethod,
    CertEncoding,
    ExchangeType,
    HashAlgorithm,
    IdType,
    NotifyType,
    name_of,
)
from xfrmctl.ike.ike_init import error_notify, ike_offer
from xfrmctl.ike.message import Message
from xfrmctl.ike.payloads import (
    AuthPayload,
    CertPayload,
    CertReqPayload,
    IdPayload,
    NotifyPayload,
    Payload,
    SaPayload,
    TrafficSelector,
)
from xfrmctl.ike.proposals import format_proposal
from xfrmctl.ike.sa import ChildSa, IkeSa
from xfrmctl.ike.spec import (
    Auth,
    CertAuth,
    ChildSpec,
    ConnectionSpec,
    Identity,
    PeerAuth,
    PeerCertAuth,
    PskAuth,
)

SIGNATURE_METHODS = {
    AuthMethod.RSA_SIG,
    AuthMethod.ECDSA_SHA256_P256,
    AuthMethod.ECDSA_SHA384_P384,
    AuthMethod.ECDSA_SHA512_P521,
    AuthMethod.DIGITAL_SIGNATURE,
}


def certreq_payload(auth: CertAuth | PeerCertAuth) -> CertReqPayload:
    """CERTREQ listing SHA-1 hashes of our CAs' public keys (RFC 7296 §3.7)."""
    data = b""
    cas: list[x509.Certificate] = list(auth.trust_store.cas) if auth.trust_store else []
    for ca in cas:
        h = hashes.Hash(hashes.SHA1())
        h.update(
            ca.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        data += h.finalize()
    return CertReqPayload(CertEncoding.X509_SIG, data)


def _id_payload(identity: Identity, responder: bool) -> IdPayload:
    return IdPayload(identity.type, identity.data, responder)


def _id_text(p: IdPayload) -> str:
    try:
        return str(Identity(IdType(p.id_type), p.data))
    except ValueError:
        return f"{p.id_type}:{p.data.hex()}"


def _make_auth(sa: IkeSa, auth: Auth, octets: bytes) -> list[Payload]:
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
    certs: list[Payload] = [CertPayload(CertEncoding.X509_SIG, der) for der in auth.cert_chain]
    return [*certs, AuthPayload(method, data)]


def _verify(
    sa: IkeSa, auth: PeerAuth, payloads: list[Payload], id_p: IdPayload, octets: bytes
) -> str | None:
    """None when the peer's AUTH checks out, else why not (for AuthenticationFailed)."""
    if sa.crypto is None:
        return "no keys"
    auth_p = next((p for p in payloads if isinstance(p, AuthPayload)), None)
    if auth_p is None:
        return "no AUTH payload"
    if isinstance(auth, PskAuth):
        if auth_p.method != AuthMethod.PSK:
            return f"peer used {name_of(AuthMethod, auth_p.method)}, we expect PSK"
        if not psk_verify(sa.crypto.prf, auth.psk, octets, auth_p.data):
            return "pre-shared key mismatch"
        return None
    if auth_p.method not in SIGNATURE_METHODS:
        return f"peer used {name_of(AuthMethod, auth_p.method)}, we expect a signature"
    certs = [
        p.data
        for p in payloads
        if isinstance(p, CertPayload) and p.encoding == CertEncoding.X509_SIG
    ]
    if not certs:
        return "peer sent no X.509 certificate"
    if auth.trust_store is None:
        return (
            "no CA or pinned certificate is configured for the peer (remote.cacerts, remote.certs)"
        )
    try:
        cert = auth.trust_store.verify_chain(certs[0], certs[1:], sa.ep.wall_clock())
    except MalformedCertificate as exc:
        return f"bad certificate: {exc}"
    except CryptoError as exc:  # says which certificate, which CAs and why
        return str(exc)
    except MALFORMED as exc:
        return f"bad certificate: {exc}"
    try:
        if not id_matches_certificate(IdType(id_p.id_type), id_p.data, cert):
            return f"identity {_id_text(id_p)} does not match the certificate"
        ok = verify_signature(cert.public_key(), AuthMethod(auth_p.method), auth_p.data, octets)
    except (CryptoError, *MALFORMED) as exc:
        return f"signature check failed: {exc}"
    return None if ok else "signature does not verify"


def _established(sa: IkeSa, spec: ConnectionSpec, peer: IdPayload, now: float) -> None:
    sa.state = IkeState.ESTABLISHED
    sa.established_at = now
    sa.spec = spec
    sa.peer_id = _id_text(peer)
    sa.ep.half_open.remove(sa)
    reauth.schedule(sa, spec, now)
    if spec.dpd_delay > 0:
        sa.dpd_at = now + spec.dpd_delay
    sa.emit(
        IkeSaEstablished(
            spec.name,
            sa.id,
            sa.local,
            sa.remote,
            str(spec.local_id),
            sa.peer_id,
            format_proposal(sa.proposal) if sa.proposal else "",
            sa.initiator,
        )
    )


class AuthTask:
    exchange = ExchangeType.IKE_AUTH

    def __init__(self, spec: ConnectionSpec) -> None:
        self.spec = spec
        self.child: ChildSpec | None = None
        self.spi_in = 0
        self.idi: IdPayload | None = None

    def build(self, sa: IkeSa, now: float) -> list[Payload]:
        if sa.crypto is None:
            raise RemoteProtocolError("no keys", None)
        spec = self.spec
        self.idi = _id_payload(spec.local_id, False)
        octets = signed_octets(
            sa.init_request, sa.nr, sa.crypto.prf, sa.crypto.keys.sk_pi, self.idi.encode_body()
        )
        payloads: list[Payload] = [self.idi]
        auth = _make_auth(sa, spec.auth, octets)
        payloads += auth[:-1]
        peer = spec.peer_auth
        if not isinstance(peer, PskAuth) and peer.send_certreq:
            payloads.append(certreq_payload(peer))
        if spec.remote_id is not None:
            payloads.append(_id_payload(spec.remote_id, True))
        payloads.append(auth[-1])
        if initial_contact.should_send(sa, spec):
            payloads.append(NotifyPayload(NotifyType.INITIAL_CONTACT))
        acquired: tuple[TrafficSelector, ...] | None = None
        if sa.pending_children:
            name, acquired = sa.pending_children.pop(0)
            self.child = spec.child(name)
            self.spi_in = sa.ep.allocate_spi(self.child.protocol)
            payloads += childsa.request_payloads(self.child, self.spi_in, False, acquired)
        return payloads

    def _auth_failed(self, sa: IkeSa, now: float, reason: str, remote_id: str = "") -> None:
        sa.emit(
            AuthenticationFailed(
                self.spec.name, sa.id, sa.remote, reason, str(self.spec.local_id), remote_id
            )
        )
        sa.delete(now, f"authentication failed: {reason}", notify_peer=False)

    def on_response(self, sa: IkeSa, payloads: list[Payload], now: float) -> None:
        if sa.crypto is None:
            return
        idr = next((p for p in payloads if isinstance(p, IdPayload) and p.responder), None)
        err = error_notify(payloads)
        if idr is None:
            reason = name_of(NotifyType, err.notify_type) if err else "no IDr in response"
            if err is not None and err.notify_type != NotifyType.AUTHENTICATION_FAILED:
                sa.emit(
                    NegotiationFailed(
                        self.spec.name,
                        sa.id,
                        self.child.name if self.child else None,
                        reason,
                        ike_offer(self.spec.ike_proposals),
                        ike_offer(()),
                        sa.remote,
                    )
                )
                sa.delete(now, f"IKE_AUTH failed: {reason}", notify_peer=False)
                return
            self._auth_failed(sa, now, f"peer answered {reason}")
            return
        peer = _id_text(idr)
        want = self.spec.remote_id
        if want is not None and (idr.id_type, idr.data) != (want.type, want.data):
            self._auth_failed(sa, now, f"peer identity {peer} is not {want}", peer)
            return
        octets = signed_octets(
            sa.init_response, sa.ni, sa.crypto.prf, sa.crypto.keys.sk_pr, idr.encode_body()
        )
        why = _verify(sa, self.spec.peer_auth, payloads, idr, octets)
        if why is not None:
            # RFC 7296 §2.21.2: tell the responder, which already considers the SA up.
            sa.emit(
                AuthenticationFailed(
                    self.spec.name, sa.id, sa.remote, why, str(self.spec.local_id), peer
                )
            )
            from xfrmctl.ike.delete import NotifyThenCloseTask

            sa.state = IkeState.DELETING
            sa.queue(NotifyThenCloseTask(NotifyType.AUTHENTICATION_FAILED, why), now)
            return
        _established(sa, self.spec, idr, now)
        if self.child is not None:
            finish_child(sa, self.child, self.spi_in, payloads, sa.ni, sa.nr, None, now, True)
        from xfrmctl.ike.child_create import CreateChildTask

        for name, acquired in sa.pending_children:
            sa.queue(CreateChildTask(name, acquired), now)
        sa.pending_children = []
        if sa.reauth_of is not None:
            sa.queue(reauth.FinishTask(sa.reauth_of), now)

    def on_give_up(self, sa: IkeSa, now: float) -> None:
        pass


def finish_child(
    sa: IkeSa,
    spec: ChildSpec,
    spi_in: int,
    payloads: list[Payload],
    ni: bytes,
    nr: bytes,
    shared: bytes | None,
    now: float,
    ignore_ke: bool,
    replaces: ChildSa | None = None,
) -> ChildSa | None:
    """Initiator: install the Child SA from a response, or report why the peer refused it."""
    err = error_notify(payloads)
    if err is not None or not any(isinstance(p, SaPayload) for p in payloads):
        reason = name_of(NotifyType, err.notify_type) if err else "no SA payload in response"
        sa.emit(
            NegotiationFailed(
                sa.conn_name,
                sa.id,
                spec.name,
                reason,
                childsa.child_offer(
                    spec.proposals,
                    tuple(t.to_selector() for t in spec.local_ts),
                    tuple(t.to_selector() for t in spec.remote_ts),
                ),
                Offer(),
                sa.remote,
            )
        )
        return None
    try:
        chosen, tsi, tsr = childsa.check_response(sa, spec, payloads, ignore_ke)
    except RemoteProtocolError as exc:
        sa.emit(
            NegotiationFailed(
                sa.conn_name,
                sa.id,
                spec.name,
                str(exc),
                childsa.child_offer(spec.proposals),
                Offer(),
                sa.remote,
            )
        )
        return None
    return childsa.install(
        sa, spec, chosen, spi_in, True, ni, nr, shared, tsi, tsr, now, payloads, replaces
    )


def _pick_spec(
    sa: IkeSa, idi: IdPayload, idr: IdPayload | None, method: int
) -> ConnectionSpec | None:
    for spec in sa.candidates or ([sa.spec] if sa.spec else []):
        if spec.remote_id is not None and (spec.remote_id.type, spec.remote_id.data) != (
            idi.id_type,
            idi.data,
        ):
            continue
        if idr is not None and (idr.id_type, idr.data) != (spec.local_id.type, spec.local_id.data):
            continue
        if isinstance(spec.peer_auth, PskAuth) != (method == AuthMethod.PSK):
            continue
        return spec
    return None


def handle_request(sa: IkeSa, msg: Message, payloads: list[Payload], now: float) -> list[Payload]:
    """Responder: authenticate the initiator, answer with our AUTH and the first Child SA."""
    if sa.crypto is None:
        raise RemoteProtocolError("no keys", None)
    idi = next((p for p in payloads if isinstance(p, IdPayload) and not p.responder), None)
    idr = next((p for p in payloads if isinstance(p, IdPayload) and p.responder), None)
    auth_p = next((p for p in payloads if isinstance(p, AuthPayload)), None)
    if idi is None or auth_p is None:
        raise RemoteProtocolError("IKE_AUTH request without IDi and AUTH")
    peer = _id_text(idi)
    spec = _pick_spec(sa, idi, idr, auth_p.method)
    conn = sa.conn_name
    if spec is None:
        reason = f"no connection accepts identity {peer} with {name_of(AuthMethod, auth_p.method)}"
    else:
        conn = spec.name
        octets = signed_octets(
            sa.init_request, sa.nr, sa.crypto.prf, sa.crypto.keys.sk_pi, idi.encode_body()
        )
        why = _verify(sa, spec.peer_auth, payloads, idi, octets)
        reason = why or ""
    if spec is None or reason:
        sa.emit(AuthenticationFailed(conn, sa.id, sa.remote, reason, "", peer))
        raise RemoteProtocolError(reason, NotifyType.AUTHENTICATION_FAILED)
    sa.spec = spec
    _established(sa, spec, idi, now)
    if any(
        isinstance(p, NotifyPayload) and p.notify_type == NotifyType.INITIAL_CONTACT
        for p in payloads
    ):
        initial_contact.on_received(sa, now)
    our_id = _id_payload(spec.local_id, True)
    octets = signed_octets(
        sa.init_response, sa.ni, sa.crypto.prf, sa.crypto.keys.sk_pr, our_id.encode_body()
    )
    response: list[Payload] = [our_id, *_make_auth(sa, spec.auth, octets)]
    if any(isinstance(p, SaPayload) for p in payloads):
        try:
            child, chosen, tsi, tsr = childsa.select(sa, payloads, ignore_ke=True)
        except RemoteProtocolError as exc:
            if exc.notify is None:
                raise
            response.append(NotifyPayload(exc.notify, exc.notify_data))
            return response
        spi_in = sa.ep.allocate_spi(child.protocol)
        childsa.install(
            sa, child, chosen, spi_in, False, sa.ni, sa.nr, None, tsr, tsi, now, payloads
        )
        response += childsa.response_payloads(chosen, spi_in, tsi, tsr, child.mode)
    return response
