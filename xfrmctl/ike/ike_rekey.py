"""IKE SA rekeying (RFC 7296 §1.3.2, §2.18) and simultaneous IKE rekeys (§2.8.2).

The Child SAs move to the new IKE SA; the rekey initiator deletes the old one. When both peers
rekey at once, the new IKE SA from the exchange with the lowest nonce is deleted by its
initiator and the other initiator deletes the old IKE SA.
"""

from __future__ import annotations

import struct

from xfrmctl.ike import reauth
from xfrmctl.ike.crypto.algorithms import encr_for, integ_for, prf_for
from xfrmctl.ike.crypto.errors import CryptoError
from xfrmctl.ike.crypto.keyexchange import KeyExchange, new_key_exchange
from xfrmctl.ike.crypto.keys import derive_rekeyed_ike_keys
from xfrmctl.ike.errors import LocalProtocolError, RemoteProtocolError
from xfrmctl.ike.events import IkeSaRekeyed, NegotiationFailed
from xfrmctl.ike.exchanges import IkeState
from xfrmctl.ike.iana import ExchangeType, KeId, NotifyType, TransformType, name_of
from xfrmctl.ike.ike_init import error_notify, first, ike_offer, ke_group, notifies, numbered
from xfrmctl.ike.payloads import KePayload, NoncePayload, NotifyPayload, Payload, SaPayload
from xfrmctl.ike.proposals import format_proposal, proposal_is_acceptable, select_proposal
from xfrmctl.ike.sa import IkeCrypto, IkeSa
from xfrmctl.ike.transforms import Proposal

NONCE_SIZE = 32
MAX_RETRIES = 5


def _new_sa(
    old: IkeSa,
    initiator: bool,
    spi_i: bytes,
    spi_r: bytes,
    chosen: Proposal,
    shared: bytes,
    ni: bytes,
    nr: bytes,
    now: float,
) -> IkeSa:
    if old.crypto is None:
        raise RemoteProtocolError("no keys", None)
    new = IkeSa(old.ep, old.spec, initiator, spi_i, spi_r, old.local, old.remote, now)
    encr = encr_for(chosen.of_type(TransformType.ENCR)[0])
    integs = chosen.of_type(TransformType.INTEG)
    integ = integ_for(integs[0]) if integs and integs[0].id != 0 else None
    prf = prf_for(chosen.of_type(TransformType.PRF)[0])
    keys = derive_rekeyed_ike_keys(
        old.crypto.prf, old.crypto.keys.sk_d, prf, integ, encr, shared, ni, nr, spi_i, spi_r
    )
    new.crypto = IkeCrypto(prf, integ, encr, keys, initiator)
    new.proposal = chosen
    new.ni, new.nr = ni, nr
    new.rekey_nonces = (ni, nr)
    new.state = IkeState.ESTABLISHED
    new.established_at = now
    new.peer_id = old.peer_id
    new.nat_local, new.nat_remote = old.nat_local, old.nat_remote
    new.peer_fragmentation = old.peer_fragmentation
    new.peer_hash_algorithms = old.peer_hash_algorithms
    spec = old.spec
    if spec is not None:
        reauth.schedule(new, spec, now, reauth_at=old.reauth_at)
    if spec is not None and spec.dpd_delay > 0:
        new.dpd_at = now + spec.dpd_delay
    old.ep.register(new)
    return new


def move_children(old: IkeSa, new: IkeSa, now: float) -> None:
    new.children.extend(old.children)
    old.children = []
    for t in list(old.tasks):
        if not isinstance(t, IkeRekeyTask):
            new.tasks.append(t)
    old.tasks.clear()
    old.state = IkeState.REKEYED
    old.replaced_by = new
    old.rekey_at = old.reauth_at = old.hard_at = None
    old.dpd_at = None
    # The rekey initiator deletes the old SA; if that never arrives, let it go on our own.
    old.expire_at = now + old.ep.config.give_up_after()
    new.emit(
        IkeSaRekeyed(
            old.conn_name, old.id, new.id, format_proposal(new.proposal) if new.proposal else ""
        )
    )
    new.kick(now)


