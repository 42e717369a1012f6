"""XFRM netlink constants (linux/xfrm.h) and the message classes that decode what the kernel
sends: replies, dumps, notifications, errors.

The classes are pyroute2's declarative codec and are used only to decode: every request is
packed by xfrmctl.kernel.wire, and the tests check those bytes against pyroute2's own encoding
of these classes, which stay the reference for the C layout. pyroute2 reads `fields` one after
another with no C alignment, so every padding byte the C compiler inserts is spelled out as an
`Nx` field; the sizes are checked in the unit tests against the values gcc gives for the kernel
headers. Addresses travel as raw 16-byte `xfrm_address_t`; ports and SPIs are big-endian on the
wire; everything else is host order.
"""

from __future__ import annotations

import socket
import struct
from enum import IntEnum
from typing import Any, ClassVar, NamedTuple

from pyroute2.netlink import NotInitialized, nla, nlmsg

XFRM_INF = 0xFFFFFFFFFFFFFFFF
UDP_ENCAP_ESPINUDP = 2


class Msg(IntEnum):
    NEWSA = 0x10
    DELSA = 0x11
    GETSA = 0x12
    NEWPOLICY = 0x13
    DELPOLICY = 0x14
    GETPOLICY = 0x15
    ALLOCSPI = 0x16
    ACQUIRE = 0x17
    EXPIRE = 0x18
    UPDPOLICY = 0x19
    UPDSA = 0x1A
    POLEXPIRE = 0x1B
    FLUSHSA = 0x1C
    FLUSHPOLICY = 0x1D
    NEWAE = 0x1E
    GETAE = 0x1F
    REPORT = 0x20
    MIGRATE = 0x21
    MAPPING = 0x26


class Group(IntEnum):
    """Multicast groups (enum xfrm_nlgroups); bind() wants 1 << (group - 1)."""

    ACQUIRE = 1
    EXPIRE = 2
    SA = 3
    POLICY = 4
    AEVENTS = 5
    REPORT = 6
    MIGRATE = 7
    MAPPING = 8


class Attr(IntEnum):
    ALG_AUTH = 1
    ALG_CRYPT = 2
    ALG_COMP = 3
    ENCAP = 4
    TMPL = 5
    SA = 6
    POLICY = 7
    SEC_CTX = 8
    LTIME_VAL = 9
    REPLAY_VAL = 10
    REPLAY_THRESH = 11
    ETIMER_THRESH = 12
    SRCADDR = 13
    COADDR = 14
    LASTUSED = 15
    POLICY_TYPE = 16
    MIGRATE = 17
    ALG_AEAD = 18
    KMADDRESS = 19
    ALG_AUTH_TRUNC = 20
    MARK = 21
    TFCPAD = 22
    REPLAY_ESN_VAL = 23
    SA_EXTRA_FLAGS = 24
    PROTO = 25
    ADDRESS_FILTER = 26
    PAD = 27
    OFFLOAD_DEV = 28
    SET_MARK = 29
    SET_MARK_MASK = 30
    IF_ID = 31
    MTIMER_THRESH = 32
    SA_DIR = 33  # Linux 6.10


# xfrm_usersa_info.flags
STATE_NOECN = 1
STATE_DECAP_DSCP = 2
STATE_NOPMTUDISC = 4
STATE_WILDRECV = 8
STATE_ICMP = 16
STATE_AF_UNSPEC = 32
STATE_ALIGN4 = 64
STATE_ESN = 128

# xfrm_aevent_id.flags
AE_RTHR = 1
AE_RVAL = 2
AE_LVAL = 4
AE_ETHR = 8

OFFLOAD_IPV6 = 1
OFFLOAD_INBOUND = 2
OFFLOAD_PACKET = 4

POLICY_TYPE_MAIN = 0

# --- C structures as pyroute2 field lists (explicit padding) -----------------------------------

ADDR = "16s"

