"""SAs: the requests that add, update, delete, read, flush and allocate them (bodies packed by
xfrmctl.kernel.wire), and SAs decoded from what the kernel sends (replies, dumps, events)."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from typing import Any

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST

from xfrmctl.kernel import wire
from xfrmctl.kernel.errors import ErrorContext
from xfrmctl.kernel.fields import (
    DecodeError,
    cstr,
    get_lifetime,
    get_mark,
    get_selector,
    is_zero,
    unpack_addr,
)
from xfrmctl.kernel.marshal import decode_replies
from xfrmctl.kernel.messages import (
    AE_LVAL,
    AE_RVAL,
    OFFLOAD_INBOUND,
    OFFLOAD_PACKET,
    SELECTOR,
    STATE_ESN,
    USERSA_ID,
    USERSA_INFO,
    Msg,
    field_offset,
    fields_size,
    message_type,
)
from xfrmctl.kernel.socket import Connection, Request
from xfrmctl.kernel.types import (
    SA,
    Address,
    Aead,
    Auth,
    Comp,
    Counters,
    Crypt,
    Encap,
    Mark,
    Mode,
    Offload,
    Proto,
    ReplayState,
    SaCounters,
    SaDir,
    SaId,
    Selector,
    SpiRequest,
)

CREATE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
ACKED = NLM_F_REQUEST | NLM_F_ACK

SaKey = tuple[Address, int, Proto]  # how the kernel finds an SA (RFC 4301 §4.1)


def _module(proto: Proto, family: int) -> str:
    base = {Proto.ESP: "esp", Proto.AH: "ah", Proto.COMP: "ipcomp"}[proto]
    return base + ("6" if family == 10 else "4")


def error_context(sa: SA) -> ErrorContext:
    algs: dict[str, str] = {}
    for kind in ("aead", "crypt", "auth", "comp"):
        alg = getattr(sa, kind)
        if alg is not None:
            algs[kind] = alg.name
    return ErrorContext(sa.id, _module(sa.proto, sa.family), algs)


def decode_sa(msg: Any) -> SA:
    """An SA from NEWSA/UPDSA/EXPIRE fields (or an XFRMA_SA attribute) and the message's NLAs."""
    try:
        return _decode_sa(msg, msg)
    except (KeyError, TypeError, ValueError) as exc:
        raise DecodeError(f"cannot decode an SA from the kernel: {exc}") from exc


def _decode_sa(info: Any, nlas: Any) -> SA:
    family = info["family"]
    aead = crypt = auth = comp = None
    if (raw := nlas.get_attr("XFRMA_ALG_AEAD")) is not None:
        aead = Aead(cstr(raw["alg_name"]), raw["alg_key"], raw["alg_icv_len"])
    if (raw := nlas.get_attr("XFRMA_ALG_CRYPT")) is not None:
        crypt = Crypt(cstr(raw["alg_name"]), raw["alg_key"])
    if (raw := nlas.get_attr("XFRMA_ALG_AUTH_TRUNC")) is not None:
        auth = Auth(cstr(raw["alg_name"]), raw["alg_key"], raw["alg_trunc_len"])
    elif (raw := nlas.get_attr("XFRMA_ALG_AUTH")) is not None:
        auth = Auth(cstr(raw["alg_name"]), raw["alg_key"], 96)
    if (raw := nlas.get_attr("XFRMA_ALG_COMP")) is not None:
        comp = Comp(cstr(raw["alg_name"]))
    window = info["replay_window"]
    if (raw := nlas.get_attr("XFRMA_REPLAY_ESN_VAL")) is not None:
        window = raw["replay_window"]
    encap = None
    if (raw := nlas.get_attr("XFRMA_ENCAP")) is not None:
        oa = None if is_zero(raw["encap_oa"]) else unpack_addr(raw["encap_oa"], family)
        encap = Encap(raw["encap_sport"], raw["encap_dport"], raw["encap_type"], oa)
    offload = None
    if (raw := nlas.get_attr("XFRMA_OFFLOAD_DEV")) is not None:
        flags = raw["flags"]
        offload = Offload(
            raw["ifindex"], bool(flags & OFFLOAD_INBOUND), bool(flags & OFFLOAD_PACKET)
        )
    selector: Selector | None = get_selector(info, family)
    counters = Counters(
        info["cur_bytes"],
        info["cur_packets"],
        info["cur_add_time"],
        info["cur_use_time"],
        info["stats_replay"],
        info["stats_integrity_failed"],
    )
    return SA(
        src=unpack_addr(info["saddr"], family),
        dst=unpack_addr(info["id_daddr"], family),
        spi=info["id_spi"],
        proto=Proto(info["id_proto"]),
        mode=Mode(info["mode"]),
        reqid=info["reqid"],
        aead=aead,
        crypt=crypt,
        auth=auth,
        comp=comp,
        selector=selector,
        lifetime=get_lifetime(info),
        replay_window=window,
        esn=bool(info["flags"] & STATE_ESN),
        encap=encap,
        mark=get_mark(nlas),
        if_id=nlas.get_attr("XFRMA_IF_ID") or 0,
        offload=offload,
        direction=SaDir(nlas.get_attr("XFRMA_SA_DIR") or 0),
        flags=info["flags"] & ~STATE_ESN,
        tfc_pad=nlas.get_attr("XFRMA_TFCPAD") or 0,
        counters=counters,
        seq=info["seq"],
    )


