"""Child SA negotiation shared by IKE_AUTH, CREATE_CHILD_SA and Child SA rekeying.

Builds the SA/TS/notify payloads of a request, picks the responder's answer (proposal and
narrowed selectors), and turns an agreed Child SA into keys and a `ChildSaReady` event.
"""

from __future__ import annotations

import math
import struct

from xfrmctl.ike import ipcomp, offers
from xfrmctl.ike.crypto.algorithms import encr_for, integ_for
from xfrmctl.ike.crypto.keys import derive_child_keys
from xfrmctl.ike.errors import RemoteProtocolError
from xfrmctl.ike.events import ChildSaReady, Lifetimes, NegotiationFailed, Offer
from xfrmctl.ike.exchanges import IkeState
from xfrmctl.ike.iana import EsnId, IntegId, NotifyType, ProtocolId, TransformType, name_of
from xfrmctl.ike.negotiation import error_notify
from xfrmctl.ike.payloads import NotifyPayload, Payload, SaPayload, TrafficSelector, TsPayload
from xfrmctl.ike.proposals import format_proposal, proposal_is_acceptable, select_proposal
from xfrmctl.ike.reqids import ReqidsExhausted
from xfrmctl.ike.sa import ChildSa, IkeSa
from xfrmctl.ike.spec import ChildSpec, Mode
from xfrmctl.ike.transforms import Proposal, Transform, kept
from xfrmctl.ike.ts import covered, narrow


def strip_ke(p: Proposal) -> Proposal:
    return Proposal(
        p.protocol, tuple(t for t in p.transforms if t.type != TransformType.KE), p.num, p.spi
    )


def pfs_group(spec: ChildSpec) -> int:
    for p in spec.proposals:
        for t in p.of_type(TransformType.KE):
            if t.id:
                return t.id
    return 0


def spi_bytes(spi: int) -> bytes:
    return struct.pack("!I", spi)


def request_payloads(
    spec: ChildSpec,
    spi_in: int,
    with_ke: bool,
    acquired: tuple[TrafficSelector, ...] | None = None,
    cpi: int = 0,
) -> list[Payload]:
    """SA, TSi, TSr and mode notifies for a Child SA we propose; IPCOMP_SUPPORTED with a
    non-zero `cpi`."""
    props = spec.proposals if with_ke else tuple(strip_ke(p) for p in spec.proposals)
    numbered = tuple(
        Proposal(p.protocol, p.transforms, i + 1, spi_bytes(spi_in)) for i, p in enumerate(props)
    )
    tsi = tuple(t.to_selector() for t in spec.local_ts)
    tsr = tuple(t.to_selector() for t in spec.remote_ts)
    if acquired:
        # The packet's own selectors go first (RFC 7296 §2.9) so the peer narrows to them.
        tsi = (acquired[0], *tsi)
        tsr = (acquired[1], *tsr) if len(acquired) > 1 else tsr
    out: list[Payload] = []
    if spec.mode == Mode.TRANSPORT:
        out.append(NotifyPayload(NotifyType.USE_TRANSPORT_MODE))
    if cpi:
        out.append(ipcomp.notify(cpi))
    out += [SaPayload(numbered), TsPayload(tsi), TsPayload(tsr, responder=True)]
    return out


def child_offer(
    proposals: tuple[Proposal, ...],
    local_ts: tuple[TrafficSelector, ...] = (),
    remote_ts: tuple[TrafficSelector, ...] = (),
) -> Offer:
    return Offer(
        proposals=proposals,
        proposal_text=tuple(format_proposal(p) for p in proposals),
        local_ts=local_ts,
        remote_ts=remote_ts,
    )


def _ts_payloads(payloads: list[Payload]) -> tuple[tuple[TrafficSelector, ...], ...]:
    tsi: tuple[TrafficSelector, ...] = ()
    tsr: tuple[TrafficSelector, ...] = ()
    for p in payloads:
        if isinstance(p, TsPayload):
            if p.responder:
                tsr = p.selectors
            else:
                tsi = p.selectors
    return tsi, tsr