SELECTOR: tuple[tuple[str, str], ...] = (
    ("sel_daddr", ADDR),
    ("sel_saddr", ADDR),
    ("sel_dport", ">H"),
    ("sel_dport_mask", ">H"),
    ("sel_sport", ">H"),
    ("sel_sport_mask", ">H"),
    ("sel_family", "H"),
    ("sel_prefixlen_d", "B"),
    ("sel_prefixlen_s", "B"),
    ("sel_proto", "B"),
    ("__sel_pad", "3x"),
    ("sel_ifindex", "i"),
    ("sel_user", "I"),
)  # 56

XFRM_ID = (
    ("id_daddr", ADDR),
    ("id_spi", ">I"),
    ("id_proto", "B"),
    ("__id_pad", "3x"),
)  # 24

LIFETIME_CFG = (
    ("soft_byte_limit", "Q"),
    ("hard_byte_limit", "Q"),
    ("soft_packet_limit", "Q"),
    ("hard_packet_limit", "Q"),
    ("soft_add_expires_seconds", "Q"),
    ("hard_add_expires_seconds", "Q"),
    ("soft_use_expires_seconds", "Q"),
    ("hard_use_expires_seconds", "Q"),
)  # 64

LIFETIME_CUR = (
    ("cur_bytes", "Q"),
    ("cur_packets", "Q"),
    ("cur_add_time", "Q"),
    ("cur_use_time", "Q"),
)  # 32

USERSA_INFO = (
    *SELECTOR,
    *XFRM_ID,
    ("saddr", ADDR),
    *LIFETIME_CFG,
    *LIFETIME_CUR,
    ("stats_replay_window", "I"),
    ("stats_replay", "I"),
    ("stats_integrity_failed", "I"),
    ("seq", "I"),
    ("reqid", "I"),
    ("family", "H"),
    ("mode", "B"),
    ("replay_window", "B"),
    ("flags", "B"),
    ("__sa_pad", "7x"),
)  # 224

USERSA_ID = (
    ("daddr", ADDR),
    ("spi", ">I"),
    ("family", "H"),
    ("proto", "B"),
    ("__said_pad", "x"),
)  # 24

USERPOLICY_INFO = (
    *SELECTOR,
    *LIFETIME_CFG,
    *LIFETIME_CUR,
    ("priority", "I"),
    ("index", "I"),
    ("dir", "B"),
    ("action", "B"),
    ("pflags", "B"),
    ("share", "B"),
    ("__pol_pad", "4x"),
)  # 168

USERPOLICY_ID = (
    *SELECTOR,
    ("index", "I"),
    ("dir", "B"),
    ("__polid_pad", "3x"),
)  # 64

USERSPI_INFO = (*USERSA_INFO, ("min", "I"), ("max", "I"))  # 232

# xfrm_user_acquire: the embedded policy is prefixed pol_ to keep names unique.
USER_ACQUIRE = (
    *XFRM_ID,
    ("saddr", ADDR),
    *SELECTOR,
    *((f"pol_{n}" if not n.startswith("__") else f"__pol{n}", f) for n, f in USERPOLICY_INFO),
    ("aalgos", "I"),
    ("ealgos", "I"),
    ("calgos", "I"),
    ("seq", "I"),
)  # 280

USER_EXPIRE = (*USERSA_INFO, ("hard", "B"), ("__exp_pad", "7x"))  # 232
USER_POLEXPIRE = (*USERPOLICY_INFO, ("hard", "B"), ("__pexp_pad", "7x"))  # 176
USERSA_FLUSH = (("proto", "B"),)  # 1, aligned to 4 by the netlink framing

AEVENT_ID = (
    ("daddr", ADDR),
    ("spi", ">I"),
    ("family", "H"),
    ("proto", "B"),
    ("__ae_pad", "x"),
    ("saddr", ADDR),
    ("flags", "I"),
    ("reqid", "I"),
)  # 48

USER_MAPPING = (
    ("daddr", ADDR),
    ("spi", ">I"),
    ("family", "H"),
    ("proto", "B"),
    ("__map_pad", "x"),
    ("reqid", "I"),
    ("old_saddr", ADDR),
    ("new_saddr", ADDR),
    ("old_sport", ">H"),
    ("new_sport", ">H"),
)  # 64

