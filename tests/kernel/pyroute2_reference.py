"""The reference encoder: requests built with pyroute2's message classes and its own codec.

xfrmctl sends only what xfrmctl.kernel.wire packs; the tests compare those bytes with what
pyroute2 encodes for the same message from the C layout declared in xfrmctl.kernel.messages
(the classes that decode everything the kernel sends). This is that second, independent
encoder, kept out of the package so that nothing sends through it.
"""

from __future__ import annotations

from typing import Any

from xfrmctl.kernel import wire
from xfrmctl.kernel.fields import LIFETIME_NAMES
from xfrmctl.kernel.messages import (
    ADDR,
    STATE_ESN,
    XFRM_INF,
    xfrm_aevent_id,
    xfrm_msg,
    xfrm_userpolicy_id,
    xfrm_userpolicy_info,
    xfrm_usersa_flush,
    xfrm_usersa_id,
    xfrm_usersa_info,
    xfrm_userspi_info,
)
from xfrmctl.kernel.types import (
    SA,
    Action,
    Address,
    Dir,
    Lifetime,
    Mark,
    Policy,
    PolicyId,
    Proto,
    ReplayState,
    SaDir,
    SaId,
    Selector,
    SpiRequest,
    family_of,
)


def encode(msg: xfrm_msg, mtype: int) -> bytes:
    """The whole netlink message (header included) as pyroute2 encodes it; address fields
    left unset are all-zero, as in C."""
    msg["header"]["type"] = mtype
    msg["header"]["flags"] = 0
    msg["header"]["sequence_number"] = 0
    msg["header"]["pid"] = 0
    for name, fmt in msg.fields:
        if fmt == ADDR and msg.get(name) is None:
            msg[name] = bytes(16)
    msg.reset()
    msg.encode()
    return bytes(msg.data)


def pack_addr(addr: Address | None) -> bytes:
    return bytes(16) if addr is None else addr.packed.ljust(16, b"\0")


def put_selector(msg: dict[str, Any], sel: Selector, prefix: str = "sel_") -> None:
    msg[prefix + "daddr"] = pack_addr(sel.dst.network_address)
    msg[prefix + "saddr"] = pack_addr(sel.src.network_address)
    msg[prefix + "dport"] = sel.dport
    msg[prefix + "dport_mask"] = 0xFFFF if sel.dport else 0
    msg[prefix + "sport"] = sel.sport
    msg[prefix + "sport_mask"] = 0xFFFF if sel.sport else 0
    msg[prefix + "family"] = sel.family
    msg[prefix + "prefixlen_d"] = sel.dst.prefixlen
    msg[prefix + "prefixlen_s"] = sel.src.prefixlen
    msg[prefix + "proto"] = sel.proto
    msg[prefix + "ifindex"] = sel.ifindex
    msg[prefix + "user"] = 0


def put_lifetime(msg: dict[str, Any], lft: Lifetime, prefix: str = "") -> None:
    for ours, theirs in LIFETIME_NAMES:
        value = getattr(lft, ours)
        if value is None:
            value = 0 if ours.endswith("seconds") else XFRM_INF
        msg[prefix + theirs] = value


def mark_attrs(mark: Mark | None, if_id: int = 0) -> list[tuple[str, Any]]:
    attrs: list[tuple[str, Any]] = []
    if mark is not None:
        attrs.append(("XFRMA_MARK", {"v": mark.value, "m": mark.mask}))
    if if_id:
        attrs.append(("XFRMA_IF_ID", if_id))
    return attrs


def _alg(name: str, key: bytes, **extra: int) -> dict[str, Any]:
    return {"alg_name": wire.alg_name(name), "alg_key_len": len(key) * 8, **extra, "alg_key": key}


def sa_attrs(sa: SA) -> list[tuple[str, Any]]:
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
    attrs += mark_attrs(sa.mark, sa.if_id)
    if sa.tfc_pad:
        attrs.append(("XFRMA_TFCPAD", sa.tfc_pad))
    if sa.offload is not None:
        flags = wire.offload_flags(sa, sa.offload.inbound, sa.offload.packet)
        attrs.append(("XFRMA_OFFLOAD_DEV", {"ifindex": sa.offload.ifindex, "flags": flags}))
    if sa.direction != SaDir.UNSET:
        attrs.append(("XFRMA_SA_DIR", int(sa.direction)))
    return attrs