def _has(payloads: list[Payload], notify: NotifyType) -> bool:
    return any(isinstance(p, NotifyPayload) and p.notify_type == notify for p in payloads)


def select(
    sa: IkeSa, payloads: list[Payload], ignore_ke: bool, wanted: ChildSpec | None = None
) -> tuple[ChildSpec, Proposal, tuple[TrafficSelector, ...], tuple[TrafficSelector, ...]]:
    """Responder: the child config, proposal and narrowed (TSi, TSr) for a request.

    Raises RemoteProtocolError carrying NO_PROPOSAL_CHOSEN or TS_UNACCEPTABLE, after
    reporting both sides' offers in a NegotiationFailed event.
    """
    sa_p = next((p for p in payloads if isinstance(p, SaPayload)), None)
    tsi, tsr = _ts_payloads(payloads)
    if sa_p is None or not tsi or not tsr:
        raise RemoteProtocolError("Child SA request without SA, TSi and TSr")
    transport = _has(payloads, NotifyType.USE_TRANSPORT_MODE)
    specs = [wanted] if wanted is not None else list(sa.spec.children if sa.spec else ())
    reason = NotifyType.TS_UNACCEPTABLE
    for spec in specs:
        n_tsi = narrow(tsi, [t.to_selector() for t in spec.remote_ts])
        n_tsr = narrow(tsr, [t.to_selector() for t in spec.local_ts])
        if not n_tsi or not n_tsr:
            continue
        if transport != (spec.mode == Mode.TRANSPORT):
            continue
        ours = [strip_ke(p) for p in spec.proposals] if ignore_ke else list(spec.proposals)
        chosen = select_proposal(ours, sa_p.proposals, ignore_ke=ignore_ke)
        if chosen is None:
            reason = NotifyType.NO_PROPOSAL_CHOSEN
            continue
        if len(chosen.spi) != 4:
            raise RemoteProtocolError(f"Child SA proposal with a {len(chosen.spi)}-byte SPI")
        return spec, chosen, n_tsi, n_tsr
    first = specs[0] if specs else None
    peer = offers.peer_seen(sa, sa_p.proposals, tsr, tsi)
    _failed(sa, first, name_of(NotifyType, reason), peer, initiator=False)
    raise RemoteProtocolError(f"no matching child: {reason.name}", reason)


def response_payloads(
    chosen: Proposal,
    spi_in: int,
    tsi: tuple[TrafficSelector, ...],
    tsr: tuple[TrafficSelector, ...],
    mode: Mode,
    cpi: int = 0,
) -> list[Payload]:
    answer = Proposal(chosen.protocol, chosen.transforms, chosen.num, spi_bytes(spi_in))
    out: list[Payload] = []
    if mode == Mode.TRANSPORT:
        out.append(NotifyPayload(NotifyType.USE_TRANSPORT_MODE))
    if cpi:
        out.append(ipcomp.notify(cpi))
    out += [SaPayload((answer,)), TsPayload(tsi), TsPayload(tsr, responder=True)]
    return out


def check_response(
    sa: IkeSa, spec: ChildSpec, payloads: list[Payload], ignore_ke: bool
) -> tuple[Proposal, tuple[TrafficSelector, ...], tuple[TrafficSelector, ...]]:
    """Initiator: validate the responder's choice; raises RemoteProtocolError (no notify)."""
    sa_p = next((p for p in payloads if isinstance(p, SaPayload)), None)
    tsi, tsr = _ts_payloads(payloads)
    if sa_p is None or len(sa_p.proposals) != 1 or not tsi or not tsr:
        raise RemoteProtocolError("Child SA response without one proposal, TSi and TSr", None)
    chosen = sa_p.proposals[0]
    ours = [strip_ke(p) for p in spec.proposals] if ignore_ke else list(spec.proposals)
    if not proposal_is_acceptable(ours, chosen, ignore_ke=ignore_ke) or len(chosen.spi) != 4:
        raise RemoteProtocolError(
            f"peer chose a proposal we did not offer: {format_proposal(chosen)}", None
        )
    if not covered(tsi, [t.to_selector() for t in spec.local_ts]) or not covered(
        tsr, [t.to_selector() for t in spec.remote_ts]
    ):
        raise RemoteProtocolError("peer returned traffic selectors wider than offered", None)
    if _has(payloads, NotifyType.USE_TRANSPORT_MODE) != (spec.mode == Mode.TRANSPORT):
        raise RemoteProtocolError("peer did not accept the requested mode", None)
    return chosen, tsi, tsr


