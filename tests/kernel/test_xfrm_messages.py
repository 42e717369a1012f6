"""XFRM messages against the C layout: sizes from gcc and bytes assembled by hand at C offsets."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from ipaddress import ip_address
from typing import Any

import pytest
from pyroute2_reference import encode, encode_policy, encode_sa, sa_id_msg

from xfrmctl.kernel import messages as m
from xfrmctl.kernel import wire
from xfrmctl.kernel.events import Acquire, Expire, Mapping, decode_event
from xfrmctl.kernel.fields import DecodeError
from xfrmctl.kernel.policy import add_request as policy_add_request
from xfrmctl.kernel.policy import delete_request as policy_delete_request
from xfrmctl.kernel.sa import add_request, allocspi_request, delete_request, dump_sas
from xfrmctl.kernel.socket import Request
from xfrmctl.kernel.types import (
    SA,
    Aead,
    Auth,
    Crypt,
    Dir,
    Encap,
    Mark,
    Mode,
    Policy,
    PolicyId,
    Proto,
    SaId,
    Selector,
    SpiRange,
    SpiRequest,
    Template,
)

INF = 0xFFFFFFFFFFFFFFFF


# Sizes from gcc on x86_64 for /usr/include/linux/xfrm.h (given in the issue).
@pytest.mark.parametrize(
    ("cls", "size"),
    [
        (m.xfrm_usersa_info, 224),
        (m.xfrm_usersa_id, 24),
        (m.xfrm_userspi_info, 232),
        (m.xfrm_userpolicy_info, 168),
        (m.xfrm_userpolicy_id, 64),
        (m.xfrm_user_acquire, 280),
        (m.xfrm_user_expire, 232),
        (m.xfrm_user_polexpire, 176),
        (m.xfrm_aevent_id, 48),
        (m.xfrm_user_mapping, 64),
    ],
)
def test_struct_sizes(cls: type[m.xfrm_msg], size: int) -> None:
    assert m.fields_size(cls.fields) == size
    msg = cls()
    msg["attrs"] = []
    # nlmsghdr + struct, rounded up to 4 as the kernel's NLMSG_ALIGN does.
    assert len(encode(msg, 0)) == 16 + ((size + 3) & ~3)


def test_wire_struct_sizes() -> None:
    assert wire._USERSA_INFO.size == 224 and wire._USERSA_ID.size == 24
    assert wire._USERSA_INFO.size + wire._USERSPI_TAIL.size == 232
    assert wire._USERPOLICY_INFO.size == 168 and wire._USERPOLICY_ID.size == 64
    assert wire._AEVENT_ID.size == 48 and wire._SELECTOR.size == 56


def test_selector_and_template_sizes() -> None:
    assert m.fields_size(m.SELECTOR) == 56
    assert m.USER_TMPL.size == 64
    assert m.fields_size(m.LIFETIME_CFG) == 64
    assert m.fields_size(m.LIFETIME_CUR) == 32


def _header(payload_len: int, mtype: int, flags: int = 0) -> bytes:
    return struct.pack("=IHHII", 16 + payload_len, mtype, flags, 0, 0)


def _sent(req: Request) -> bytes:
    """What Connection.batch sends for a request, with flags/seq/pid zeroed."""
    return _header(len(req.body), req.msg_type) + req.body


def _nla(ntype: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), ntype) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _usersa_info_by_hand(
    *,
    sel: bytes,
    daddr: bytes,
    spi: int,
    proto: int,
    saddr: bytes,
    reqid: int,
    family: int,
    mode: int,
    window: int,
    flags: int,
) -> bytes:
    b = bytearray(224)
    b[0:56] = sel
    b[56:72] = daddr.ljust(16, b"\0")
    struct.pack_into(">I", b, 72, spi)
    b[76] = proto
    b[80:96] = saddr.ljust(16, b"\0")
    struct.pack_into("=8Q", b, 96, INF, INF, INF, INF, 0, 0, 0, 0)  # no limits, as ip xfrm
    struct.pack_into("=I", b, 208, reqid)
    struct.pack_into("=H", b, 212, family)
    b[214], b[215], b[216] = mode, window, flags
    return bytes(b)


def _selector_by_hand(
    src: bytes,
    dst: bytes,
    plen_s: int,
    plen_d: int,
    family: int,
    proto: int = 0,
    sport: int = 0,
    dport: int = 0,
) -> bytes:
    b = bytearray(56)
    b[0:16] = dst.ljust(16, b"\0")
    b[16:32] = src.ljust(16, b"\0")
    struct.pack_into(">HHHH", b, 32, dport, 0xFFFF if dport else 0, sport, 0xFFFF if sport else 0)
    struct.pack_into("=H", b, 40, family)
    b[42], b[43], b[44] = plen_d, plen_s, proto
    return bytes(b)


def test_newsa_aead_matches_hand_assembled_bytes() -> None:
    key = bytes(range(36))
    sa = SA(
        ip_address("192.0.2.1"),
        ip_address("192.0.2.2"),
        0xC0FFEE01,
        mode=Mode.TUNNEL,
        reqid=7,
        aead=Aead("rfc4106(gcm(aes))", key, 128),
        replay_window=32,
        mark=Mark(0x10, 0xFF),
        if_id=9,
    )
    body = _usersa_info_by_hand(
        sel=bytes(56),
        daddr=bytes([192, 0, 2, 2]),
        spi=0xC0FFEE01,
        proto=50,
        saddr=bytes([192, 0, 2, 1]),
        reqid=7,
        family=2,
        mode=1,
        window=32,
        flags=0,
    )
    aead = struct.pack("=64sII", b"rfc4106(gcm(aes))", 288, 128) + key
    attrs = (
        _nla(18, aead) + _nla(21, struct.pack("=II", 0x10, 0xFF)) + _nla(31, struct.pack("=I", 9))
    )
    expected = _header(len(body) + len(attrs), m.Msg.NEWSA) + body + attrs
    assert encode(encode_sa(sa), m.Msg.NEWSA) == expected
    assert _sent(add_request(sa)) == expected


def test_newsa_cbc_hmac_esn_encap_matches_hand_assembled_bytes() -> None:
    sa = SA(
        ip_address("2001:db8::1"),
        ip_address("2001:db8::2"),
        0x1000,
        crypt=Crypt("cbc(aes)", b"\x11" * 16),
        auth=Auth("hmac(sha256)", b"\x22" * 32, 128),
        esn=True,
        replay_window=64,
        encap=Encap(4500, 4501),
        selector=Selector.of("2001:db8::/64", "2001:db8:1::/64", proto=17, dport=53),
    )
    src, dst = ip_address("2001:db8::1").packed, ip_address("2001:db8::2").packed
    sel = _selector_by_hand(
        ip_address("2001:db8::").packed,
        ip_address("2001:db8:1::").packed,
        64,
        64,
        10,
        proto=17,
        dport=53,
    )
    body = _usersa_info_by_hand(
        sel=sel,
        daddr=dst,
        spi=0x1000,
        proto=50,
        saddr=src,
        reqid=0,
        family=10,
        mode=0,
        window=0,
        flags=m.STATE_ESN,
    )
    crypt = struct.pack("=64sI", b"cbc(aes)", 128) + b"\x11" * 16
    auth = struct.pack("=64sII", b"hmac(sha256)", 256, 128) + b"\x22" * 32
    esn = struct.pack("=6I", 2, 0, 0, 0, 0, 64) + bytes(8)
    encap = struct.pack("=H", 2) + struct.pack(">HH", 4500, 4501) + bytes(2) + bytes(16)
    attrs = _nla(2, crypt) + _nla(20, auth) + _nla(23, esn) + _nla(4, encap)
    expected = _header(len(body) + len(attrs), m.Msg.NEWSA) + body + attrs
    assert encode(encode_sa(sa), m.Msg.NEWSA) == expected
    assert _sent(add_request(sa)) == expected


def test_newpolicy_with_templates_matches_hand_assembled_bytes() -> None:
    pol = Policy(
        Selector.of("10.1.0.0/16", "10.2.0.0/16", proto=6, sport=1024),
        Dir.FWD,
        (
            Template(Proto.ESP, Mode.TUNNEL, 5, ip_address("192.0.2.1"), ip_address("192.0.2.2")),
            Template(Proto.AH, Mode.TRANSPORT, 6, optional=True),
        ),
        priority=0x1234,
    )
    body = bytearray(168)
    body[0:56] = _selector_by_hand(
        bytes([10, 1, 0, 0]), bytes([10, 2, 0, 0]), 16, 16, 2, proto=6, sport=1024
    )
    struct.pack_into("=8Q", body, 56, INF, INF, INF, INF, 0, 0, 0, 0)  # no limits, as ip xfrm
    struct.pack_into("=II", body, 152, 0x1234, 0)
    body[160] = 2  # dir fwd
    t1 = bytearray(64)
    t1[0:4] = bytes([192, 0, 2, 2])
    t1[20] = 50
    struct.pack_into("=H", t1, 24, 2)
    t1[28:32] = bytes([192, 0, 2, 1])
    struct.pack_into("=I", t1, 44, 5)
    t1[48] = 1
    struct.pack_into("=III", t1, 52, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF)
    t2 = bytearray(64)
    t2[20] = 51
    struct.pack_into("=H", t2, 24, 2)
    struct.pack_into("=I", t2, 44, 6)
    t2[50] = 1  # optional
    struct.pack_into("=III", t2, 52, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF)
    attrs = _nla(5, bytes(t1) + bytes(t2))
    expected = _header(168 + len(attrs), m.Msg.NEWPOLICY) + bytes(body) + attrs
    assert encode(encode_policy(pol), m.Msg.NEWPOLICY) == expected
    assert _sent(policy_add_request(pol)) == expected


def test_usersa_id_matches_hand_assembled_bytes() -> None:
    msg = sa_id_msg(SaId(ip_address("198.51.100.7"), 0xDEADBEEF, Proto.AH))
    body = bytes([198, 51, 100, 7]) + bytes(12) + struct.pack(">I", 0xDEADBEEF)
    body += struct.pack("=HBx", 2, 51)
    assert encode(msg, m.Msg.DELSA) == _header(24, m.Msg.DELSA) + body
    req = delete_request(SaId(ip_address("198.51.100.7"), 0xDEADBEEF, Proto.AH))
    assert _sent(req) == _header(24, m.Msg.DELSA) + body


def test_delpolicy_with_mark_and_if_id_matches_hand_assembled_bytes() -> None:
    sel = Selector.of("2001:db8::1/128", "2001:db8::/32", proto=58)
    req = policy_delete_request(PolicyId(sel, Dir.IN, Mark(7, 0xF), 42))
    body = _selector_by_hand(
        ip_address("2001:db8::1").packed, ip_address("2001:db8::").packed, 128, 32, 10, proto=58
    )
    body += struct.pack("=IB3x", 0, 0)  # index, dir in
    attrs = _nla(21, struct.pack("=II", 7, 0xF)) + _nla(31, struct.pack("=I", 42))
    assert _sent(req) == _header(64 + len(attrs), m.Msg.DELPOLICY) + body + attrs


def test_allocspi_matches_hand_assembled_bytes() -> None:
    src, dst = ip_address("192.0.2.1"), ip_address("192.0.2.2")
    req = allocspi_request(
        SpiRequest(src, dst, reqid=9, mode=Mode.TUNNEL, spis=SpiRange(0x100, 0x1FF))
    )
    info = _usersa_info_by_hand(
        sel=bytes(56),
        daddr=dst.packed,
        spi=0,
        proto=50,
        saddr=src.packed,
        reqid=9,
        family=2,
        mode=1,
        window=0,
        flags=0,
    )
    body = info + struct.pack("=II", 0x100, 0x1FF)
    assert _sent(req) == _header(232, m.Msg.ALLOCSPI) + body


def _parse(raw: bytes) -> object:
    from xfrmctl.kernel.socket import XfrmMarshal

    msgs = list(XfrmMarshal().parse(raw))
    assert len(msgs) == 1
    return msgs[0]


def test_acquire_decodes_from_hand_assembled_bytes() -> None:
    body = bytearray(280)
    body[0:4] = bytes([192, 0, 2, 2])  # id.daddr
    body[20] = 50  # id.proto
    body[24:28] = bytes([192, 0, 2, 1])  # saddr
    body[40:96] = _selector_by_hand(bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), 32, 32, 2, proto=1)
    pol = bytearray(168)
    pol[0:56] = _selector_by_hand(bytes([10, 0, 0, 0]), bytes([10, 9, 0, 0]), 8, 16, 2)
    struct.pack_into("=8Q", pol, 56, INF, INF, INF, INF, 0, 0, 0, 0)  # no limits, as ip xfrm
    struct.pack_into("=II", pol, 152, 500, 0x99)
    pol[160] = 1
    body[96:264] = pol
    struct.pack_into("=IIII", body, 264, 1, 2, 3, 0x4242)
    tmpl = bytearray(64)
    tmpl[20] = 50
    struct.pack_into("=H", tmpl, 24, 2)
    struct.pack_into("=I", tmpl, 44, 77)
    attrs = _nla(5, bytes(tmpl))
    raw = _header(280 + len(attrs), m.Msg.ACQUIRE) + bytes(body) + attrs
    event = decode_event(_parse(raw))
    assert isinstance(event, Acquire)
    assert event.seq == 0x4242
    assert (str(event.src), str(event.dst), event.proto) == ("192.0.2.1", "192.0.2.2", Proto.ESP)
    assert str(event.selector.src) == "10.0.0.1/32" and event.selector.proto == 1
    assert event.policy.priority == 500 and event.policy.index == 0x99
    assert event.policy.dir == Dir.OUT
    assert str(event.policy.selector.dst) == "10.9.0.0/16"
    assert event.template is not None and event.template.reqid == 77


def test_expire_and_mapping_decode_from_hand_assembled_bytes() -> None:
    body = _usersa_info_by_hand(
        sel=bytes(56),
        daddr=bytes([192, 0, 2, 2]),
        spi=0xAB,
        proto=50,
        saddr=bytes([192, 0, 2, 1]),
        reqid=3,
        family=2,
        mode=0,
        window=0,
        flags=0,
    )
    attrs = _nla(2, struct.pack("=64sI", b"ecb(cipher_null)", 0))
    raw = _header(232 + len(attrs), m.Msg.EXPIRE) + body + b"\x01" + bytes(7) + attrs
    event = decode_event(_parse(raw))
    assert isinstance(event, Expire) and event.hard
    assert event.sa.spi == 0xAB and event.sa.reqid == 3 and event.sa.crypt is not None

    mapping = bytearray(64)
    mapping[0:4] = bytes([192, 0, 2, 2])
    struct.pack_into(">I", mapping, 16, 0x55)
    struct.pack_into("=HB", mapping, 20, 2, 50)
    struct.pack_into("=I", mapping, 24, 8)
    mapping[28:32] = bytes([203, 0, 113, 1])
    mapping[44:48] = bytes([203, 0, 113, 9])
    struct.pack_into(">HH", mapping, 60, 4500, 61000)
    event = decode_event(_parse(_header(64, m.Msg.MAPPING) + bytes(mapping)))
    assert isinstance(event, Mapping)
    assert event.sa_id.spi == 0x55 and event.reqid == 8
    assert (str(event.old_src), event.old_sport) == ("203.0.113.1", 4500)
    assert (str(event.new_src), event.new_sport) == ("203.0.113.9", 61000)


def test_error_message_carries_extended_ack_text() -> None:
    from xfrmctl.kernel.socket import XfrmMarshal

    text = b"Requested AEAD algorithm not found\0"
    tlv = _nla(1, text)
    body = struct.pack("=i", -38) + _header(224, m.Msg.NEWSA) + tlv
    raw = struct.pack("=IHHII", 16 + len(body), 2, 0x100 | 0x200, 7, 0) + body
    (msg,) = list(XfrmMarshal().parse(raw))
    err = msg["header"]["error"]
    assert err.code == 38
    assert err.ext_ack == "Requested AEAD algorithm not found"


def test_templates_reject_truncated_array() -> None:
    with pytest.raises(ValueError, match="multiple of 64"):
        m.unpack_templates(bytes(65))


def test_sa_dump_request_has_no_body() -> None:
    """xfrm_dump_sa parses the request body as attributes from offset 0: any struct there
    makes the kernel log "bytes leftover after parsing attributes" on every dump."""
    sent: list[tuple[int, bytes]] = []

    class RecordingConnection:
        async def dump_raw(
            self, msg_type: int, body: bytes, ctx: Any = None
        ) -> AsyncIterator[list[bytes]]:
            sent.append((msg_type, body))
            for messages in ():
                yield messages

    async def drain() -> list[Any]:
        return [sa async for sa in dump_sas(RecordingConnection())]  # type: ignore[arg-type]

    assert asyncio.run(drain()) == []
    assert sent == [(m.Msg.GETSA, b"")]  # the netlink header alone


def test_selector_networks_from_the_kernel_match_the_text_parse() -> None:
    """unpack_network builds from the integer what formatting the address and parsing
    ADDRESS/LEN (host bits cleared) gave: same value, same type, same errors."""
    import ipaddress
    import random

    import pytest

    from xfrmctl.kernel.fields import AF_INET, AF_INET6, DecodeError, unpack_network

    rng = random.Random(15)
    for family, size, cls in (
        (AF_INET, 4, ipaddress.IPv4Address),
        (AF_INET6, 16, ipaddress.IPv6Address),
    ):
        for _ in range(300):
            raw = rng.randbytes(size) + bytes(16 - size)
            prefixlen = rng.randint(0, 8 * size)
            want = ipaddress.ip_network(f"{cls(raw[:size])}/{prefixlen}", strict=False)
            got = unpack_network(raw, prefixlen, family)
            assert got == want and hash(got) == hash(want) and isinstance(got, type(want))
            assert str(got) == str(want) and repr(got) == repr(want)
        with pytest.raises(ValueError):
            unpack_network(bytes(16), 8 * size + 1, family)
    with pytest.raises(DecodeError):
        unpack_network(bytes(16), 0, 99)


def test_policy_template_reqids_read_in_place() -> None:
    """What the notification filter reads without decoding agrees with the full decode,
    also with other attributes around the templates and a message not at offset 0."""
    pol = Policy(
        Selector.of("10.1.0.0/16", "10.2.0.0/16"),
        Dir.OUT,
        (
            Template(
                Proto.ESP, Mode.TUNNEL, 0x58460007, ip_address("192.0.2.1"), ip_address("192.0.2.2")
            ),
            Template(Proto.AH, Mode.TRANSPORT, 6),
        ),
        mark=Mark(0x10, 0xF0),
        if_id=5,
    )
    raw = b"\0" * 12 + _sent(policy_add_request(pol))
    length = len(raw) - 12
    assert m.policy_template_reqids(raw, 12, length) == [0x58460007, 6]
    bare = _sent(policy_add_request(Policy(pol.selector, Dir.IN)))
    assert m.policy_template_reqids(bare, 0, len(bare)) == []
    broken = bytearray(raw)
    struct.pack_into("=H", broken, 12 + 16 + 168, 3)  # an attribute shorter than its header
    assert m.policy_template_reqids(bytes(broken), 12, length) is None


def test_notification_marshal_leaves_ignored_and_owned_messages_undecoded() -> None:
    from xfrmctl.kernel.events import SA_ADDS, NotificationMarshal

    def policy(reqids: tuple[int, ...]) -> Policy:
        templates = tuple(Template(Proto.ESP, Mode.TRANSPORT, r) for r in reqids)
        return Policy(Selector.of("10.1.0.0/16", "10.2.0.0/16"), Dir.OUT, templates)

    def parse(marshal: NotificationMarshal, p: Policy) -> list[Any]:
        return list(marshal.parse(_sent(policy_add_request(p))))

    owned = NotificationMarshal(SA_ADDS, lambda reqid: reqid >= 100)
    assert parse(owned, policy((100, 101))) == []
    for reported in ((100, 7), (7,), ()):
        (msg,) = parse(owned, policy(reported))
        assert decode_event(msg).policy.templates == policy(reported).templates  # type: ignore[union-attr]
    (msg,) = parse(NotificationMarshal(frozenset(), None), policy((100,)))
    assert msg["header"]["type"] == m.Msg.NEWPOLICY
    sa = _sent(
        add_request(
            SA(
                ip_address("192.0.2.1"),
                ip_address("192.0.2.2"),
                0x1234,
                reqid=100,
                aead=Aead("rfc4106(gcm(aes))", bytes(36), 128),
            )
        )
    )
    assert list(owned.parse(sa)) == []
    assert len(list(NotificationMarshal(frozenset(), None).parse(sa))) == 1


@pytest.mark.parametrize(
    ("src", "dst"), [("192.0.2.1", "192.0.2.2"), ("2001:db8::1", "2001:db8::2")]
)
def test_sa_key_read_in_place_matches_the_full_decode(src: str, dst: str) -> None:
    from xfrmctl.kernel.marshal import decode_replies
    from xfrmctl.kernel.sa import decode_sa_key, sa_key_in_place

    sa = SA(
        ip_address(src),
        ip_address(dst),
        0xC0FFEE01,
        proto=Proto.ESP,
        reqid=7,
        aead=Aead("rfc4106(gcm(aes))", bytes(36), 128),
        mark=Mark(0x10, 0xFF),
    )
    raw = _sent(add_request(sa))
    (msg,) = decode_replies([raw])
    assert sa_key_in_place(raw) == decode_sa_key(msg) == (ip_address(dst), 0xC0FFEE01, Proto.ESP)
    with pytest.raises(DecodeError):
        sa_key_in_place(raw[:100])


@pytest.mark.parametrize("dst", ["198.51.100.7", "2001:db8::7"])
def test_a_deleted_sa_is_read_in_place_and_left_undecoded_unless_held(dst: str) -> None:
    """DELSA opens with xfrm_usersa_id: (destination, SPI, protocol) read in place; the
    marshal decodes only the deletions of SAs the consumer still holds (issue 15)."""
    from xfrmctl.kernel.events import SA_ADDS, NotificationMarshal
    from xfrmctl.kernel.sa import deleted_sa_key_in_place

    key = (ip_address(dst), 0xDEADBEEF, Proto.AH)
    raw = _sent(delete_request(SaId(*key)))
    assert deleted_sa_key_in_place(raw, 0, len(raw)) == key
    framed = bytes(8) + raw
    assert deleted_sa_key_in_place(framed, 8, len(raw)) == key
    assert deleted_sa_key_in_place(raw, 0, 30) is None
    held: set[object] = set()
    marshal = NotificationMarshal(SA_ADDS, None, held.__contains__)
    assert list(marshal.parse(raw)) == []
    held.add(key)
    (msg,) = marshal.parse(raw)
    assert msg["header"]["type"] == m.Msg.DELSA


@pytest.mark.parametrize("dst", ["192.0.2.2", "2001:db8::2"])
def test_sa_counters_read_in_place_match_the_full_decode(dst: str) -> None:
    """A metrics scrape reads every SA's counters in place (issue 15): the same numbers as
    decode_sa's, at the offsets of xfrm_lifetime_cur and xfrm_stats in xfrm_usersa_info."""
    import struct

    from xfrmctl.kernel.marshal import decode_replies
    from xfrmctl.kernel.sa import decode_sa, sa_counters_in_place

    sa = SA(
        ip_address("192.0.2.1" if ":" not in dst else "2001:db8::1"),
        ip_address(dst),
        0xC0FFEE02,
        proto=Proto.ESP,
        reqid=9,
        aead=Aead("rfc4106(gcm(aes))", bytes(36), 128),
    )
    raw = bytearray(_sent(add_request(sa)))
    at = 16 + 56 + 24 + 16 + 64  # nlmsghdr, selector, id, saddr, lifetime_cfg
    struct.pack_into("=QQQQIII", raw, at, 123456789, 4242, 1700000000, 1700000100, 64, 7, 3)
    (msg,) = decode_replies([bytes(raw)])
    key, counters = sa_counters_in_place(bytes(raw))
    assert key == (ip_address(dst), 0xC0FFEE02, Proto.ESP)
    assert counters == decode_sa(msg).counters
    assert (counters.bytes, counters.packets, counters.replay_errors) == (123456789, 4242, 7)
    assert (counters.add_time, counters.use_time, counters.integrity_failures) == (
        1700000000,
        1700000100,
        3,
    )