def decode_sa_attr(msg: Any) -> SA:
    """The SA inside a DELSA notification (xfrm_usersa_id + XFRMA_SA)."""
    info = msg.get_attr("XFRMA_SA")
    if info is None:
        raise DecodeError("DELSA notification without XFRMA_SA")
    try:
        return _decode_sa(info, msg)
    except (KeyError, TypeError, ValueError) as exc:
        raise DecodeError(f"cannot decode an SA from the kernel: {exc}") from exc


# --- requests (batchable) -----------------------------------------------------------------------


def add_request(sa: SA) -> Request:
    return _sa_request(Msg.NEWSA, sa, CREATE)


def update_request(sa: SA) -> Request:
    return _sa_request(Msg.UPDSA, sa, ACKED)


def _sa_request(msg_type: int, sa: SA, flags: int) -> Request:
    sa.check_installable()
    return Request(msg_type, wire.sa_body(sa), flags, source=sa, context=error_context)


def delete_request(sa_id: SaId, mark: Mark | None = None) -> Request:
    return _id_request(Msg.DELSA, sa_id, mark, ACKED)


def get_request(sa_id: SaId, mark: Mark | None = None) -> Request:
    return _id_request(Msg.GETSA, sa_id, mark, NLM_F_REQUEST)


def _id_request(msg_type: int, sa_id: SaId, mark: Mark | None, flags: int) -> Request:
    """`mark` overrides the one `sa_id` carries (kept for callers that pass it apart)."""
    body = wire.sa_id_body(sa_id, mark if mark is not None else sa_id.mark)
    return Request(msg_type, body, flags, source=sa_id, context=ErrorContext)


def allocspi_request(req: SpiRequest) -> Request:
    """ALLOCSPI for a larval inbound SA; the reply (a NEWSA) carries the SPI chosen."""
    body = wire.allocspi_body(req)
    return Request(Msg.ALLOCSPI, body, NLM_F_REQUEST, source=req, context=_allocspi_ctx)


def _allocspi_ctx(req: SpiRequest) -> ErrorContext:
    return ErrorContext(req, _module(req.proto, req.family))


# --- operations ---------------------------------------------------------------------------------


async def add_sa(conn: Connection, sa: SA) -> None:
    await conn.request(add_request(sa))


async def update_sa(conn: Connection, sa: SA) -> None:
    """Replace an SA, typically the larval state ALLOCSPI created, keeping its SPI."""
    await conn.request(update_request(sa))


async def delete_sa(conn: Connection, sa_id: SaId, mark: Mark | None = None) -> None:
    await conn.request(delete_request(sa_id, mark))


