"""Every request the kernel layer sends, as bytes: the one encoder of the XFRM netlink format.

A body is what follows nlmsghdr (`NLMSG_HDR`, packed by the socket). The encoders pack typed
objects (xfrmctl.kernel.types) with precompiled structs: pyroute2's declarative codec goes through
generic attribute lookups for every field and NLA, which costs more than the kernel's own work
on an SA or policy. pyroute2's message classes (messages.py) only decode what the kernel sends;
they stay the reference for the layout: tests/kernel/test_xfrm_roundtrip.py checks that these
bytes are what pyroute2 encodes for the same message, and that they decode back to the object.
"""

from __future__ import annotations

import struct
from socket import htonl, htons

from xfrmctl.kernel.messages import (
    OFFLOAD_INBOUND,
    OFFLOAD_IPV6,
    OFFLOAD_PACKET,
    STATE_ESN,
    USER_TMPL,
    XFRM_INF,
    Attr,
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

# The legacy replay_window field is a u8 and carries no ESN; beyond that, XFRMA_REPLAY_ESN_VAL.
LEGACY_REPLAY_MAX = 32
ZERO_ADDR = bytes(16)

NLMSG_HDR = struct.Struct("=IHHII")
_NLA_HDR = struct.Struct("=HH")
_SELECTOR = struct.Struct("=16s16sHHHHHBBB3xiI")  # ports already in network order
_LIFETIME_CFG = struct.Struct("=8Q")
# xfrm_usersa_info: selector, id (daddr, spi, proto), saddr, lft, curlft+stats (zero), rest.
_USERSA_INFO = struct.Struct("=56s16sIB3x16s64s44xIIHBBB7x")
_USERSPI_TAIL = struct.Struct("=II")
_USERSA_ID = struct.Struct("=16sIHBx")
_USERPOLICY_INFO = struct.Struct("=56s64s32xIIBBBB4x")
_USERPOLICY_ID = struct.Struct("=56sIB3x")
_ALGO = struct.Struct("=64sI")
_ALGO_X = struct.Struct("=64sII")  # xfrm_algo_auth / xfrm_algo_aead: one more u32
_REPLAY_ESN = struct.Struct("=6I")
_ENCAP = struct.Struct("=HHH2x16s")
_MARK = struct.Struct("=II")
_OFFLOAD = struct.Struct("=iB3x")
_AEVENT_ID = struct.Struct("=16sIHBx16sII")
_REPLAY_STATE = struct.Struct("=III")
_U32 = struct.Struct("=I")
_U8 = struct.Struct("=B")

_ZERO_SELECTOR = bytes(_SELECTOR.size)
_DEFAULT_LIFETIME_BYTES = _LIFETIME_CFG.pack(XFRM_INF, XFRM_INF, XFRM_INF, XFRM_INF, 0, 0, 0, 0)
IPSEC_PROTO_ANY = 255
# xfrm_dump_sa parses a GETSA dump request's body as attributes from offset 0: a struct there
# would be "bytes leftover after parsing attributes" in the kernel log on every dump.
SA_DUMP_BODY = b""
POLICY_DUMP_BODY = bytes(_USERPOLICY_ID.size)  # an all-zero xfrm_userpolicy_id (not read)
FLUSH_POLICIES_BODY = b""
# The shared default instances of the frozen dataclasses: an identity test skips the packing.
# (Slotted classes keep defaults in their fields, not as class attributes.)
_SA_LIFETIME: Lifetime = SA.__dataclass_fields__["lifetime"].default  # type: ignore[assignment]
_POLICY_LIFETIME: Lifetime = Policy.__dataclass_fields__["lifetime"].default  # type: ignore[assignment]


def pack_addr(addr: Address | None) -> bytes:
    return ZERO_ADDR if addr is None else addr.packed.ljust(16, b"\0")


def nla(ntype: int, payload: bytes) -> bytes:
    """One netlink attribute: the length excludes the padding to 4 bytes, as pyroute2 does."""
    size = 4 + len(payload)
    return _NLA_HDR.pack(size, ntype) + payload + bytes(-size % 4)


def selector(sel: Selector | None) -> bytes:
    if sel is None:
        return _ZERO_SELECTOR
    src, dst = sel.src, sel.dst
    return _SELECTOR.pack(
        dst.network_address.packed.ljust(16, b"\0"),
        src.network_address.packed.ljust(16, b"\0"),
        htons(sel.dport),
        0xFFFF if sel.dport else 0,
        htons(sel.sport),
        0xFFFF if sel.sport else 0,
        2 if src.version == 4 else 10,
        dst.prefixlen,
        src.prefixlen,
        sel.proto,
        sel.ifindex,
        0,
    )


def lifetime(lft: Lifetime) -> bytes:
    # "No limit" is XFRM_INF for bytes/packets but 0 for seconds: the kernel adds a seconds
    # limit to the SA's add time in a signed long, so XFRM_INF there expires the SA at once.
    if lft is _SA_LIFETIME or lft is _POLICY_LIFETIME:
        return _DEFAULT_LIFETIME_BYTES
    inf = XFRM_INF
    return _LIFETIME_CFG.pack(
        inf if lft.soft_bytes is None else lft.soft_bytes,
        inf if lft.hard_bytes is None else lft.hard_bytes,
        inf if lft.soft_packets is None else lft.soft_packets,
        inf if lft.hard_packets is None else lft.hard_packets,
        lft.soft_seconds or 0,
        lft.hard_seconds or 0,
        lft.soft_use_seconds or 0,
        lft.hard_use_seconds or 0,
    )


def mark_attrs(mark: Mark | None, if_id: int = 0) -> bytes:
    out = b"" if mark is None else nla(Attr.MARK, _MARK.pack(mark.value, mark.mask))
    if if_id:
        out += nla(Attr.IF_ID, _U32.pack(if_id))
    return out


# --- SAs ----------------------------------------------------------------------------------------


def replay_windows(sa: SA) -> tuple[int, int | None]:
    """(the u8 replay_window field, the XFRMA_REPLAY_ESN_VAL window or None)."""
    window = 0 if sa.direction == SaDir.OUT else sa.replay_window
    if sa.esn or window > LEGACY_REPLAY_MAX:
        return 0, window
    return window, None


def offload_flags(sa: SA, inbound: bool, packet: bool) -> int:
    flags = (OFFLOAD_INBOUND if inbound else 0) | (OFFLOAD_PACKET if packet else 0)
    return flags | (OFFLOAD_IPV6 if sa.family == 10 else 0)


def alg_name(name: str) -> bytes:
    raw = name.encode()
    if len(raw) >= 64:
        raise ValueError(f"algorithm name {name!r} is longer than 63 bytes")
    return raw


def esn_state(window: int, oseq: int = 0, seq: int = 0, bitmap: bytes = b"") -> bytes:
    """An xfrm_replay_state_esn: 64-bit sequence numbers split in halves, the bitmap cut or
    zero-padded to the window's whole 32-bit words."""
    words = (window + 31) // 32
    head = _REPLAY_ESN.pack(
        words, oseq & 0xFFFFFFFF, seq & 0xFFFFFFFF, oseq >> 32, seq >> 32, window
    )
    return head + bitmap[: 4 * words].ljust(4 * words, b"\0")


def usersa_info(sa: SA, legacy_window: int) -> bytes:
    family = 2 if sa.dst.version == 4 else 10
    return _USERSA_INFO.pack(
        selector(sa.selector),
        pack_addr(sa.dst),
        htonl(sa.spi),
        sa.proto,
        pack_addr(sa.src),
        lifetime(sa.lifetime),
        sa.seq,
        sa.reqid,
        family,
        sa.mode,
        legacy_window,
        sa.flags | (STATE_ESN if sa.esn else 0),
    )


def sa_attrs(sa: SA, esn_window: int | None) -> bytes:
    parts = []
    if (aead := sa.aead) is not None:
        head = _ALGO_X.pack(alg_name(aead.name), len(aead.key) * 8, aead.icv_bits)
        parts.append(nla(Attr.ALG_AEAD, head + aead.key))
    if (crypt := sa.crypt) is not None:
        parts.append(
            nla(Attr.ALG_CRYPT, _ALGO.pack(alg_name(crypt.name), len(crypt.key) * 8) + crypt.key)
        )
    if (auth := sa.auth) is not None:
        head = _ALGO_X.pack(alg_name(auth.name), len(auth.key) * 8, auth.trunc_bits)
        parts.append(nla(Attr.ALG_AUTH_TRUNC, head + auth.key))
    if sa.comp is not None:
        parts.append(nla(Attr.ALG_COMP, _ALGO.pack(alg_name(sa.comp.name), 0)))
    if esn_window is not None:
        parts.append(nla(Attr.REPLAY_ESN_VAL, esn_state(esn_window)))
    if (encap := sa.encap) is not None:
        raw = _ENCAP.pack(
            encap.type, htons(encap.sport), htons(encap.dport), pack_addr(encap.original)
        )
        parts.append(nla(Attr.ENCAP, raw))
    parts.append(mark_attrs(sa.mark, sa.if_id))
    if sa.tfc_pad:
        parts.append(nla(Attr.TFCPAD, _U32.pack(sa.tfc_pad)))
    if (off := sa.offload) is not None:
        flags = offload_flags(sa, off.inbound, off.packet)
        parts.append(nla(Attr.OFFLOAD_DEV, _OFFLOAD.pack(off.ifindex, flags)))
    if sa.direction != SaDir.UNSET:
        parts.append(nla(Attr.SA_DIR, _U8.pack(sa.direction)))
    return b"".join(parts)


def sa_body(sa: SA) -> bytes:
    """NEWSA/UPDSA: xfrm_usersa_info and the SA's attributes."""
    legacy, esn = replay_windows(sa)
    return usersa_info(sa, legacy) + sa_attrs(sa, esn)


def sa_id_body(sa_id: SaId, mark: Mark | None = None) -> bytes:
    """DELSA/GETSA: xfrm_usersa_id and the mark."""
    family = 2 if sa_id.dst.version == 4 else 10
    raw = _USERSA_ID.pack(pack_addr(sa_id.dst), htonl(sa_id.spi), family, sa_id.proto)
    return raw + mark_attrs(mark)


def flush_sas_body(proto: Proto | None = None) -> bytes:
    """FLUSHSA: xfrm_usersa_flush (one protocol, or all of them), padded to 4 bytes."""
    return _U8.pack(IPSEC_PROTO_ANY if proto is None else proto) + bytes(3)


def aevent_body(
    sa_id: SaId,
    src: Address,
    flags: int,
    mark: Mark | None = None,
    replay: ReplayState | None = None,
    *,
    esn: bool = False,
) -> bytes:
    """GETAE/NEWAE: xfrm_aevent_id, the mark and, to set them, the SA's sequence numbers and
    replay window (XFRMA_REPLAY_ESN_VAL for an ESN SA, else the 32-bit XFRMA_REPLAY_VAL)."""
    raw = _AEVENT_ID.pack(
        pack_addr(sa_id.dst),
        htonl(sa_id.spi),
        family_of(sa_id.dst),
        sa_id.proto,
        pack_addr(src),
        flags,
        0,
    )
    raw += mark_attrs(mark)
    if replay is None:
        return raw
    if esn:
        state = esn_state(replay.window, replay.oseq, replay.seq, replay.bitmap)
        return raw + nla(Attr.REPLAY_ESN_VAL, state)
    if replay.oseq >> 32 or replay.seq >> 32:
        raise ValueError(f"{sa_id}: 64-bit sequence numbers need an ESN SA")
    legacy = int.from_bytes(replay.bitmap[:4].ljust(4, b"\0"), "little")
    return raw + nla(Attr.REPLAY_VAL, _REPLAY_STATE.pack(replay.oseq, replay.seq, legacy))


def allocspi_body(req: SpiRequest) -> bytes:
    """ALLOCSPI: xfrm_userspi_info (a larval SA's usersa_info and the SPI range)."""
    info = _USERSA_INFO.pack(
        _ZERO_SELECTOR,
        pack_addr(req.dst),
        0,
        req.proto,
        pack_addr(req.src),
        _DEFAULT_LIFETIME_BYTES,
        req.seq,
        req.reqid,
        req.family,
        req.mode,
        0,
        0,
    )
    return info + _USERSPI_TAIL.pack(req.spis.lo, req.spis.hi) + mark_attrs(req.mark, req.if_id)


# --- policies -----------------------------------------------------------------------------------


def templates(policy: Policy) -> bytes:
    """The XFRMA_TMPL payload: an array of xfrm_user_tmpl without NLA headers."""
    rows = []
    for t in policy.templates:
        family = family_of(t.dst) if t.dst is not None else policy.selector.family
        rows.append(
            USER_TMPL.pack(
                pack_addr(t.dst),
                htonl(t.spi),
                t.proto,
                family,
                pack_addr(t.src),
                t.reqid,
                t.mode,
                t.share,
                t.optional,
                t.aalgos,
                t.ealgos,
                t.calgos,
            )
        )
    return b"".join(rows)


def policy_body(policy: Policy) -> bytes:
    """NEWPOLICY/UPDPOLICY: xfrm_userpolicy_info, the templates, mark and if_id."""
    info = _USERPOLICY_INFO.pack(
        selector(policy.selector),
        lifetime(policy.lifetime),
        policy.priority,
        policy.index,
        policy.dir,
        policy.action,
        policy.flags,
        0,
    )
    tmpl = nla(Attr.TMPL, templates(policy)) if policy.templates else b""
    return info + tmpl + mark_attrs(policy.mark, policy.if_id)


def socket_policy(family: int, direction: Dir) -> bytes:
    """The xfrm_userpolicy_info (no netlink framing) that setsockopt(IP_XFRM_POLICY) takes to
    let everything through one socket in one direction: a selector of its family alone."""
    sel = _SELECTOR.pack(ZERO_ADDR, ZERO_ADDR, 0, 0, 0, 0, family, 0, 0, 0, 0, 0)
    return _USERPOLICY_INFO.pack(sel, _DEFAULT_LIFETIME_BYTES, 0, 0, direction, Action.ALLOW, 0, 0)


def policy_id_body(pid: PolicyId, index: int = 0) -> bytes:
    """DELPOLICY/GETPOLICY: xfrm_userpolicy_id, mark and if_id."""
    raw = _USERPOLICY_ID.pack(selector(pid.selector), index, pid.dir)
    return raw + mark_attrs(pid.mark, pid.if_id)