def _failed(sa: IkeSa, spec: ChildSpec | None, reason: str, peer: Offer, initiator: bool) -> None:
    """A Child SA that did not come about: both sides' offers, for `explain` and metrics."""
    ours = offers.our_child(sa.spec, spec, sa)
    child = spec.name if spec else None
    sa.emit(
        NegotiationFailed(
            sa.conn_name, sa.id, child, reason, ours, peer, sa.remote, initiator=initiator
        )
    )


def _reqid(
    sa: IkeSa,
    spec: ChildSpec,
    local_ts: tuple[TrafficSelector, ...],
    remote_ts: tuple[TrafficSelector, ...],
    now: float,
    replaces: ChildSa | None,
    acquired: bool,
) -> int:
    """A rekey keeps its reqid; none left is NO_ADDITIONAL_SAS (RFC 7296 §3.10.1) for this
    Child SA only, before any key is derived."""
    if replaces:
        return replaces.reqid
    try:
        if acquired:
            return sa.ep.trap_reqid(sa.conn_name, spec.name, now)
        return sa.ep.reqid(sa.conn_name, spec.name, local_ts, remote_ts, now)
    except ReqidsExhausted as exc:
        raise RemoteProtocolError(str(exc), NotifyType.NO_ADDITIONAL_SAS) from None


