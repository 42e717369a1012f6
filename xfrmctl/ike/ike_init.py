"""IKE_SA_INIT (RFC 7296 §1.2): proposals, key exchange, nonces, NAT-D, cookies, KE retry."""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

from xfrmctl.ike import authentication
from xfrmctl.ike.crypto.auth import our_hash_algorithms
from xfrmctl.ike.crypto.errors import CryptoError
from xfrmctl.ike.crypto.keyexchange import KeyExchange, new_key_exchange
from xfrmctl.ike.crypto.keys import derive_ike_keys
from xfrmctl.ike.errors import LocalProtocolError, RemoteProtocolError
from xfrmctl.ike.events import NegotiationFailed, Offer, ProtocolViolation
from xfrmctl.ike.exchanges import Transition, check_payloads
from xfrmctl.ike.iana import ExchangeType, KeId, NotifyType, name_of
from xfrmctl.ike.message import Message
from xfrmctl.ike.natd import NATT_PORT, detect, natd_payloads
from xfrmctl.ike.negotiation import (
    NONCE_SIZE,
    BadKePayload,
    error_notify,
    first,
    ike_algorithms,
    ike_offer,
    invalid_ke_answer,
    invalid_ke_group,
    ke_group,
    notifies,
    numbered,
    respond_ke,
    retry_group,
)
from xfrmctl.ike.offers import hidden_by, ke_keyword, our_ike
from xfrmctl.ike.payloads import KePayload, NoncePayload, NotifyPayload, Payload, SaPayload
from xfrmctl.ike.proposals import proposal_is_acceptable, select_proposal
from xfrmctl.ike.sa import Address, Host, IkeCrypto, IkeSa, Task
from xfrmctl.ike.spec import ConnectionSpec, Encap, PskAuth
from xfrmctl.ike.transforms import Proposal, kept

MAX_COOKIE_ROUNDS = 3
MAX_KE_ROUNDS = 3


def hash_algorithms_payload() -> NotifyPayload:
    data = b"".join(struct.pack("!H", h) for h in our_hash_algorithms())
    return NotifyPayload(NotifyType.SIGNATURE_HASH_ALGORITHMS, data)