class IkeRekeyTask:
    exchange = ExchangeType.CREATE_CHILD_SA

    def __init__(self) -> None:
        self.spi = b""
        self.ni = b""
        self.group: int | None = None
        self.ke: KeyExchange | None = None
        self.retries = 0
        self.collision: IkeSa | None = None

    def build(self, sa: IkeSa, now: float) -> list[Payload] | None:
        if sa.state != IkeState.ESTABLISHED or sa.spec is None:
            return None
        if self.group is None:
            self.group = ke_group(sa.proposal or sa.spec.ike_proposals[0])
        self.spi = sa.ep._new_spi()
        self.ni = sa.ep.random(NONCE_SIZE)
        try:
            self.ke = new_key_exchange(KeId(self.group))
        except (CryptoError, ValueError) as exc:
            raise LocalProtocolError(f"IKE rekey group {self.group}: {exc}") from None
        return [
            SaPayload(numbered(sa.spec.ike_proposals, self.spi)),
            NoncePayload(self.ni),
            KePayload(self.group, self.ke.public_value()),
        ]

    def _retry(self, sa: IkeSa, now: float) -> None:
        self.retries += 1
        if self.collision is not None:
            move_children(sa, self.collision, now)  # the peer's rekey stands
            return
        if self.retries > MAX_RETRIES:
            sa.rekey_at = now + 60.0
            return
        delay = sa.ep.config.temporary_failure_delay
        sa.retry_at = now + delay + sa.ep.jitter(delay * 2)
        sa.queue(self, now, front=True)

    def on_response(self, sa: IkeSa, payloads: list[Payload], now: float) -> None:
        spec = sa.spec
        if spec is None:
            return
        ns = notifies(payloads)
        if NotifyType.TEMPORARY_FAILURE in ns:
            self._retry(sa, now)
            return
        invalid_ke = ns.get(NotifyType.INVALID_KE_PAYLOAD)
        if invalid_ke is not None and len(invalid_ke.data) >= 2:
            wanted = struct.unpack("!H", invalid_ke.data[:2])[0]
            ours = {t.id for p in spec.ike_proposals for t in p.of_type(TransformType.KE)}
            if wanted in ours and wanted != self.group and self.collision is None:
                self.group = wanted
                self._retry(sa, now)
                return
        err = error_notify(payloads)
        sa_p, nonce, ke_p = (
            first(payloads, SaPayload),
            first(payloads, NoncePayload),
            first(payloads, KePayload),
        )
        reason = name_of(NotifyType, err.notify_type) if err else ""
        chosen: Proposal | None = None
        if not reason:
            if not (
                isinstance(sa_p, SaPayload)
                and isinstance(nonce, NoncePayload)
                and isinstance(ke_p, KePayload)
            ):
                reason = "response lacks SA, Nonce or KE"
            elif len(sa_p.proposals) != 1 or not proposal_is_acceptable(
                spec.ike_proposals, sa_p.proposals[0]
            ):
                reason = "peer chose a proposal we did not offer"
            elif (
                len(sa_p.proposals[0].spi) != 8
                or ke_p.group != self.group
                or ke_group(sa_p.proposals[0]) != self.group
            ):
                reason = "bad SPI or KE group in the answer"
            else:
                chosen = sa_p.proposals[0]
        if (
            chosen is None
            or self.ke is None
            or not isinstance(nonce, NoncePayload)
            or not isinstance(ke_p, KePayload)
        ):
            sa.emit(
                NegotiationFailed(
                    sa.conn_name,
                    sa.id,
                    None,
                    f"IKE rekey: {reason}",
                    ike_offer(spec.ike_proposals),
                    ike_offer(sa_p.proposals if isinstance(sa_p, SaPayload) else ()),
                    sa.remote,
                )
            )
            if self.collision is not None:
                move_children(sa, self.collision, now)
            else:
                sa.rekey_at = now + 60.0
            return
        try:
            shared = self.ke.shared_secret(ke_p.data)
        except CryptoError:
            sa.rekey_at = now + 60.0
            return
        new = _new_sa(sa, True, self.spi, chosen.spi, chosen, shared, self.ni, nonce.data, now)
        peer_new = self.collision
        if (
            peer_new is not None
            and peer_new.rekey_nonces is not None
            and peer_new.state == IkeState.ESTABLISHED
        ):
            if min(self.ni, nonce.data) < min(peer_new.rekey_nonces):
                # Ours holds the lowest nonce: it is redundant; the peer deletes the old SA.
                move_children(sa, peer_new, now)
                new.delete(now, "redundant after IKE rekey collision", notify_peer=True)
                return
            # We won: the peer deletes its redundant SA (peer_new); should that delete never
            # come (its response to us was lost), drop it ourselves later.
            peer_new.expire_at = now + sa.ep.config.half_open_timeout
        move_children(sa, new, now)
        sa.delete(now, "rekeyed", notify_peer=True)

    def on_give_up(self, sa: IkeSa, now: float) -> None:
        pass


