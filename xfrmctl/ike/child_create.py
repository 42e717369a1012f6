"""CREATE_CHILD_SA for a new Child SA (RFC 7296 §1.3.1), with optional PFS and KE retry.

Also routes incoming CREATE_CHILD_SA requests: REKEY_SA goes to `child_rekey`, an IKE
proposal to `ike_rekey`, anything else makes a new Child SA here.
"""

from __future__ import annotations

import struct

from xfrmctl.ike import childsa
from xfrmctl.ike.crypto.errors import CryptoError
from xfrmctl.ike.crypto.keyexchange import KeyExchange, new_key_exchange
from xfrmctl.ike.errors import LocalProtocolError, RemoteProtocolError
from xfrmctl.ike.events import NegotiationFailed, Offer
from xfrmctl.ike.exchanges import IkeState
from xfrmctl.ike.iana import ExchangeType, KeId, NotifyType, ProtocolId, TransformType
from xfrmctl.ike.ike_auth import finish_child
from xfrmctl.ike.ike_init import first, ke_group, notifies
from xfrmctl.ike.message import Message
from xfrmctl.ike.payloads import (
    KePayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    SaPayload,
    TrafficSelector,
)
from xfrmctl.ike.sa import ChildSa, ChildState, IkeSa
from xfrmctl.ike.spec import ChildSpec

NONCE_SIZE = 32
MAX_RETRIES = 5


def busy_with(sa: IkeSa, kinds: tuple[type, ...]) -> bool:
    return sa.outstanding is not None and isinstance(sa.outstanding.task, kinds)


class CreateChildTask:
    """Initiator of a new Child SA; `ChildRekeyTask` extends it with REKEY_SA."""

    exchange = ExchangeType.CREATE_CHILD_SA
    follows_rekey = True

    def __init__(
        self, child_name: str, acquired: tuple[TrafficSelector, ...] | None = None
    ) -> None:
        self.child_name = child_name
        self.acquired = acquired
        self.spec: ChildSpec | None = None
        self.spi_in = 0
        self.ni = b""
        self.group: int | None = None
        self.ke: KeyExchange | None = None
        self.retries = 0

    def prefix(self, sa: IkeSa) -> list[Payload]:
        return []

    def replaces(self) -> ChildSa | None:
        return None

    def build(self, sa: IkeSa, now: float) -> list[Payload] | None:
        if sa.state != IkeState.ESTABLISHED or sa.spec is None:
            return None
        spec = self.spec or sa.spec.child(self.child_name)
        self.spec = spec
        if self.group is None:
            self.group = childsa.pfs_group(spec)
        self.spi_in = sa.ep.allocate_spi(spec.protocol)
        self.ni = sa.ep.random(NONCE_SIZE)
        payloads = self.prefix(sa)
        req = childsa.request_payloads(spec, self.spi_in, True, self.acquired)
        sa_idx = next(i for i, p in enumerate(req) if isinstance(p, SaPayload))
        extra: list[Payload] = [NoncePayload(self.ni)]
        self.ke = None
        if self.group:
            try:
                self.ke = new_key_exchange(KeId(self.group))
            except (CryptoError, ValueError) as exc:
                raise LocalProtocolError(
                    f"child {spec.name}: PFS group {self.group}: {exc}"
                ) from None
            extra.append(KePayload(self.group, self.ke.public_value()))
        return payloads + req[: sa_idx + 1] + extra + req[sa_idx + 1 :]

    def retry_later(self, sa: IkeSa, now: float) -> bool:
        self.retries += 1
        if self.retries > MAX_RETRIES:
            return False
        delay = sa.ep.config.temporary_failure_delay
        sa.retry_at = now + delay + sa.ep.jitter(delay * 2)
        sa.queue(self, now, front=True)
        return True

    def on_response(self, sa: IkeSa, payloads: list[Payload], now: float) -> None:
        spec = self.spec
        if spec is None:
            return
        ns = notifies(payloads)
        if NotifyType.TEMPORARY_FAILURE in ns and self.retry_later(sa, now):
            return
        invalid_ke = ns.get(NotifyType.INVALID_KE_PAYLOAD)
        if invalid_ke is not None and len(invalid_ke.data) >= 2:
            wanted = struct.unpack("!H", invalid_ke.data[:2])[0]
            ours = {t.id for p in spec.proposals for t in p.of_type(TransformType.KE)}
            if wanted in ours and wanted != self.group and self.retries < MAX_RETRIES:
                self.retries += 1
                self.group = wanted
                sa.queue(self, now, front=True)
                return
        shared = None
        sa_p = first(payloads, SaPayload)
        nonce = first(payloads, NoncePayload)
        if isinstance(sa_p, SaPayload) and sa_p.proposals and not isinstance(nonce, NoncePayload):
            payloads = [NotifyPayload(NotifyType.INVALID_SYNTAX)]
        if (
            isinstance(sa_p, SaPayload)
            and len(sa_p.proposals) == 1
            and isinstance(nonce, NoncePayload)
        ):
            group = ke_group(sa_p.proposals[0])
            ke_p = first(payloads, KePayload)
            if group:
                if self.ke is None or group != self.group or not isinstance(ke_p, KePayload):
                    self.failed(sa, now, "peer chose a KE group we did not send")
                    return
                try:
                    shared = self.ke.shared_secret(ke_p.data)
                except CryptoError as exc:
                    self.failed(sa, now, f"bad KE payload: {exc}")
                    return
        nr = nonce.data if isinstance(nonce, NoncePayload) else b""
        child = finish_child(
            sa, spec, self.spi_in, payloads, self.ni, nr, shared, now, False, self.replaces()
        )
        self.done(sa, child, now)

    def failed(self, sa: IkeSa, now: float, reason: str) -> None:
        spec = self.spec
        sa.emit(
            NegotiationFailed(
                sa.conn_name,
                sa.id,
                spec.name if spec else None,
                reason,
                childsa.child_offer(spec.proposals if spec else ()),
                Offer(),
                sa.remote,
            )
        )
        self.done(sa, None, now)

    def done(self, sa: IkeSa, child: ChildSa | None, now: float) -> None:
        """Hook for rekeying; a plain create has nothing more to do."""

    def on_give_up(self, sa: IkeSa, now: float) -> None:
        pass