def _capabilities(sa: IkeSa, spec: ConnectionSpec, payloads: list[Payload]) -> None:
    ns = notifies(payloads)
    sa.peer_fragmentation = spec.fragmentation and NotifyType.IKEV2_FRAGMENTATION_SUPPORTED in ns
    authentication.note_certreqs(sa, payloads)
    sig = ns.get(NotifyType.SIGNATURE_HASH_ALGORITHMS)
    if sig is not None:
        data = sig.data[: len(sig.data) // 2 * 2]
        sa.peer_hash_algorithms = [x for (x,) in struct.iter_unpack("!H", data)]


def _our_extras(spec: ConnectionSpec) -> list[Payload]:
    out: list[Payload] = []
    if spec.fragmentation:
        out.append(NotifyPayload(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED))
    if spec.uses_certificates:  # RFC 7427: we sign, or verify the peer's signature
        out.append(hash_algorithms_payload())
    return out


def setup_keys(sa: IkeSa, chosen: Proposal, shared: bytes) -> None:
    """SKEYSEED and the seven keys (RFC 7296 §2.14) from the chosen proposal."""
    prf, integ, encr = ike_algorithms(chosen)
    keys = derive_ike_keys(prf, integ, encr, sa.ni, sa.nr, shared, sa.spi_i, sa.spi_r)
    sa.crypto = IkeCrypto(prf, integ, encr, keys, sa.initiator)
    sa.proposal = kept(chosen)


class InitTask(Task):
    """Initiator side; restarts itself after COOKIE or INVALID_KE_PAYLOAD.

    IKE_AUTH is queued behind it from the start (`connect`), and runs once this has made keys.
    """

    exchange = ExchangeType.IKE_SA_INIT

    def __init__(self, spec: ConnectionSpec) -> None:
        self.spec = spec
        self.group = ke_group(spec.ike_proposals[0])
        self.cookie = b""
        self.ke: KeyExchange | None = None
        self.cookie_rounds = 0
        self.ke_rounds = 0

    def build(self, sa: IkeSa, now: float) -> list[Payload]:
        # A retry after COOKIE or INVALID_KE_PAYLOAD keeps the nonce: the cookie covers it.
        if not sa.ni:
            sa.ni = sa.ep.random(NONCE_SIZE)
        try:
            if self.ke is None or self.ke.group != self.group:
                self.ke = new_key_exchange(KeId(self.group))
        except (CryptoError, ValueError) as exc:
            raise LocalProtocolError(
                f"{self.spec.name}: key exchange {self.group}: {exc}"
            ) from None
        payloads: list[Payload] = []
        if self.cookie:
            payloads.append(NotifyPayload(NotifyType.COOKIE, self.cookie))
        payloads += [
            SaPayload(numbered(self.spec.ike_proposals)),
            KePayload(self.group, self.ke.public_value()),
            NoncePayload(sa.ni),
            *natd_payloads(sa.spi_i, bytes(8), sa.local, sa.remote, self.spec.encap == Encap.FORCE),
            *_our_extras(self.spec),
        ]
        return payloads

    def _restart(self, sa: IkeSa, now: float) -> None:
        sa.my_mid = 0
        sa.spi_r = bytes(8)
        sa.queue(self, now, front=True)

    def _fail(self, sa: IkeSa, now: float, reason: str, theirs: Offer) -> None:
        sa.emit(
            NegotiationFailed(
                self.spec.name,
                sa.id,
                None,
                reason,
                our_ike(self.spec, sa),
                theirs,
                sa.remote,
                initiator=True,
            )
        )
        sa.delete(now, f"IKE_SA_INIT failed: {reason}", notify_peer=False)

    def on_response(self, sa: IkeSa, payloads: list[Payload], now: float) -> None:
        ns = notifies(payloads)
        cookie = ns.get(NotifyType.COOKIE)
        if cookie is not None:
            self.cookie_rounds += 1
            if self.cookie_rounds > MAX_COOKIE_ROUNDS or not 1 <= len(cookie.data) <= 64:
                self._fail(sa, now, "COOKIE loop", Offer())
                return
            self.cookie = cookie.data
            self._restart(sa, now)
            return
        wanted = invalid_ke_group(payloads)
        if wanted is not None:
            self.ke_rounds += 1
            group = retry_group(payloads, self.spec.ike_proposals, self.group)
            if group is None or self.ke_rounds > MAX_KE_ROUNDS:
                asked = Offer(ke_group=ke_keyword(wanted), hidden=("proposals",))
                self._fail(sa, now, "INVALID_KE_PAYLOAD", asked)
                return
            self.group = group
            self._restart(sa, now)
            return
        err = error_notify(payloads)
        if err is not None:
            reason = name_of(NotifyType, err.notify_type)
            self._fail(sa, now, reason, Offer(hidden=hidden_by(reason)))
            return
        sa_p = first(payloads, SaPayload)
        ke_p = first(payloads, KePayload)
        nonce_p = first(payloads, NoncePayload)
        if not (
            isinstance(sa_p, SaPayload)
            and isinstance(ke_p, KePayload)
            and isinstance(nonce_p, NoncePayload)
        ):
            self._fail(sa, now, "INVALID_SYNTAX", Offer())
            return
        theirs = ike_offer(sa_p.proposals)
        if len(sa_p.proposals) != 1 or not proposal_is_acceptable(
            self.spec.ike_proposals, sa_p.proposals[0]
        ):
            self._fail(sa, now, "unacceptable proposal chosen by the peer", theirs)
            return
        chosen = sa_p.proposals[0]
        if ke_p.group != self.group or ke_group(chosen) != self.group or self.ke is None:
            self._fail(sa, now, "KE group differs from the chosen proposal", theirs)
            return
        try:
            shared = self.ke.shared_secret(ke_p.data)
        except CryptoError as exc:
            self._fail(sa, now, f"bad KE payload: {exc}", theirs)
            return
        sa.nr = nonce_p.data
        setup_keys(sa, chosen, shared)
        _capabilities(sa, self.spec, payloads)
        nat = detect(payloads, sa.spi_i, sa.spi_r, sa.local, sa.remote)
        if nat is not None:
            sa.nat_local, sa.nat_remote = nat
            if self.spec.encap == Encap.FORCE:
                sa.nat_local = True
        if sa.nat and sa.local[1] != sa.ep.config.natt_port:
            # RFC 7296 §2.23: float to 4500 right after IKE_SA_INIT.
            sa.local = (sa.local[0], sa.ep.config.natt_port)
            sa.remote = (sa.remote[0], NATT_PORT)
        sa.transition(Transition.KEYS_MADE)


def _answer(
    ep: Host,
    msg: Message,
    local: Address,
    remote: Address,
    payloads: list[Payload],
    spi_r: bytes = bytes(8),
) -> None:
    """Unprotected IKE_SA_INIT response without state (errors and COOKIE)."""
    reply = Message(msg.spi_i, spi_r, ExchangeType.IKE_SA_INIT, 0, True, False, tuple(payloads))
    ep.trace_message("out", reply, payloads, local, remote)
    ep.send([reply.encode()], local, remote)


def _admitted(ep: Host, remote: Address) -> bool:
    """Room for another half-open SA: in all, and from this peer's IP address."""
    cfg = ep.config
    if len(ep.half_open) >= cfg.max_half_open:
        ep.emit(ProtocolViolation(remote, "too many half-open IKE SAs, request dropped"))
        return False
    if ep.half_open.from_ip(remote[0]) >= cfg.block_threshold:
        ep.count("half_open_blocked")
        ep.emit(ProtocolViolation(remote, f"too many half-open IKE SAs from {remote[0]}, dropped"))
        return False
    return True


def _cookie_required(ep: Host, remote: Address) -> bool:
    cfg = ep.config
    return (
        len(ep.half_open) >= cfg.cookie_threshold
        or ep.half_open.from_ip(remote[0]) >= cfg.cookie_threshold_ip
    )


@dataclass
class _Request:
    """An IKE_SA_INIT request being answered, and where it came from."""

    ep: Host
    msg: Message
    data: bytes
    local: Address
    remote: Address
    payloads: list[Payload]

    def answer(self, payloads: list[Payload]) -> None:
        _answer(self.ep, self.msg, self.local, self.remote, payloads)

    def violation(self, reason: str) -> None:
        self.ep.emit(ProtocolViolation(self.remote, f"IKE_SA_INIT: {reason}"))


def handle_request(
    ep: Host, msg: Message, data: bytes, local: Address, remote: Address, now: float
) -> None:
    """Responder side of IKE_SA_INIT; state is only created once cookies and KE check out."""
    existing = ep.half_open.get(remote, msg.spi_i)
    if existing is not None:
        if existing.init_request == data and existing.last_response is not None:
            ep.send(existing.last_response[1], existing.local, existing.remote)
        return
    req = _Request(ep, msg, data, local, remote, list(msg.payloads))
    admitted = _admit(req, now)
    if admitted is None:
        return
    sa_p, ke_p, nonce_p = admitted
    selected = _select(req, sa_p, ke_p)
    if selected is not None:
        _create(req, now, *selected, nonce_p)


def _admit(req: _Request, now: float) -> tuple[SaPayload, KePayload, NoncePayload] | None:
    """Well-formed, within the half-open limits, and with a cookie when one is due."""
    if req.msg.message_id != 0:
        req.violation("request with non-zero message ID")
        return None
    try:
        check_payloads(ExchangeType.IKE_SA_INIT, False, req.payloads)
    except RemoteProtocolError as exc:
        req.violation(str(exc))
        if exc.notify is not None:
            req.answer([NotifyPayload(exc.notify, exc.notify_data)])
        return None
    if not _admitted(req.ep, req.remote):
        return None
    sa_p, ke_p = first(req.payloads, SaPayload), first(req.payloads, KePayload)
    nonce_p = first(req.payloads, NoncePayload)
    if sa_p is None or ke_p is None or nonce_p is None:
        return None
    if _cookie_required(req.ep, req.remote):
        ep, spi_i, ip = req.ep, req.msg.spi_i, req.remote[0]
        cookie = notifies(req.payloads).get(NotifyType.COOKIE)
        if cookie is None or not ep.cookies.check(cookie.data, nonce_p.data, ip, spi_i, now):
            token = ep.cookies.make(nonce_p.data, ip, spi_i, now)
            req.answer([NotifyPayload(NotifyType.COOKIE, token)])
            return None
    return sa_p, ke_p, nonce_p


def _select(
    req: _Request, sa_p: SaPayload, ke_p: KePayload
) -> tuple[ConnectionSpec, list[ConnectionSpec], Proposal, KeyExchange, bytes] | None:
    """The first connection for these addresses with an acceptable proposal, and the KE."""
    specs = req.ep.candidates(req.local, req.remote)
    for spec in specs:
        chosen = select_proposal(spec.ike_proposals, sa_p.proposals)
        if chosen is not None:
            break
    else:
        ours = our_ike(specs[0]) if specs else Offer()
        name = specs[0].name if specs else ""
        nat = detect(req.payloads, req.msg.spi_i, bytes(8), req.local, req.remote)
        theirs = replace(ike_offer(sa_p.proposals), nat=nat[1] if nat else None)
        ours = replace(ours, nat=nat[0] if nat else None)
        req.ep.emit(
            NegotiationFailed(name, 0, None, "NO_PROPOSAL_CHOSEN", ours, theirs, req.remote, False)
        )
        req.answer([NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN)])
        return None
    group = ke_group(chosen)
    if ke_p.group != group:
        req.answer([invalid_ke_answer(group)])
        return None
    try:
        ke, shared = respond_ke(group, ke_p)
    except BadKePayload as exc:
        req.violation(f"bad KE payload: {exc}")
        req.answer([NotifyPayload(NotifyType.INVALID_SYNTAX)])
        return None
    candidates = [s for s in specs if select_proposal(s.ike_proposals, sa_p.proposals)]
    return spec, candidates, chosen, ke, shared


