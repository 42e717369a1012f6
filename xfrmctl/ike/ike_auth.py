"""IKE_AUTH (RFC 7296 §1.2, §2.15): identities, AUTH, and the first Child SA.

`AuthTask` is the initiator, queued behind IKE_SA_INIT by `connect`; `handle_request` the
responder, which picks the connection by the peer's identity and auth method. Making and
checking AUTH payloads is `authentication`'s; negotiating the Child SA is `childsa`'s. Either
role may park its IKE_AUTH while revocation status is fetched (`revocation_wait`).
"""

from __future__ import annotations

import functools
from dataclasses import replace

from xfrmctl.ike import (
    authentication,
    childsa,
    initial_contact,
    ipcomp,
    lifetimes,
    offers,
    revocation_wait,
)
from xfrmctl.ike.child_create import CreateChildTask
from xfrmctl.ike.crypto.auth import signed_octets
from xfrmctl.ike.crypto.revocation_data import NeedFetch
from xfrmctl.ike.delete import NotifyThenCloseTask
from xfrmctl.ike.errors import RemoteProtocolError
from xfrmctl.ike.events import AuthenticationFailed, IkeSaEstablished, NegotiationFailed, Offer
from xfrmctl.ike.exchanges import IkeState, Transition
from xfrmctl.ike.iana import AuthMethod, ExchangeType, NotifyType, name_of
from xfrmctl.ike.message import Message
from xfrmctl.ike.negotiation import error_notify
from xfrmctl.ike.payloads import (
    AuthPayload,
    IdPayload,
    NotifyPayload,
    Payload,
    SaPayload,
    TrafficSelector,
)
from xfrmctl.ike.proposals import format_proposal
from xfrmctl.ike.sa import IkeSa, Task
from xfrmctl.ike.spec import ChildSpec, ConnectionSpec, PskAuth


def _established(sa: IkeSa, spec: ConnectionSpec, peer: IdPayload, now: float) -> None:
    sa.transition(Transition.AUTHENTICATED)
    sa.established_at = now
    sa.spec = spec
    sa.peer_id = authentication.id_text(peer)
    sa.ep.half_open.remove(sa)
    lifetimes.schedule(sa, spec, now)
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