def install(
    sa: IkeSa,
    spec: ChildSpec,
    chosen: Proposal,
    spi_in: int,
    exchange_initiator: bool,
    ni: bytes,
    nr: bytes,
    shared: bytes | None,
    local_ts: tuple[TrafficSelector, ...],
    remote_ts: tuple[TrafficSelector, ...],
    now: float,
    payloads: list[Payload],
    replaces: ChildSa | None = None,
    outbound_now: bool = False,
    cpis: tuple[int, int] = (0, 0),
    acquired: bool = False,
) -> ChildSa:
    """Derive KEYMAT (RFC 7296 §2.17), record the Child SA and emit ChildSaReady; `cpis` are
    the agreed IPComp CPIs (ours, the peer's), zero without IPComp. A Child SA a kernel
    ACQUIRE asked for (`acquired`) takes its trap's reqid, as strongSwan's: the kernel then
    replaces the larval state it made for the packet, whatever selectors were agreed."""
    if sa.crypto is None:
        raise RemoteProtocolError("no IKE keys for a Child SA", None)
    try:
        reqid = _reqid(sa, spec, local_ts, remote_ts, now, replaces, acquired)
    except RemoteProtocolError as exc:  # the initiator's was reported before (finish_child)
        if not exchange_initiator:
            peer = offers.peer_seen(sa, (chosen,), local_ts, remote_ts)
            _failed(sa, spec, str(exc), peer, initiator=False)
        raise
    chosen = kept(chosen)
    spi_out = int.from_bytes(chosen.spi, "big")
    encrs = chosen.of_type(TransformType.ENCR)
    integs = [t for t in chosen.of_type(TransformType.INTEG) if t.id != IntegId.NONE]
    encr_t: Transform | None = encrs[0] if encrs else None
    integ_t: Transform | None = integs[0] if integs else None
    encr_size = encr_for(encr_t).key_size if encr_t else 0
    integ_size = integ_for(integ_t).key_size if integ_t else 0
    keys = derive_child_keys(
        sa.crypto.prf, sa.crypto.keys.sk_d, ni, nr, shared, encr_size, integ_size
    )
    if exchange_initiator:
        e_out, a_out, e_in, a_in = keys.encr_i, keys.integ_i, keys.encr_r, keys.integ_r
    else:
        e_out, a_out, e_in, a_in = keys.encr_r, keys.integ_r, keys.encr_i, keys.integ_i
    esn = any(t.id == EsnId.ESN for t in chosen.of_type(TransformType.ESN))
    soft = spec.rekey_time - sa.ep.jitter(spec.rand_time) if spec.rekey_time > 0 else 0.0
    hard = spec.life_time if spec.life_time > 0 else math.inf
    child = ChildSa(
        spec,
        sa.ep.next_id(),
        reqid,
        ProtocolId(chosen.protocol),
        spi_in,
        spi_out,
        chosen,
        encr_t,
        integ_t,
        esn,
        spec.mode,
        local_ts,
        remote_ts,
        now + soft if soft > 0 else None,
        now + hard,
        tfc_padding=not _has(payloads, NotifyType.ESP_TFC_PADDING_NOT_SUPPORTED),
        lowest_nonce=min(ni, nr) if replaces else None,
        cpi_in=cpis[0],
        cpi_out=cpis[1],
    )
    owner = sa  # an IKE rekey may have completed while this exchange was in flight
    while owner.replaced_by is not None and owner.state != IkeState.ESTABLISHED:
        owner = owner.replaced_by
    owner.children.append(child)
    sa.emit(
        ChildSaReady(
            sa.conn_name,
            spec.name,
            child.unique_id,
            sa.id,
            spec.mode,
            child.protocol,
            spi_in,
            spi_out,
            sa.local[0],
            sa.remote[0],
            encr_t,
            integ_t,
            e_in,
            e_out,
            a_in,
            a_out,
            esn,
            local_ts,
            remote_ts,
            Lifetimes(
                int(soft) if soft > 0 else 0,
                int(hard) if hard != math.inf else 0,
                _soft_limit(sa, spec.rekey_bytes, spec.rand_bytes),
                spec.life_bytes,
                _soft_limit(sa, spec.rekey_packets, spec.rand_packets),
                spec.life_packets,
            ),
            sa.encap(),
            reqid,
            child.tfc_padding,
            replaces.spi_in if replaces else None,
            replaces.spi_out if replaces else None,
            format_proposal(chosen),
            spec.kernel,
            outbound_now,
            cpis[0],
            cpis[1],
        )
    )
    return child


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
    outbound_now: bool = False,
    cpi_in: int = 0,
    acquired: bool = False,
) -> ChildSa | None:
    """Initiator: install the Child SA from a response, or report why the peer refused it;
    `cpi_in` is the IPComp CPI we offered (0: none)."""
    err = error_notify(payloads)
    if err is not None or not any(isinstance(p, SaPayload) for p in payloads):
        reason = name_of(NotifyType, err.notify_type) if err else "no SA payload in response"
        _failed(
            sa, spec, reason, offers.peer_seen(sa, hidden=offers.hidden_by(reason)), initiator=True
        )
        return None
    try:
        chosen, tsi, tsr = check_response(sa, spec, payloads, ignore_ke)
        _reqid(sa, spec, tsi, tsr, now, replaces, acquired)  # none left: fails here, keyless
    except RemoteProtocolError as exc:
        _failed(sa, spec, str(exc), offers.peer_seen(sa), initiator=True)
        return None
    return install(
        sa,
        spec,
        chosen,
        spi_in,
        True,
        ni,
        nr,
        shared,
        tsi,
        tsr,
        now,
        payloads,
        replaces,
        outbound_now,
        ipcomp.agreed(cpi_in, payloads),
        acquired,
    )


def _soft_limit(sa: IkeSa, limit: int, rand: int) -> int:
    """A volume rekey limit less its random jitter (swanctl rand_bytes/rand_packets), so the
    Child SAs of many peers do not all rekey at once; 0 stays "no limit"."""
    if limit <= 0:
        return 0
    return max(1, limit - int(sa.ep.jitter(rand)))