def _create(
    req: _Request,
    now: float,
    spec: ConnectionSpec,
    candidates: list[ConnectionSpec],
    chosen: Proposal,
    ke: KeyExchange,
    shared: bytes,
    nonce_p: NoncePayload,
) -> None:
    """The half-open IKE SA, its keys, and our response."""
    ep, local, remote = req.ep, req.local, req.remote
    sa = IkeSa(ep, spec, False, req.msg.spi_i, ep.new_spi(), local, remote, now)
    sa.candidates = tuple(candidates)
    sa.ni = nonce_p.data
    sa.nr = ep.random(NONCE_SIZE)
    setup_keys(sa, chosen, shared)
    _capabilities(sa, spec, req.payloads)
    nat = detect(req.payloads, sa.spi_i, bytes(8), local, remote)
    if nat is not None:
        sa.nat_local, sa.nat_remote = nat
        if spec.encap == Encap.FORCE:
            sa.nat_local = True
    response: list[Payload] = [
        SaPayload((chosen,)),
        KePayload(int(ke.group), ke.public_value()),
        NoncePayload(sa.nr),
        *natd_payloads(sa.spi_i, sa.spi_r, local, remote, spec.encap == Encap.FORCE),
        *_our_extras(spec),
    ]
    peer = spec.peer_auth
    if not isinstance(peer, PskAuth) and peer.send_certreq:
        response.append(authentication.certreq_payload(peer))
    sa.init_request = req.data
    ep.register(sa)
    ep.half_open.add(sa)
    sa.peer_mid = 1
    sa.send_response(req.msg, response)
    sa.init_response = sa.last_response[1][0] if sa.last_response else b""