async def get_sa(conn: Connection, sa_id: SaId, mark: Mark | None = None) -> SA:
    replies = await conn.request(get_request(sa_id, mark))
    if not replies:
        raise DecodeError(f"the kernel answered GETSA for {sa_id} with nothing")
    return decode_sa(replies[0])


async def dump_sas(conn: Connection) -> AsyncIterator[SA]:
    async for messages in conn.dump_raw(Msg.GETSA, wire.SA_DUMP_BODY, ErrorContext("SA dump")):
        for reply in decode_replies([m for m in messages if message_type(m) == Msg.NEWSA]):
            yield decode_sa(reply)


def decode_sa_key(msg: Any) -> SaKey:
    """What the kernel finds an SA by (destination, SPI, protocol; RFC 4301 §4.1), from a
    NEWSA message: all a drift reconcile needs of each dumped SA, without decode_sa's keys,
    selector, lifetimes and counters (issue 15)."""
    try:
        return unpack_addr(msg["id_daddr"], msg["family"]), msg["id_spi"], Proto(msg["id_proto"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DecodeError(f"cannot decode an SA from the kernel: {exc}") from exc


# Where decode_sa_key's fields sit in a NEWSA message (nlmsghdr, then xfrm_usersa_info).
_SA_ID = struct.Struct("=16s4sB")  # xfrm_id: daddr, spi (network order), proto
_SA_ID_AT = 16 + fields_size(SELECTOR)
_SA_FAMILY = struct.Struct("=H")
_SA_FAMILY_AT = 16 + field_offset(USERSA_INFO, "family")
_SA_MIN = 16 + fields_size(USERSA_INFO)


def _key(daddr: bytes, spi: bytes, family: int, proto: int) -> SaKey:
    """An SA key from the raw xfrm_id fields (SPI in network order) and the family."""
    try:
        return unpack_addr(daddr, family), int.from_bytes(spi, "big"), Proto(proto)
    except ValueError as exc:
        raise DecodeError(f"cannot decode an SA from the kernel: {exc}") from exc


def sa_key_in_place(raw: bytes) -> SaKey:
    """decode_sa_key's answer read straight from a NEWSA message's fixed part: a reconcile
    reads every SA in the SAD, and decoding each in full was most of its cost (issue 15)."""
    if len(raw) < _SA_MIN:
        raise DecodeError(f"cannot decode an SA from the kernel: {len(raw)}-byte message")
    daddr, spi, proto = _SA_ID.unpack_from(raw, _SA_ID_AT)
    (family,) = _SA_FAMILY.unpack_from(raw, _SA_FAMILY_AT)
    return _key(daddr, spi, family, proto)


# xfrm_lifetime_cur's bytes, packets, add and use time, then xfrm_stats (replay window
# skipped): replays and integrity failures.
_SA_COUNTERS = struct.Struct("=QQQQ4xII")
_SA_COUNTERS_AT = 16 + field_offset(USERSA_INFO, "cur_bytes")


def sa_counters_in_place(raw: bytes) -> tuple[SaKey, Counters]:
    """An SA's key and counters straight from a NEWSA message's fixed part: a metrics scrape
    reads every SA, and decoding each in full (keys included) took over 30 s of an emulated
    guest at 20,000 SAs (issue 15)."""
    key = sa_key_in_place(raw)
    return key, Counters(*_SA_COUNTERS.unpack_from(raw, _SA_COUNTERS_AT))


# A DELSA notification opens with xfrm_usersa_id (the deleted SA follows as XFRMA_SA).
_DELETED_ID = struct.Struct("=16s4sHB")  # daddr, spi (network order), family, proto
_DELETED_MIN = 16 + fields_size(USERSA_ID)


def deleted_sa_key_in_place(data: bytes, offset: int, length: int) -> SaKey | None:
    """(destination, SPI, protocol) of the DELSA notification at `offset`, read in place,
    or None if it does not parse: enough to tell whether the SA was one of ours before
    decoding it (issue 15: a rekey storm echoes every old SA we delete)."""
    if length < _DELETED_MIN:
        return None
    daddr, spi, family, proto = _DELETED_ID.unpack_from(data, offset + 16)
    try:
        return _key(daddr, spi, family, proto)
    except DecodeError:
        return None


async def dump_sa_keys(conn: Connection) -> AsyncIterator[SaKey]:
    """The (destination, SPI, protocol) of every SA in the SAD."""
    async for messages in conn.dump_raw(Msg.GETSA, wire.SA_DUMP_BODY, ErrorContext("SA dump")):
        for raw in messages:
            if message_type(raw) == Msg.NEWSA:
                yield sa_key_in_place(raw)


async def dump_sa_counters(conn: Connection) -> AsyncIterator[tuple[SaKey, Counters]]:
    """The key and counters of every SA in the SAD, nothing decoded beyond them."""
    async for messages in conn.dump_raw(Msg.GETSA, wire.SA_DUMP_BODY, ErrorContext("SA dump")):
        for raw in messages:
            if message_type(raw) == Msg.NEWSA:
                yield sa_counters_in_place(raw)


async def flush_sas(conn: Connection, proto: Proto | None = None) -> None:
    body = wire.flush_sas_body(proto)
    await conn.request(Request(Msg.FLUSHSA, body, ACKED, ErrorContext("SA flush")))


async def allocate_spi(conn: Connection, req: SpiRequest) -> int:
    """Reserve a free SPI for an inbound SA (a larval state); UPDSA must follow within
    net.core.xfrm_acq_expires seconds (30 by default) or the kernel drops it."""
    replies = await conn.request(allocspi_request(req))
    if not replies:
        raise DecodeError("the kernel answered ALLOCSPI with nothing")
    spi: int = replies[0]["id_spi"]
    return spi


async def get_counters(
    conn: Connection, sa_id: SaId, src: Address, mark: Mark | None = None
) -> SaCounters:
    """Byte/packet counters and replay state (GETAE); cheaper than a full GETSA."""
    body = wire.aevent_body(sa_id, src, AE_RVAL | AE_LVAL, mark or sa_id.mark)
    replies = await conn.request(Request(Msg.GETAE, body, NLM_F_REQUEST, ErrorContext(sa_id)))
    if not replies:
        raise DecodeError(f"the kernel answered GETAE for {sa_id} with nothing")
    return decode_counters(replies[0])


async def set_replay_state(
    conn: Connection,
    sa_id: SaId,
    src: Address,
    replay: ReplayState,
    *,
    esn: bool,
    mark: Mark | None = None,
) -> None:
    """Set an SA's sequence numbers and replay window (NEWAE), e.g. after migrating it.

    For an ESN SA the window (and bitmap length) must match what the SA was installed with."""
    body = wire.aevent_body(sa_id, src, AE_RVAL, mark or sa_id.mark, replay, esn=esn)
    flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_REPLACE  # the kernel insists on REPLACE
    await conn.request(Request(Msg.NEWAE, body, flags, ErrorContext(sa_id)))


def decode_counters(msg: Any) -> SaCounters:
    family = msg["family"]
    sa_id = SaId(unpack_addr(msg["daddr"], family), msg["spi"], Proto(msg["proto"]), get_mark(msg))
    cur = msg.get_attr("XFRMA_LTIME_VAL")
    replay = None
    if (esn := msg.get_attr("XFRMA_REPLAY_ESN_VAL")) is not None:
        replay = ReplayState(
            (esn["oseq_hi"] << 32) | esn["oseq"],
            (esn["seq_hi"] << 32) | esn["seq"],
            esn["replay_window"],
            esn["bmp"],
        )
    elif (rs := msg.get_attr("XFRMA_REPLAY_VAL")) is not None:
        replay = ReplayState(rs["oseq"], rs["seq"], 32, rs["bitmap"].to_bytes(4, "little"))
    if cur is None:
        return SaCounters(sa_id, 0, 0, 0, 0, replay)
    return SaCounters(sa_id, cur["bytes"], cur["packets"], cur["add_time"], cur["use_time"], replay)
