"""CREATE_CHILD_SA for a new Child SA (RFC 7296 §1.3.1), with optional PFS and KE retry.

`CreateChildTask` is the initiator (Child SA rekeying extends it); `respond_child` is the
responder, reached through `create_child_sa`, which tells the three uses of the exchange apart.
"""

from __future__ import annotations

from xfrmctl.ike import childsa, ipcomp
from xfrmctl.ike.crypto.errors import CryptoError
from xfrmctl.ike.crypto.keyexchange import KeyExchange, new_key_exchange
from xfrmctl.ike.errors import LocalProtocolError, RemoteProtocolError
from xfrmctl.ike.events import NegotiationFailed, Offer
from xfrmctl.ike.exchanges import IkeState
from xfrmctl.ike.iana import ExchangeType, KeId, NotifyType
from xfrmctl.ike.negotiation import (
    NONCE_SIZE,
    BadKePayload,
    first,
    invalid_ke_answer,
    ke_group,
    notifies,
    respond_ke,
    retry_group,
)
from xfrmctl.ike.payloads import (
    KePayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    SaPayload,
    TrafficSelector,
)
from xfrmctl.ike.sa import ChildSa, IkeSa, Task
from xfrmctl.ike.spec import ChildSpec

MAX_RETRIES = 5


class CreateChildTask(Task):
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
        self.cpi_in = 0  # the IPComp CPI we offered, if any
        self.ni = b""
        self.group: int | None = None
        self.ke: KeyExchange | None = None
        self.retries = 0

    def prefix(self, sa: IkeSa) -> list[Payload]:
        return []

    def replaces(self) -> ChildSa | None:
        return None

    def outbound_now(self) -> bool:
        """Whether the host may send on the new SA at once (a rekey's concern)."""
        return False

    def build(self, sa: IkeSa, now: float) -> list[Payload] | None:
        if sa.state != IkeState.ESTABLISHED or sa.spec is None:
            return None
        spec = self.spec or sa.spec.child(self.child_name)
        self.spec = spec
        if self.group is None:
            self.group = childsa.pfs_group(spec)
        self.spi_in = sa.ep.allocate_spi(spec.protocol)
        self.cpi_in = ipcomp.allocate_cpi(sa) if ipcomp.usable(sa, spec) else 0
        self.ni = sa.ep.random(NONCE_SIZE)
        payloads = self.prefix(sa)
        req = childsa.request_payloads(spec, self.spi_in, True, self.acquired, self.cpi_in)
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
        wanted = retry_group(payloads, spec.proposals, self.group or 0)
        if wanted is not None and self.retries < MAX_RETRIES:
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
        child = childsa.finish_child(
            sa,
            spec,
            self.spi_in,
            payloads,
            self.ni,
            nr,
            shared,
            now,
            False,
            self.replaces(),
            self.outbound_now(),
            self.cpi_in,
            acquired=self.acquired is not None,
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
                initiator=True,
            )
        )
        self.done(sa, None, now)

    def done(self, sa: IkeSa, child: ChildSa | None, now: float) -> None:
        """Hook for rekeying; a plain create has nothing more to do."""


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
        if ke_p is None or ke_p.group != group:
            raise RemoteProtocolError(
                "KE group differs from the chosen proposal",
                NotifyType.INVALID_KE_PAYLOAD,
                invalid_ke_answer(group).data,
            )
        try:
            ke, shared = respond_ke(group, ke_p)
        except BadKePayload as exc:
            raise RemoteProtocolError(
                f"bad KE payload: {exc}", NotifyType.NO_PROPOSAL_CHOSEN
            ) from None
        extra.append(KePayload(group, ke.public_value()))
    nr = sa.ep.random(NONCE_SIZE)
    spi_in = sa.ep.allocate_spi(spec.protocol)
    cpis = ipcomp.respond(sa, spec, payloads)
    child = childsa.install(
        sa,
        spec,
        chosen,
        spi_in,
        False,
        nonce.data,
        nr,
        shared,
        tsr,
        tsi,
        now,
        payloads,
        replaces,
        cpis=cpis,
    )
    resp = childsa.response_payloads(chosen, spi_in, tsi, tsr, spec.mode, cpis[0])
    idx = next(i for i, p in enumerate(resp) if isinstance(p, SaPayload))
    return [*resp[: idx + 1], NoncePayload(nr), *extra, *resp[idx + 1 :]], child