def encode_sa(sa: SA) -> xfrm_usersa_info:
    msg = xfrm_usersa_info()
    if sa.selector is not None:
        put_selector(msg, sa.selector)
    else:  # set here too for a copy of the fields nested in an attribute (XFRMA_SA)
        msg["sel_daddr"] = msg["sel_saddr"] = bytes(16)
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
    msg["attrs"] = sa_attrs(sa)
    return msg


def put_sa_id(msg: dict[str, Any], sa_id: SaId, mark: Mark | None) -> None:
    """The fields xfrm_usersa_id and xfrm_aevent_id share."""
    msg["daddr"] = pack_addr(sa_id.dst)
    msg["spi"] = sa_id.spi
    msg["family"] = family_of(sa_id.dst)
    msg["proto"] = int(sa_id.proto)
    msg["attrs"] = mark_attrs(mark)


def sa_id_msg(sa_id: SaId, mark: Mark | None = None) -> xfrm_usersa_id:
    msg = xfrm_usersa_id()
    put_sa_id(msg, sa_id, mark)
    return msg


def allocspi_msg(req: SpiRequest) -> xfrm_userspi_info:
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
    msg["attrs"] = mark_attrs(req.mark, req.if_id)
    return msg


def encode_policy(policy: Policy) -> xfrm_userpolicy_info:
    msg = xfrm_userpolicy_info()
    put_selector(msg, policy.selector)
    put_lifetime(msg, policy.lifetime)
    msg["priority"] = policy.priority
    msg["index"] = policy.index
    msg["dir"] = int(policy.dir)
    msg["action"] = int(policy.action)
    msg["pflags"] = policy.flags
    msg["share"] = 0
    attrs: list[tuple[str, Any]] = []
    if policy.templates:
        attrs.append(("XFRMA_TMPL", wire.templates(policy)))
    msg["attrs"] = attrs + mark_attrs(policy.mark, policy.if_id)
    return msg


def policy_id_msg(pid: PolicyId, index: int = 0) -> xfrm_userpolicy_id:
    msg = xfrm_userpolicy_id()
    put_selector(msg, pid.selector)
    msg["index"] = index
    msg["dir"] = int(pid.dir)
    msg["attrs"] = mark_attrs(pid.mark, pid.if_id)
    return msg


def flush_sas_msg(proto: Proto | None) -> xfrm_usersa_flush:
    msg = xfrm_usersa_flush()
    msg["proto"] = 255 if proto is None else int(proto)
    msg["attrs"] = []
    return msg


def aevent_msg(
    sa_id: SaId,
    src: Address,
    flags: int,
    mark: Mark | None,
    replay: ReplayState | None = None,
    *,
    esn: bool = False,
) -> xfrm_aevent_id:
    msg = xfrm_aevent_id()
    put_sa_id(msg, sa_id, mark)
    msg["saddr"] = pack_addr(src)
    msg["flags"] = flags
    if replay is not None and esn:
        words = (replay.window + 31) // 32
        value = {
            "bmp_len": words,
            "oseq": replay.oseq & 0xFFFFFFFF,
            "seq": replay.seq & 0xFFFFFFFF,
            "oseq_hi": replay.oseq >> 32,
            "seq_hi": replay.seq >> 32,
            "replay_window": replay.window,
            "bmp": replay.bitmap.ljust(4 * words, b"\0")[: 4 * words],
        }
        msg["attrs"].append(("XFRMA_REPLAY_ESN_VAL", value))
    elif replay is not None:
        legacy = int.from_bytes(replay.bitmap[:4].ljust(4, b"\0"), "little")
        value = {"oseq": replay.oseq, "seq": replay.seq, "bitmap": legacy}
        msg["attrs"].append(("XFRMA_REPLAY_VAL", value))
    return msg


def socket_policy_msg(family: int, direction: Dir) -> xfrm_userpolicy_info:
    msg = xfrm_userpolicy_info()
    msg["sel_family"] = family
    put_lifetime(msg, Lifetime())
    msg["dir"] = int(direction)
    msg["action"] = int(Action.ALLOW)
    msg["attrs"] = []
    return msg
