"""IKE SA rekeying (RFC 7296 §1.3.2, §2.18) and simultaneous IKE rekeys (§2.8.2).

The Child SAs move to the new IKE SA; the rekey initiator deletes the old one. When both peers
rekey at once, the new IKE SA from the exchange with the lowest nonce is deleted by its
initiator and the other initiator deletes the old IKE SA.
"""

from __future__ import annotations

from xfrmctl.ike import lifetimes
from xfrmctl.ike.crypto.errors import CryptoError
from xfrmctl.ike.crypto.keyexchange import KeyExchange, new_key_exchange
from xfrmctl.ike.crypto.keys import derive_rekeyed_ike_keys
from xfrmctl.ike.errors import LocalProtocolError, RemoteProtocolError
from xfrmctl.ike.events import IkeSaRekeyed, NegotiationFailed
from xfrmctl.ike.exchanges import IkeState, Transition
from xfrmctl.ike.iana import ExchangeType, KeId, NotifyType, name_of
from xfrmctl.ike.negotiation import (
    NONCE_SIZE,
    BadKePayload,
    error_notify,
    first,
    ike_algorithms,
    ike_offer,
    invalid_ke_answer,
    ke_group,
    notifies,
    numbered,
    respond_ke,
    retry_group,
)
from xfrmctl.ike.payloads import KePayload, NoncePayload, NotifyPayload, Payload, SaPayload
from xfrmctl.ike.proposals import format_proposal, proposal_is_acceptable, select_proposal
from xfrmctl.ike.sa import IkeCrypto, IkeSa, Task
from xfrmctl.ike.transforms import Proposal, kept

MAX_RETRIES = 5
RETRY_AFTER = 60.0  # a failed rekey is tried again this much later


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
    prf, integ, encr = ike_algorithms(chosen)
    keys = derive_rekeyed_ike_keys(
        old.crypto.prf, old.crypto.keys.sk_d, prf, integ, encr, shared, ni, nr, spi_i, spi_r
    )
    new.crypto = IkeCrypto(prf, integ, encr, keys, initiator)
    new.proposal = kept(chosen)
    new.lowest_nonce = min(ni, nr)
    new.transition(Transition.REKEY_MADE)
    new.established_at = now
    new.peer_id = old.peer_id
    new.nat_local, new.nat_remote = old.nat_local, old.nat_remote
    new.peer_fragmentation = old.peer_fragmentation
    new.peer_hash_algorithms = old.peer_hash_algorithms
    if old.spec is not None:
        lifetimes.schedule(new, old.spec, now, reauth_at=old.reauth_at)
    old.ep.register(new)
    return new


def move_children(old: IkeSa, new: IkeSa, now: float) -> None:
    new.children.extend(old.children)
    old.children = []
    for t in list(old.tasks):
        if not isinstance(t, IkeRekeyTask):
            new.tasks.append(t)
    old.tasks.clear()
    old.transition(Transition.REPLACED)
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


