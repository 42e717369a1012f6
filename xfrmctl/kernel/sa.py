"""SAs: encode/decode xfrm_usersa_info and the requests that add, update, delete, read them."""

from __future__ import annotations

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
    mark_attr,
    pack_addr,
    put_lifetime,
    put_selector,
    unpack_addr,
)
from xfrmctl.kernel.messages import (
    AE_LVAL,
    AE_RVAL,
    OFFLOAD_INBOUND,
    OFFLOAD_PACKET,
    STATE_ESN,
    Msg,
    xfrm_aevent_id,
    xfrm_sa_dump_request,
    xfrm_usersa_flush,
    xfrm_usersa_id,
    xfrm_usersa_info,
    xfrm_userspi_info,
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
    Lifetime,
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
    family_of,
)

IPSEC_PROTO_ANY = 255
CREATE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
ACKED = NLM_F_REQUEST | NLM_F_ACK


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


def _fill_usersa(msg: Any, sa: SA) -> None:
    if sa.selector is not None:
        put_selector(msg, sa.selector)
    msg["id_daddr"] = pack_addr(sa.dst)
    msg["id_spi"] = sa.spi
    msg["id_proto"] = int(sa.proto)
    msg["saddr"] = pack_addr(sa.src)
    put_lifetime(msg, sa.lifetime)
    msg["reqid"] = sa.reqid
    msg["family"] = sa.family
    msg["mode"] = int(sa.mode)
    msg["seq"] = sa.seq
    msg["replay_window"] = wire.replay_windows(sa)[0]
    msg["flags"] = sa.flags | (STATE_ESN if sa.esn else 0)


def sa_attrs(sa: SA) -> list[tuple[str, Any]]:
    """The SA's NLAs for pyroute2's codec (the reference for wire.sa_attrs)."""
    attrs: list[tuple[str, Any]] = []
    if sa.aead is not None:
        attrs.append(
            ("XFRMA_ALG_AEAD", _alg(sa.aead.name, sa.aead.key, alg_icv_len=sa.aead.icv_bits))
        )
    if sa.crypt is not None:
        attrs.append(("XFRMA_ALG_CRYPT", _alg(sa.crypt.name, sa.crypt.key)))
    if sa.auth is not None:
        trunc = _alg(sa.auth.name, sa.auth.key, alg_trunc_len=sa.auth.trunc_bits)
        attrs.append(("XFRMA_ALG_AUTH_TRUNC", trunc))
    if sa.comp is not None:
        attrs.append(("XFRMA_ALG_COMP", _alg(sa.comp.name, b"")))
    esn_window = wire.replay_windows(sa)[1]
    if esn_window is not None:
        words = (esn_window + 31) // 32
        esn = {
            "bmp_len": words,
            "oseq": 0,
            "seq": 0,
            "oseq_hi": 0,
            "seq_hi": 0,
            "replay_window": esn_window,
            "bmp": bytes(4 * words),
        }
        attrs.append(("XFRMA_REPLAY_ESN_VAL", esn))
    if sa.encap is not None:
        encap = {
            "encap_type": sa.encap.type,
            "encap_sport": sa.encap.sport,
            "encap_dport": sa.encap.dport,
            "encap_oa": pack_addr(sa.encap.original),
        }
        attrs.append(("XFRMA_ENCAP", encap))
    attrs += mark_attr(sa.mark)
    if sa.if_id:
        attrs.append(("XFRMA_IF_ID", sa.if_id))
    if sa.tfc_pad:
        attrs.append(("XFRMA_TFCPAD", sa.tfc_pad))
    if sa.offload is not None:
        flags = wire.offload_flags(sa, sa.offload.inbound, sa.offload.packet)
        attrs.append(("XFRMA_OFFLOAD_DEV", {"ifindex": sa.offload.ifindex, "flags": flags}))
    if sa.direction != SaDir.UNSET:
        attrs.append(("XFRMA_SA_DIR", int(sa.direction)))
    return attrs


def _alg(name: str, key: bytes, **extra: int) -> dict[str, Any]:
    return {"alg_name": wire.alg_name(name), "alg_key_len": len(key) * 8, **extra, "alg_key": key}


def encode_sa(sa: SA) -> xfrm_usersa_info:
    """The SA as a pyroute2 message; requests send wire.sa_body(sa), the same bytes."""
    sa.check_installable()
    msg = xfrm_usersa_info()
    _fill_usersa(msg, sa)
    msg["attrs"] = sa_attrs(sa)
    return msg


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


def sa_id_msg(sa_id: SaId, mark: Mark | None = None) -> xfrm_usersa_id:
    msg = xfrm_usersa_id()
    msg["daddr"] = pack_addr(sa_id.dst)
    msg["spi"] = sa_id.spi
    msg["family"] = family_of(sa_id.dst)
    msg["proto"] = int(sa_id.proto)
    msg["attrs"] = mark_attr(mark)
    return msg


# --- requests (batchable) -----------------------------------------------------------------------


def add_request(sa: SA) -> Request:
    return _sa_request(Msg.NEWSA, sa, CREATE)


def update_request(sa: SA) -> Request:
    return _sa_request(Msg.UPDSA, sa, ACKED)