# xfrm_user_tmpl is carried as an array without NLA headers, so it is packed with struct.
USER_TMPL = struct.Struct("=16sIB3xH2x16sIBBBxIII")  # 64
TMPL_FIELDS = (
    "daddr",
    "spi_be",
    "proto",
    "family",
    "saddr",
    "reqid",
    "mode",
    "share",
    "optional",
    "aalgos",
    "ealgos",
    "calgos",
)


def unpack_templates(data: bytes) -> list[dict[str, Any]]:
    size = USER_TMPL.size
    if len(data) % size:
        raise ValueError(f"XFRMA_TMPL length {len(data)} is not a multiple of {size}")
    return [
        dict(zip(TMPL_FIELDS, USER_TMPL.unpack_from(data, off), strict=True))
        for off in range(0, len(data), size)
    ]


def fields_size(fields: tuple[tuple[str, str], ...]) -> int:
    return sum(struct.calcsize(fmt) for _, fmt in fields)


def field_offset(fields: tuple[tuple[str, str], ...], name: str) -> int:
    """Where field `name` starts in a struct laid out by `fields`."""
    return fields_size(fields[: [n for n, _ in fields].index(name)])


_NLA = struct.Struct("=HH")
_U16 = struct.Struct("=H")
_U32 = struct.Struct("=I")
_REQID_AT = 44  # in xfrm_user_tmpl: xfrm_id (24), family (2+2), saddr (16)
_POLICY_ATTRS_AT = 16 + fields_size(USERPOLICY_INFO)  # nlmsghdr, xfrm_userpolicy_info (168)
POLICY_DIR_AT = 16 + field_offset(USERPOLICY_INFO, "dir")  # in a NEWPOLICY message
_PRIORITY_AT = 16 + field_offset(USERPOLICY_INFO, "priority")
_SELECTOR_END = 16 + fields_size(SELECTOR)  # the selector opens xfrm_userpolicy_info
_ACTION_AT = 16 + field_offset(USERPOLICY_INFO, "action")
_TMPL, _MARK, _IF_ID = int(Attr.TMPL), int(Attr.MARK), int(Attr.IF_ID)
_POLICY_TYPE = int(Attr.POLICY_TYPE)


def message_type(raw: bytes) -> int:
    """nlmsg_type of the netlink message that starts `raw`."""
    return int(_U16.unpack_from(raw, 4)[0])


def _policy_attrs(data: bytes, offset: int, length: int) -> dict[int, bytes] | None:
    """The attributes of the NEWPOLICY/UPDPOLICY message at `offset`, by type, unparsed;
    None when they do not parse (the caller then decodes the message in full)."""
    pos, end = offset + _POLICY_ATTRS_AT, offset + length
    attrs: dict[int, bytes] = {}
    while pos + 4 <= end:
        nla_len, nla_type = _NLA.unpack_from(data, pos)
        if nla_len < 4 or pos + nla_len > end:
            return None
        attrs[nla_type & 0x3FFF] = data[pos + 4 : pos + nla_len]
        pos += (nla_len + 3) & ~3
    return attrs


class PolicyPrint(NamedTuple):
    """What decides a policy's identity and its effect on packets, as bytes: equal prints
    are equal policies, so a reconcile can match a dumped policy with the one it installed
    without decoding either (issue 15). Unequal prints prove nothing (the caller decodes)."""

    identity: bytes  # selector, direction, mark, if_id
    priority: int
    effect: bytes  # action, templates


def policy_print(data: bytes, offset: int, length: int) -> PolicyPrint | None:
    """The print of the NEWPOLICY/UPDPOLICY message at `offset` (a dump reply, or a request
    we built); None if it carries attributes the print does not cover (a security context)."""
    attrs = _policy_attrs(data, offset, length) if length >= _POLICY_ATTRS_AT else None
    if attrs is None or not attrs.keys() <= {_TMPL, _MARK, _IF_ID, _POLICY_TYPE}:
        return None
    selector = data[offset + 16 : offset + _SELECTOR_END]
    direction = data[offset + POLICY_DIR_AT : offset + POLICY_DIR_AT + 1]
    identity = b"".join((selector, direction, attrs.get(_MARK, b""), b"/", attrs.get(_IF_ID, b"")))
    (priority,) = _U32.unpack_from(data, offset + _PRIORITY_AT)
    action = data[offset + _ACTION_AT : offset + _ACTION_AT + 1]
    return PolicyPrint(identity, priority, action + attrs.get(_TMPL, b""))