class AuthTask(Task):
    """Initiator: queued behind IKE_SA_INIT, so it runs once the keys exist."""

    exchange = ExchangeType.IKE_AUTH

    def __init__(self, spec: ConnectionSpec) -> None:
        self.spec = spec
        self.child: ChildSpec | None = None
        self.spi_in = 0
        self.cpi_in = 0  # the IPComp CPI we offered with the first Child SA, if any
        self.acquired = False  # that Child SA answers a kernel ACQUIRE
        self.idi: IdPayload | None = None

    def build(self, sa: IkeSa, now: float) -> list[Payload] | None:
        if sa.state != IkeState.AUTH_SENT:
            return None
        if sa.crypto is None:
            raise RemoteProtocolError("no keys", None)
        spec = self.spec
        self.idi = authentication.id_payload(spec.local_id, False)
        octets = signed_octets(
            sa.init_request, sa.nr, sa.crypto.prf, sa.crypto.keys.sk_pi, self.idi.encode_body()
        )
        payloads: list[Payload] = [self.idi]
        auth = authentication.make_auth(sa, spec.auth, octets)
        payloads += auth[:-1]
        peer = spec.peer_auth
        if not isinstance(peer, PskAuth) and peer.send_certreq:
            payloads.append(authentication.certreq_payload(peer))
        if spec.remote_id is not None:
            payloads.append(authentication.id_payload(spec.remote_id, True))
        payloads.append(auth[-1])
        if initial_contact.should_send(sa, spec):
            payloads.append(NotifyPayload(NotifyType.INITIAL_CONTACT))
        acquired: tuple[TrafficSelector, ...] | None = None
        if sa.pending_children:
            (name, acquired), *rest = sa.pending_children
            sa.pending_children = rest or ()
            self.acquired = acquired is not None
            self.child = spec.child(name)
            self.spi_in = sa.ep.allocate_spi(self.child.protocol)
            self.cpi_in = ipcomp.allocate_cpi(sa) if ipcomp.usable(sa, self.child) else 0
            payloads += childsa.request_payloads(
                self.child, self.spi_in, False, acquired, self.cpi_in
            )
        return payloads

    def _failure(
        self, sa: IkeSa, problem: authentication.AuthProblem, remote_id: str
    ) -> AuthenticationFailed:
        theirs = replace(offers.peer_seen(sa), identity=remote_id)
        return AuthenticationFailed(
            self.spec.name,
            sa.id,
            sa.remote,
            problem.reason,
            str(self.spec.local_id),
            remote_id,
            problem.kind,
            True,
            offers.our_ike(self.spec, sa),
            theirs,
            problem.issuer,
            problem.ca_files,
        )

    def _auth_failed(
        self, sa: IkeSa, now: float, reason: str, kind: str, remote_id: str = ""
    ) -> None:
        sa.emit(self._failure(sa, authentication.AuthProblem(reason, kind), remote_id))
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
                        offers.our_child(self.spec, self.child, sa),
                        offers.peer_seen(sa, hidden=offers.hidden_by(reason)),
                        sa.remote,
                        initiator=True,
                    )
                )
                sa.delete(now, f"IKE_AUTH failed: {reason}", notify_peer=False)
                return
            self._auth_failed(sa, now, f"peer answered {reason}", "peer_rejected")
            return
        peer = authentication.id_text(idr)
        want = self.spec.remote_id
        if want is not None and (idr.id_type, idr.data) != (want.type, want.data):
            self._auth_failed(sa, now, f"peer identity {peer} is not {want}", "identity", peer)
            return
        octets = signed_octets(
            sa.init_response, sa.ni, sa.crypto.prf, sa.crypto.keys.sk_pr, idr.encode_body()
        )
        why = authentication.verify_auth(sa, self.spec.peer_auth, payloads, idr, octets)
        if isinstance(why, NeedFetch):
            timeout = authentication.revocation_config(self.spec.peer_auth).timeout
            revocation_wait.park(sa, why, timeout, lambda t: self._resume(sa, payloads, t), now)
            return
        if why is not None:
            # RFC 7296 §2.21.2: tell the responder, which already considers the SA up.
            sa.emit(self._failure(sa, why, peer))
            sa.transition(Transition.CLOSING)
            sa.queue(NotifyThenCloseTask(NotifyType.AUTHENTICATION_FAILED, why.reason), now)
            return
        _established(sa, self.spec, idr, now)
        if self.child is not None:
            childsa.finish_child(
                sa,
                self.child,
                self.spi_in,
                payloads,
                sa.ni,
                sa.nr,
                None,
                now,
                True,
                cpi_in=self.cpi_in,
                acquired=self.acquired,
            )
        # The other children go next, ahead of anything queued for after the setup.
        sa.tasks.extendleft(CreateChildTask(n, ts) for n, ts in reversed(sa.pending_children))
        sa.pending_children = ()

    def _resume(self, sa: IkeSa, payloads: list[Payload], now: float) -> None:
        """The revocation fetches are answered: check the response again, now decidable."""
        if sa.state == IkeState.AUTH_SENT:
            self.on_response(sa, payloads, now)
            sa.kick(now)


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


def _unmatched(
    sa: IkeSa, idi: IdPayload, idr: IdPayload | None, reason: str
) -> authentication.AuthProblem:
    """No connection fits: "identity" unless one would with another auth method."""
    known = sa.candidates or ([sa.spec] if sa.spec else [])
    ids_fit = any(_pick_spec(sa, idi, idr, m) for m in (AuthMethod.PSK, AuthMethod.RSA_SIG))
    return authentication.AuthProblem(reason, "auth_method" if ids_fit and known else "identity")


def _responder_failure(
    sa: IkeSa,
    spec: ConnectionSpec | None,
    why: authentication.AuthProblem,
    idi: IdPayload,
    idr: IdPayload | None,
    method: int,
) -> AuthenticationFailed:
    """The initiator's IDi/IDr and auth method next to what our connection(s) expect."""
    known = sa.candidates or ([sa.spec] if sa.spec else [])
    ours = offers.our_ike(spec or (known[0] if known else None), sa)
    if spec is None and known:  # every connection we could have picked
        ids = dict.fromkeys(str(s.remote_id) if s.remote_id else "%any" for s in known)
        ours = replace(ours, peer_id=", ".join(ids))
    peer = authentication.id_text(idi)
    theirs = Offer(
        identity=peer,
        auth_method="psk" if method == AuthMethod.PSK else "pubkey",
        peer_id=authentication.id_text(idr) if idr is not None else "%any",
        nat=sa.nat_remote,
    )
    return AuthenticationFailed(
        spec.name if spec else sa.conn_name,
        sa.id,
        sa.remote,
        why.reason,
        ours.identity,
        peer,
        why.kind,
        False,
        ours,
        theirs,
        why.issuer,
        why.ca_files,
        tuple(str(s.remote_id) if s.remote_id else "%any" for s in known),
    )