class IkeRekeyTask(Task):
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
        self.spi = sa.ep.new_spi()
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
            sa.rekey_at = now + RETRY_AFTER
            return
        delay = sa.ep.config.temporary_failure_delay
        sa.retry_at = now + delay + sa.ep.jitter(delay * 2)
        sa.queue(self, now, front=True)

    def on_response(self, sa: IkeSa, payloads: list[Payload], now: float) -> None:
        spec = sa.spec
        if spec is None:
            return
        if NotifyType.TEMPORARY_FAILURE in notifies(payloads):
            self._retry(sa, now)
            return
        wanted = retry_group(payloads, spec.ike_proposals, self.group or 0)
        if wanted is not None and self.collision is None:
            self.group = wanted
            self._retry(sa, now)
            return
        answer = self._check_answer(spec.ike_proposals, payloads)
        if isinstance(answer, str):
            sa_p = first(payloads, SaPayload)
            theirs = ike_offer(sa_p.proposals if sa_p is not None else ())
            ours = ike_offer(spec.ike_proposals)
            sa.emit(
                NegotiationFailed(
                    sa.conn_name, sa.id, None, f"IKE rekey: {answer}", ours, theirs, sa.remote
                )
            )
            self._failed(sa, now)
            return
        chosen, nonce, ke_p = answer
        try:
            shared = self.ke.shared_secret(ke_p.data) if self.ke is not None else None
        except CryptoError:
            shared = None
        if shared is None:
            sa.rekey_at = now + RETRY_AFTER
            return
        new = _new_sa(sa, True, self.spi, chosen.spi, chosen, shared, self.ni, nonce.data, now)
        if self._collision_lost(sa, new, now):
            return
        move_children(sa, new, now)
        sa.delete(now, "rekeyed", notify_peer=True)

    def _check_answer(
        self, offered: tuple[Proposal, ...], payloads: list[Payload]
    ) -> tuple[Proposal, NoncePayload, KePayload] | str:
        """The agreed proposal, nonce and KE, or why the answer is not acceptable."""
        err = error_notify(payloads)
        if err is not None:
            return name_of(NotifyType, err.notify_type)
        sa_p, nonce = first(payloads, SaPayload), first(payloads, NoncePayload)
        ke_p = first(payloads, KePayload)
        if sa_p is None or nonce is None or ke_p is None:
            return "response lacks SA, Nonce or KE"
        if len(sa_p.proposals) != 1 or not proposal_is_acceptable(offered, sa_p.proposals[0]):
            return "peer chose a proposal we did not offer"
        chosen = sa_p.proposals[0]
        if len(chosen.spi) != 8 or ke_p.group != self.group or ke_group(chosen) != self.group:
            return "bad SPI or KE group in the answer"
        return chosen, nonce, ke_p

    def _failed(self, sa: IkeSa, now: float) -> None:
        if self.collision is not None:
            move_children(sa, self.collision, now)  # the peer's rekey stands
        else:
            sa.rekey_at = now + RETRY_AFTER

    def _collision_lost(self, sa: IkeSa, new: IkeSa, now: float) -> bool:
        """Both rekeyed at once (RFC 7296 §2.8.2): the new SA of the exchange holding the
        lowest nonce is redundant. True when that is ours, which we then delete."""
        peer_new = self.collision
        if (
            peer_new is None
            or peer_new.lowest_nonce is None
            or peer_new.state != IkeState.ESTABLISHED
            or new.lowest_nonce is None
        ):
            return False
        if new.lowest_nonce < peer_new.lowest_nonce:
            # The peer deletes the old SA; its new one takes the children.
            move_children(sa, peer_new, now)
            new.delete(now, "redundant after IKE rekey collision", notify_peer=True)
            return True
        # We won: the peer deletes its redundant SA (peer_new); should that delete never come
        # (its response to us was lost), drop it ourselves later.
        peer_new.expire_at = now + sa.ep.config.half_open_timeout
        sa.ep.touch(peer_new)  # not linked to `sa`: its earlier deadline must be filed
        return False

    def on_dropped(self, sa: IkeSa, now: float) -> None:
        """Deleted by the peer mid collision: the peer's new IKE SA won and takes the children."""
        heir = self.collision
        if heir is not None and heir.state == IkeState.ESTABLISHED and sa.replaced_by is None:
            move_children(sa, heir, now)


def start(sa: IkeSa, now: float) -> None:
    if any(isinstance(t, IkeRekeyTask) for t in sa.tasks) or (
        sa.outstanding is not None and isinstance(sa.outstanding.task, IkeRekeyTask)
    ):
        return
    sa.queue(IkeRekeyTask(), now)


def handle_request(sa: IkeSa, payloads: list[Payload], now: float) -> list[Payload]:
    """Responder: make the new IKE SA, or leave the outcome to our own rekey in flight."""
    if sa.spec is None:
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
        return [invalid_ke_answer(group)]
    try:
        ke, shared = respond_ke(group, ke_p)
    except BadKePayload as exc:
        raise RemoteProtocolError(f"bad KE payload: {exc}", NotifyType.NO_PROPOSAL_CHOSEN) from None
    nr = sa.ep.random(NONCE_SIZE)
    spi_r = sa.ep.new_spi()
    new = _new_sa(sa, False, chosen.spi, spi_r, chosen, shared, nonce.data, nr, now)
    ours = sa.outstanding.task if sa.outstanding else None
    if isinstance(ours, IkeRekeyTask):
        ours.collision = new  # resolved when our own response arrives
    else:
        sa.tasks = type(sa.tasks)(t for t in sa.tasks if not isinstance(t, IkeRekeyTask))
        move_children(sa, new, now)
    answer = Proposal(chosen.protocol, chosen.transforms, chosen.num, spi_r)
    return [SaPayload((answer,)), NoncePayload(nr), KePayload(group, ke.public_value())]