def policy_template_reqids(data: bytes, offset: int, length: int) -> list[int] | None:
    """The reqids of the templates of the NEWPOLICY/UPDPOLICY message at `offset`, read in
    place: enough to tell whose policy a notification is about without decoding it (issue
    15). None when the attributes do not parse; the caller then decodes it in full."""
    attrs = _policy_attrs(data, offset, length)
    if attrs is None:
        return None
    tmpl = attrs.get(_TMPL, b"")
    if len(tmpl) % USER_TMPL.size:
        return None
    return [_U32.unpack_from(tmpl, at + _REQID_AT)[0] for at in range(0, len(tmpl), USER_TMPL.size)]


# --- fast decoding ------------------------------------------------------------------------------


class _Unpacker:
    """One struct.Struct for a whole field list, big-endian fields byte-swapped after reading."""

    def __init__(self, fields: tuple[tuple[str, str], ...]) -> None:
        fmt = "="
        self.names: list[tuple[str, int]] = []  # (name, 0 plain / 2 be16 / 4 be32)
        for name, f in fields:
            fmt += f.lstrip(">")
            if f.endswith("x"):
                continue
            swap = {">H": 2, ">I": 4}.get(f, 0)
            self.names.append((name, swap))
        self.struct = struct.Struct(fmt)

    def unpack_into(self, msg: dict[str, Any], data: bytes, offset: int) -> int:
        values = self.struct.unpack_from(data, offset)
        for (name, swap), value in zip(self.names, values, strict=True):
            if swap == 2:
                value = socket.ntohs(value)
            elif swap == 4:
                value = socket.ntohl(value)
            msg[name] = value
        return offset + self.struct.size


class _fast_fields:
    """Decoding only. pyroute2 reads `fields` one at a time through its generic attribute
    lookup, which costs more than the kernel's work per message in a large dump; fixed-size
    structs here are read with one struct. Mixed in before pyroute2's classes, so `super()` is
    pyroute2's field-by-field codec (which still encodes, for the tests' reference)."""

    __slots__ = ()
    _unpackers: ClassVar[dict[type, _Unpacker | None]] = {}

    @classmethod
    def _unpacker(cls) -> _Unpacker | None:
        if cls not in cls._unpackers:
            spec: Any = cls
            fixed = all(not f.endswith("s") or f[:-1].isdigit() for _, f in spec.fields)
            cls._unpackers[cls] = _Unpacker(spec.fields) if fixed else None
        return cls._unpackers[cls]

    def ft_decode(self, offset: int) -> None:
        me: Any = self
        unpacker = self._unpacker()
        if unpacker is None:
            super().ft_decode(offset)  # type: ignore[misc]
            return
        offset = unpacker.unpack_into(me, me.data, offset)
        if me.nla_map:
            me.decode_nlas((offset + 3) & ~3)
        else:
            del me["attrs"]
        if me["value"] is NotInitialized:
            del me["value"]


# --- NLA classes --------------------------------------------------------------------------------


class _keyed(nla):  # type: ignore[misc]
    """A struct followed by a variable-length key (xfrm_algo*, xfrm_replay_state_esn).

    pyroute2's decoder reads an `s` field as one byte; this one reads the key to the end of
    the attribute, which decoding needs (pyroute2's encoder already writes the whole key)."""

    __slots__ = ()
    tail_name: ClassVar[str] = "alg_key"

    def ft_decode(self, offset: int) -> None:
        for name, fmt in self.fields:
            if name == self.tail_name:
                self[name] = bytes(self.data[offset : self.offset + self.length])
            else:
                self[name], offset = self.decode_field(fmt, self.data, offset)
        del self["attrs"]
        if self["value"] is NotInitialized:
            del self["value"]