def start(sa: IkeSa, now: float) -> None:
    if any(isinstance(t, IkeRekeyTask) for t in sa.tasks) or (
        sa.outstanding is not None and isinstance(sa.outstanding.task, IkeRekeyTask)
    ):
        return
    sa.queue(IkeRekeyTask(), now)


def handle_request(sa: IkeSa, payloads: list[Payload], now: float) -> list[Payload]:
    from xfrmctl.ike.child_create import CreateChildTask, busy_with

    if busy_with(sa, (CreateChildTask,)) or sa.spec is None:
        return [NotifyPayload(NotifyType.TEMPORARY_FAILURE)]
    sa_p, nonce, ke_p = (
        first(payloads, SaPayload),
        first(payloads, NoncePayload),
        first(payloads, KePayload),
    )
    if not (
        isinstance(sa_p, SaPayload)
        and isinstance(nonce, NoncePayload)
        and isinstance(ke_p, KePayload)
    ):
        raise RemoteProtocolError("IKE rekey request lacks SA, Nonce or KE")
    chosen = select_proposal(sa.spec.ike_proposals, sa_p.proposals)
    if chosen is None:
        sa.emit(
            NegotiationFailed(
                sa.conn_name,
                sa.id,
                None,
                "NO_PROPOSAL_CHOSEN",
                ike_offer(sa.spec.ike_proposals),
                ike_offer(sa_p.proposals),
                sa.remote,
            )
        )
        return [NotifyPayload(NotifyType.NO_PROPOSAL_CHOSEN)]
    if len(chosen.spi) != 8:
        raise RemoteProtocolError("IKE rekey proposal without an 8-byte SPI")
    group = ke_group(chosen)
    if ke_p.group != group:
        return [NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, struct.pack("!H", group))]
    try:
        ke = new_key_exchange(KeId(group))
        shared = ke.shared_secret(ke_p.data)
    except (CryptoError, ValueError) as exc:
        raise RemoteProtocolError(f"bad KE payload: {exc}", NotifyType.NO_PROPOSAL_CHOSEN) from None
    nr = sa.ep.random(NONCE_SIZE)
    spi_r = sa.ep._new_spi()
    new = _new_sa(sa, False, chosen.spi, spi_r, chosen, shared, nonce.data, nr, now)
    ours = sa.outstanding.task if sa.outstanding else None
    if isinstance(ours, IkeRekeyTask):
        ours.collision = new  # resolved when our own response arrives
    else:
        sa.tasks = type(sa.tasks)(t for t in sa.tasks if not isinstance(t, IkeRekeyTask))
        move_children(sa, new, now)
    answer = Proposal(chosen.protocol, chosen.transforms, chosen.num, spi_r)
    return [SaPayload((answer,)), NoncePayload(nr), KePayload(group, ke.public_value())]