def respond_child(
    sa: IkeSa,
    payloads: list[Payload],
    now: float,
    wanted: ChildSpec | None = None,
    replaces: ChildSa | None = None,
) -> tuple[list[Payload], ChildSa]:
    """Responder: negotiate and install a Child SA; returns the response and the new child."""
    spec, chosen, tsi, tsr = childsa.select(sa, payloads, ignore_ke=False, wanted=wanted)
    nonce = first(payloads, NoncePayload)
    if not isinstance(nonce, NoncePayload):
        raise RemoteProtocolError("CREATE_CHILD_SA without a nonce")
    group = ke_group(chosen)
    shared = None
    extra: list[Payload] = []
    if group:
        ke_p = first(payloads, KePayload)
        if not isinstance(ke_p, KePayload) or ke_p.group != group:
            raise RemoteProtocolError(
                "KE group differs from the chosen proposal",
                NotifyType.INVALID_KE_PAYLOAD,
                struct.pack("!H", group),
            )
        try:
            ke = new_key_exchange(KeId(group))
            shared = ke.shared_secret(ke_p.data)
        except (CryptoError, ValueError) as exc:
            raise RemoteProtocolError(
                f"bad KE payload: {exc}", NotifyType.NO_PROPOSAL_CHOSEN
            ) from None
        extra.append(KePayload(group, ke.public_value()))
    nr = sa.ep.random(NONCE_SIZE)
    spi_in = sa.ep.allocate_spi(spec.protocol)
    child = childsa.install(
        sa, spec, chosen, spi_in, False, nonce.data, nr, shared, tsr, tsi, now, payloads, replaces
    )
    resp = childsa.response_payloads(chosen, spi_in, tsi, tsr, spec.mode)
    idx = next(i for i, p in enumerate(resp) if isinstance(p, SaPayload))
    return [*resp[: idx + 1], NoncePayload(nr), *extra, *resp[idx + 1 :]], child


def handle_request(sa: IkeSa, msg: Message, payloads: list[Payload], now: float) -> list[Payload]:
    from xfrmctl.ike import child_rekey, ike_rekey

    ns = notifies(payloads)
    rekey = ns.get(NotifyType.REKEY_SA)
    sa_p = first(payloads, SaPayload)
    if rekey is not None and rekey.protocol in (ProtocolId.ESP, ProtocolId.AH):
        return child_rekey.handle_request(sa, payloads, rekey, now)
    if (
        isinstance(sa_p, SaPayload)
        and sa_p.proposals
        and all(p.protocol == ProtocolId.IKE for p in sa_p.proposals)
    ):
        return ike_rekey.handle_request(sa, payloads, now)
    if busy_with(sa, (ike_rekey.IkeRekeyTask,)):
        return [NotifyPayload(NotifyType.TEMPORARY_FAILURE)]
    response, _ = respond_child(sa, payloads, now)
    return response


__all__ = ["ChildState", "CreateChildTask", "handle_request", "respond_child"]