def _answer_parked(sa: IkeSa, msg: Message, payloads: list[Payload], now: float) -> None:
    """Answer the IKE_AUTH request parked for revocation, as `IkeSa` answers any request."""
    if sa.state != IkeState.INIT_RESPONDED:
        return
    try:
        response = handle_request(sa, msg, payloads, now)
    except revocation_wait.RevocationPending:
        return
    except RemoteProtocolError as exc:
        sa.violation(f"{msg.describe()}: {exc}")
        if exc.notify is None:
            return
        response = [NotifyPayload(exc.notify, exc.notify_data)]
        sa.close_after_response = f"IKE_AUTH failed: {exc}"
    sa.peer_mid += 1
    sa.send_response(msg, response)
    if sa.close_after_response:
        sa.delete(now, sa.close_after_response, notify_peer=False)


def handle_request(sa: IkeSa, msg: Message, payloads: list[Payload], now: float) -> list[Payload]:
    """Responder: authenticate the initiator, answer with our AUTH and the first Child SA."""
    if sa.crypto is None:
        raise RemoteProtocolError("no keys", None)
    idi = next((p for p in payloads if isinstance(p, IdPayload) and not p.responder), None)
    idr = next((p for p in payloads if isinstance(p, IdPayload) and p.responder), None)
    auth_p = next((p for p in payloads if isinstance(p, AuthPayload)), None)
    if idi is None or auth_p is None:
        raise RemoteProtocolError("IKE_AUTH request without IDi and AUTH")
    if revocation_wait.waiting(sa):  # a retransmission while we fetch: answer it later
        raise revocation_wait.RevocationPending("IKE_AUTH waits for revocation status")
    peer = authentication.id_text(idi)
    spec = _pick_spec(sa, idi, idr, auth_p.method)
    if spec is None:
        reason = f"no connection accepts identity {peer} with {name_of(AuthMethod, auth_p.method)}"
        why: authentication.AuthProblem | None = _unmatched(sa, idi, idr, reason)
    else:
        octets = signed_octets(
            sa.init_request, sa.nr, sa.crypto.prf, sa.crypto.keys.sk_pi, idi.encode_body()
        )
        verdict = authentication.verify_auth(sa, spec.peer_auth, payloads, idi, octets)
        if isinstance(verdict, NeedFetch):
            timeout = authentication.revocation_config(spec.peer_auth).timeout
            resume = functools.partial(_answer_parked, sa, msg, payloads)
            revocation_wait.park(sa, verdict, timeout, resume, now)
            raise revocation_wait.RevocationPending("IKE_AUTH waits for revocation status")
        why = verdict
    if why is not None or spec is None:
        why = why or authentication.AuthProblem("no connection", "identity")
        sa.emit(_responder_failure(sa, spec, why, idi, idr, auth_p.method))
        raise RemoteProtocolError(why.reason, NotifyType.AUTHENTICATION_FAILED)
    sa.spec = spec
    _established(sa, spec, idi, now)
    if any(
        isinstance(p, NotifyPayload) and p.notify_type == NotifyType.INITIAL_CONTACT
        for p in payloads
    ):
        initial_contact.on_received(sa, now)
    authentication.note_certreqs(sa, payloads)  # RFC 7296 §3.7: may come in IKE_AUTH too
    our_id = authentication.id_payload(spec.local_id, True)
    octets = signed_octets(
        sa.init_response, sa.ni, sa.crypto.prf, sa.crypto.keys.sk_pr, our_id.encode_body()
    )
    response: list[Payload] = [our_id, *authentication.make_auth(sa, spec.auth, octets)]
    if any(isinstance(p, SaPayload) for p in payloads):
        try:
            child, chosen, tsi, tsr = childsa.select(sa, payloads, ignore_ke=True)
            spi_in = sa.ep.allocate_spi(child.protocol)
            cpis = ipcomp.respond(sa, child, payloads)
            childsa.install(
                sa,
                child,
                chosen,
                spi_in,
                False,
                sa.ni,
                sa.nr,
                None,
                tsr,
                tsi,
                now,
                payloads,
                cpis=cpis,
            )
        except RemoteProtocolError as exc:  # the IKE SA stands without this Child SA (§1.2)
            if exc.notify is None:
                raise
            response.append(NotifyPayload(exc.notify, exc.notify_data))
            return response
        response += childsa.response_payloads(chosen, spi_in, tsi, tsr, child.mode, cpis[0])
    return response