def _sa_request(msg_type: int, sa: SA, flags: int) -> Request:
    sa.check_installable()
    body = wire.sa_body(sa)
    return Request(
        msg_type, None, flags, body=body, source=sa, build=encode_sa, context=error_context
    )


def delete_request(sa_id: SaId, mark: Mark | None = None) -> Request:
    body = wire.sa_id_body(sa_id, mark)
    return Request(
        Msg.DELSA, None, ACKED, body=body, source=(sa_id, mark), build=_id_msg, context=_id_ctx
    )


def _id_msg(source: tuple[SaId, Mark | None]) -> xfrm_usersa_id:
    return sa_id_msg(*source)


def _id_ctx(source: tuple[SaId, Mark | None]) -> ErrorContext:
    return ErrorContext(source[0])


def allocspi_request(req: SpiRequest) -> Request:
    """ALLOCSPI for a larval inbound SA; the reply (a NEWSA) carries the SPI chosen."""
    body = wire.allocspi_body(req)
    return Request(
        Msg.ALLOCSPI,
        None,
        NLM_F_REQUEST,
        body=body,
        source=req,
        build=_allocspi_msg,
        context=_allocspi_ctx,
    )


def _allocspi_msg(req: SpiRequest) -> xfrm_userspi_info:
    """The ALLOCSPI request as a pyroute2 message (the reference for wire.allocspi_body)."""
    msg = xfrm_userspi_info()
    msg["id_daddr"] = pack_addr(req.dst)
    msg["id_proto"] = int(req.proto)
    msg["saddr"] = pack_addr(req.src)
    msg["family"] = req.family
    msg["reqid"] = req.reqid
    msg["mode"] = int(req.mode)
    msg["seq"] = req.seq
    put_lifetime(msg, Lifetime())
    msg["min"] = req.spis.lo
    msg["max"] = req.spis.hi
    msg["attrs"] = mark_attr(req.mark) + ([("XFRMA_IF_ID", req.if_id)] if req.if_id else [])
    return msg


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
    req = Request(Msg.GETSA, sa_id_msg(sa_id, mark), NLM_F_REQUEST, ErrorContext(sa_id))
    replies = await conn.request(req)
    if not replies:
        raise DecodeError(f"the kernel answered GETSA for {sa_id} with nothing")
    return decode_sa(replies[0])


async def dump_sas(conn: Connection) -> AsyncIterator[SA]:
    msg = xfrm_sa_dump_request()
    msg["attrs"] = []
    async for reply in conn.dump(Msg.GETSA, msg, ErrorContext("SA dump")):
        if reply["header"]["type"] == Msg.NEWSA:
            yield decode_sa(reply)


async def flush_sas(conn: Connection, proto: Proto | None = None) -> None:
    msg = xfrm_usersa_flush()
    msg["proto"] = IPSEC_PROTO_ANY if proto is None else int(proto)
    msg["attrs"] = []
    await conn.request(Request(Msg.FLUSHSA, msg, ACKED, ErrorContext("SA flush")))


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
    msg = _aevent(sa_id, src, AE_RVAL | AE_LVAL, mark)
    req = Request(Msg.GETAE, msg, NLM_F_REQUEST, ErrorContext(sa_id))
    replies = await conn.request(req)
    if not replies:
        raise DecodeError(f"the kernel answered GETAE for {sa_id} with nothing")
    return decode_counters(replies[0])


def _aevent(sa_id: SaId, src: Address, flags: int, mark: Mark | None) -> xfrm_aevent_id:
    msg = xfrm_aevent_id()
    msg["daddr"] = pack_addr(sa_id.dst)
    msg["spi"] = sa_id.spi
    msg["family"] = family_of(sa_id.dst)
    msg["proto"] = int(sa_id.proto)
    msg["saddr"] = pack_addr(src)
    msg["flags"] = flags
    msg["attrs"] = mark_attr(mark)
    return msg


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
    msg = _aevent(sa_id, src, AE_RVAL, mark)
    if esn:
        words = (replay.window + 31) // 32
        bitmap = replay.bitmap.ljust(4 * words, b"\0")[: 4 * words]
        value = {
            "bmp_len": words,
            "oseq": replay.oseq & 0xFFFFFFFF,
            "seq": replay.seq & 0xFFFFFFFF,
            "oseq_hi": replay.oseq >> 32,
            "seq_hi": replay.seq >> 32,
            "replay_window": replay.window,
            "bmp": bitmap,
        }
        msg["attrs"].append(("XFRMA_REPLAY_ESN_VAL", value))
    else:
        if replay.oseq >> 32 or replay.seq >> 32:
            raise ValueError(f"{sa_id}: 64-bit sequence numbers need an ESN SA")
        legacy = int.from_bytes(replay.bitmap[:4].ljust(4, b"\0"), "little")
        value = {"oseq": replay.oseq, "seq": replay.seq, "bitmap": legacy}
        msg["attrs"].append(("XFRMA_REPLAY_VAL", value))
    flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_REPLACE  # the kernel insists on REPLACE
    await conn.request(Request(Msg.NEWAE, msg, flags, ErrorContext(sa_id)))


def decode_counters(msg: Any) -> SaCounters:
    family = msg["family"]
    sa_id = SaId(unpack_addr(msg["daddr"], family), msg["spi"], Proto(msg["proto"]))
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