class _xfrm_nlas:
    """The XFRMA_* attribute table shared by every XFRM message."""

    __slots__ = ()

    nla_map = (
        (0, "XFRMA_UNSPEC", "none"),
        (1, "XFRMA_ALG_AUTH", "xfrm_algo"),
        (2, "XFRMA_ALG_CRYPT", "xfrm_algo"),
        (3, "XFRMA_ALG_COMP", "xfrm_algo"),
        (4, "XFRMA_ENCAP", "xfrm_encap_tmpl"),
        (5, "XFRMA_TMPL", "cdata"),
        (6, "XFRMA_SA", "xfrm_usersa_info_nla"),
        (7, "XFRMA_POLICY", "xfrm_userpolicy_info_nla"),
        (8, "XFRMA_SEC_CTX", "cdata"),
        (9, "XFRMA_LTIME_VAL", "xfrm_lifetime_cur"),
        (10, "XFRMA_REPLAY_VAL", "xfrm_replay_state"),
        (11, "XFRMA_REPLAY_THRESH", "uint32"),
        (12, "XFRMA_ETIMER_THRESH", "uint32"),
        (13, "XFRMA_SRCADDR", "cdata"),
        (14, "XFRMA_COADDR", "cdata"),
        (15, "XFRMA_LASTUSED", "uint64"),
        (16, "XFRMA_POLICY_TYPE", "xfrm_userpolicy_type"),
        (17, "XFRMA_MIGRATE", "cdata"),
        (18, "XFRMA_ALG_AEAD", "xfrm_algo_aead"),
        (19, "XFRMA_KMADDRESS", "cdata"),
        (20, "XFRMA_ALG_AUTH_TRUNC", "xfrm_algo_auth"),
        (21, "XFRMA_MARK", "xfrm_mark"),
        (22, "XFRMA_TFCPAD", "uint32"),
        (23, "XFRMA_REPLAY_ESN_VAL", "xfrm_replay_state_esn"),
        (24, "XFRMA_SA_EXTRA_FLAGS", "uint32"),
        (25, "XFRMA_PROTO", "uint8"),
        (26, "XFRMA_ADDRESS_FILTER", "cdata"),
        (27, "XFRMA_PAD", "none"),
        (28, "XFRMA_OFFLOAD_DEV", "xfrm_user_offload"),
        (29, "XFRMA_SET_MARK", "uint32"),
        (30, "XFRMA_SET_MARK_MASK", "uint32"),
        (31, "XFRMA_IF_ID", "uint32"),
        (32, "XFRMA_MTIMER_THRESH", "uint32"),
        (33, "XFRMA_SA_DIR", "uint8"),
    )

    class xfrm_algo(_keyed):
        __slots__ = ()
        fields = (("alg_name", "64s"), ("alg_key_len", "I"), ("alg_key", "s"))

    class xfrm_algo_auth(_keyed):
        __slots__ = ()
        fields = (
            ("alg_name", "64s"),
            ("alg_key_len", "I"),
            ("alg_trunc_len", "I"),
            ("alg_key", "s"),
        )

    class xfrm_algo_aead(_keyed):
        __slots__ = ()
        fields = (
            ("alg_name", "64s"),
            ("alg_key_len", "I"),
            ("alg_icv_len", "I"),
            ("alg_key", "s"),
        )

    class xfrm_replay_state_esn(_keyed):
        __slots__ = ()
        tail_name = "bmp"
        fields = (
            ("bmp_len", "I"),
            ("oseq", "I"),
            ("seq", "I"),
            ("oseq_hi", "I"),
            ("seq_hi", "I"),
            ("replay_window", "I"),
            ("bmp", "s"),
        )

    class xfrm_encap_tmpl(_fast_fields, nla):  # type: ignore[misc]
        __slots__ = ()
        fields = (
            ("encap_type", "H"),
            ("encap_sport", ">H"),
            ("encap_dport", ">H"),
            ("__encap_pad", "2x"),
            ("encap_oa", ADDR),
        )

    class xfrm_lifetime_cur(_fast_fields, nla):  # type: ignore[misc]
        __slots__ = ()
        fields = (("bytes", "Q"), ("packets", "Q"), ("add_time", "Q"), ("use_time", "Q"))

    class xfrm_replay_state(_fast_fields, nla):  # type: ignore[misc]
        __slots__ = ()
        fields = (("oseq", "I"), ("seq", "I"), ("bitmap", "I"))

    class xfrm_userpolicy_type(_fast_fields, nla):  # type: ignore[misc]
        __slots__ = ()
        fields = (("type", "B"), ("__t_pad", "x"), ("reserved1", "H"), ("reserved2", "B"))

    class xfrm_mark(_fast_fields, nla):  # type: ignore[misc]
        __slots__ = ()
        fields = (("v", "I"), ("m", "I"))

    class xfrm_user_offload(_fast_fields, nla):  # type: ignore[misc]
        __slots__ = ()
        fields = (("ifindex", "i"), ("flags", "B"), ("__off_pad", "3x"))

    class xfrm_usersa_info_nla(_fast_fields, nla):  # type: ignore[misc]
        __slots__ = ()
        fields = USERSA_INFO

    class xfrm_userpolicy_info_nla(_fast_fields, nla):  # type: ignore[misc]
        __slots__ = ()
        fields = USERPOLICY_INFO


class xfrm_msg(_fast_fields, _xfrm_nlas, nlmsg):  # type: ignore[misc]
    """Base of every XFRM message: the XFRMA attribute table and NLA classes."""

    __slots__ = ()
    prefix = "XFRMA_"


class xfrm_usersa_info(xfrm_msg):
    __slots__ = ()
    fields = USERSA_INFO


class xfrm_usersa_id(xfrm_msg):
    __slots__ = ()
    fields = USERSA_ID


class xfrm_userspi_info(xfrm_msg):
    __slots__ = ()
    fields = USERSPI_INFO


class xfrm_userpolicy_info(xfrm_msg):
    __slots__ = ()
    fields = USERPOLICY_INFO


class xfrm_userpolicy_id(xfrm_msg):
    __slots__ = ()
    fields = USERPOLICY_ID


class xfrm_user_acquire(xfrm_msg):
    __slots__ = ()
    fields = USER_ACQUIRE


class xfrm_user_expire(xfrm_msg):
    __slots__ = ()
    fields = USER_EXPIRE


class xfrm_user_polexpire(xfrm_msg):
    __slots__ = ()
    fields = USER_POLEXPIRE


class xfrm_usersa_flush(xfrm_msg):
    __slots__ = ()
    fields = USERSA_FLUSH


class xfrm_userpolicy_flush(xfrm_msg):
    __slots__ = ()
    fields = ()


class xfrm_aevent_id(xfrm_msg):
    __slots__ = ()
    fields = AEVENT_ID


class xfrm_user_mapping(xfrm_msg):
    __slots__ = ()
    fields = USER_MAPPING


# Which class decodes each message type (kernel replies and notifications; in tests, requests).
MESSAGE_CLASSES: dict[int, type[xfrm_msg]] = {
    Msg.NEWSA: xfrm_usersa_info,
    Msg.UPDSA: xfrm_usersa_info,
    Msg.DELSA: xfrm_usersa_id,
    Msg.GETSA: xfrm_usersa_id,
    Msg.ALLOCSPI: xfrm_userspi_info,
    Msg.NEWPOLICY: xfrm_userpolicy_info,
    Msg.UPDPOLICY: xfrm_userpolicy_info,
    Msg.DELPOLICY: xfrm_userpolicy_id,
    Msg.GETPOLICY: xfrm_userpolicy_id,
    Msg.ACQUIRE: xfrm_user_acquire,
    Msg.EXPIRE: xfrm_user_expire,
    Msg.POLEXPIRE: xfrm_user_polexpire,
    Msg.FLUSHSA: xfrm_usersa_flush,
    Msg.FLUSHPOLICY: xfrm_userpolicy_flush,
    Msg.NEWAE: xfrm_aevent_id,
    Msg.GETAE: xfrm_aevent_id,
    Msg.MAPPING: xfrm_user_mapping,
}
