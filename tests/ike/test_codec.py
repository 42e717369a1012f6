"""Codec: round trips, strict bounds, and the parser never raising anything but our errors."""

from __future__ import annotations

import contextlib
import ipaddress
import struct

import pytest
from codec_strategies import messages
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xfrmctl.ike.errors import MalformedMessage, ProtocolError, RemoteProtocolError
from xfrmctl.ike.iana import (
    EncrId,
    ExchangeType,
    IntegId,
    KeId,
    NotifyType,
    PrfId,
    ProtocolId,
    TransformType,
)
from xfrmctl.ike.message import Message, decode_message
from xfrmctl.ike.payloads import (
    DeletePayload,
    IdPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    SaPayload,
    TrafficSelector,
    TsPayload,
    UnknownPayload,
    decode_payloads,
)
from xfrmctl.ike.transforms import Proposal, Transform

IKE_PROP = Proposal(
    ProtocolId.IKE,
    (
        Transform(TransformType.ENCR, EncrId.AES_GCM_16, 256),
        Transform(TransformType.PRF, PrfId.HMAC_SHA2_256),
        Transform(TransformType.KE, KeId.CURVE25519),
    ),
    1,
)


def init_request() -> Message:
    return Message(
        b"\x11" * 8,
        bytes(8),
        ExchangeType.IKE_SA_INIT,
        0,
        False,
        True,
        (
            SaPayload((IKE_PROP,)),
            KePayload(KeId.CURVE25519, b"\x07" * 32),
            NoncePayload(b"\x05" * 32),
            NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, b"\x01" * 20),
        ),
    )


def test_known_bytes_of_header_and_sa() -> None:
    data = init_request().encode()
    assert data[:16] == b"\x11" * 8 + bytes(8)
    assert data[16:20] == bytes([33, 0x20, 34, 0x08])  # next=SA, v2.0, IKE_SA_INIT, I flag
    assert struct.unpack("!II", data[20:28]) == (0, len(data))
    # SA payload: next=KE, length; proposal 1 IKE with 3 transforms, the first with KEY_LENGTH
    sa_len = struct.unpack("!H", data[30:32])[0]
    assert data[28] == 34
    assert sa_len == 4 + 8 + 12 + 8 + 8
    assert data[32:40] == bytes([0, 0, 0, 36, 1, 1, 0, 3])
    assert data[40:52] == bytes([3, 0, 0, 12, 1, 0, 0, 20]) + b"\x80\x0e\x01\x00"


def test_round_trip_real_message() -> None:
    msg = init_request()
    data = msg.encode()
    back = decode_message(data)
    assert back == msg
    assert back.encode() == data


@given(messages())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_round_trip_generated(msg: Message) -> None:
    data = msg.encode()
    back = decode_message(data)
    assert back == msg
    assert back.encode() == data


@given(messages(), st.data())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_messages_only_raise_protocol_errors(msg: Message, data: st.DataObject) -> None:
    raw = bytearray(msg.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[pos] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del raw[pos : pos + data.draw(st.integers(1, 8))]
        else:
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    # Keep the header length consistent half of the time so mutations reach the payloads.
    if len(raw) >= 28 and data.draw(st.booleans()):
        raw[24:28] = struct.pack("!I", len(raw))
    try:
        back = decode_message(bytes(raw))
    except ProtocolError:
        return
    # Anything that does parse must re-encode to something that parses to the same thing.
    assert decode_message(back.encode()) == back


@given(st.binary(max_size=300))
@settings(deadline=None)
def test_random_bytes_never_crash(raw: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_message(raw)


def test_header_length_mismatch_is_rejected() -> None:
    data = init_request().encode()
    with pytest.raises(MalformedMessage, match="header length"):
        decode_message(data + b"\x00")
    with pytest.raises(MalformedMessage):
        decode_message(data[:20])


def test_wrong_major_version_names_it() -> None:
    data = bytearray(init_request().encode())
    data[17] = 0x30
    with pytest.raises(RemoteProtocolError) as exc:
        decode_message(bytes(data))
    assert exc.value.notify == NotifyType.INVALID_MAJOR_VERSION


def test_payload_length_beyond_message() -> None:
    data = bytearray(init_request().encode())
    data[30:32] = struct.pack("!H", 0xFFF0)
    with pytest.raises(MalformedMessage, match="body of payload 33"):
        decode_message(bytes(data))


def test_payload_length_below_header() -> None:
    with pytest.raises(MalformedMessage, match="below 4"):
        decode_payloads(40, b"\x00\x00\x00\x02")


def test_transform_count_mismatch() -> None:
    body = SaPayload((IKE_PROP,)).encode_body()
    bad = body[:7] + b"\x04" + body[8:]  # claims 4 transforms, has 3
    with pytest.raises(MalformedMessage):
        decode_payloads(33, struct.pack("!BBH", 0, 0, len(bad) + 4) + bad)


def test_unknown_transform_attribute_drops_proposal() -> None:
    t = struct.pack("!BBHBBH", 0, 0, 12, 1, 0, 12) + struct.pack("!HH", 0x8000 | 99, 1)
    prop = struct.pack("!BBHBBBB", 0, 0, 8 + len(t), 1, 1, 0, 1) + t
    (sa,) = decode_payloads(33, struct.pack("!BBH", 0, 0, len(prop) + 4) + prop)
    assert isinstance(sa, SaPayload)
    assert sa.proposals == ()


def test_nonce_bounds() -> None:
    for size in (15, 257):
        with pytest.raises(MalformedMessage, match="Nonce"):
            decode_payloads(40, struct.pack("!BBH", 0, 0, size + 4) + bytes(size))
    (n,) = decode_payloads(40, struct.pack("!BBH", 0, 0, 20) + bytes(16))
    assert n == NoncePayload(bytes(16))


def test_id_ipv4_length_checked() -> None:
    body = IdPayload(1, b"\x0a\x00\x00\x01\x00").encode_body()
    with pytest.raises(MalformedMessage, match="ID payload"):
        decode_payloads(35, struct.pack("!BBH", 0, 0, len(body) + 4) + body)


def test_delete_counts_checked() -> None:
    body = struct.pack("!BBH", 3, 4, 3) + bytes(8)
    with pytest.raises(MalformedMessage, match="Delete"):
        decode_payloads(42, struct.pack("!BBH", 0, 0, len(body) + 4) + body)
    ok = DeletePayload(ProtocolId.ESP, (b"abcd", b"efgh"), 4)
    body = ok.encode_body()
    assert decode_payloads(42, struct.pack("!BBH", 0, 0, len(body) + 4) + body) == [ok]


def test_ts_ipv4_and_ipv6() -> None:
    sel4 = TrafficSelector(
        ipaddress.ip_address("10.0.0.0"), ipaddress.ip_address("10.0.0.255"), 6, 80, 80
    )
    sel6 = TrafficSelector(ipaddress.ip_address("2001:db8::"), ipaddress.ip_address("2001:db8::ff"))
    ts = TsPayload((sel4, sel6), responder=True)
    body = ts.encode_body()
    assert len(body) == 4 + 16 + 40
    assert decode_payloads(45, struct.pack("!BBH", 0, 0, len(body) + 4) + body) == [ts]
    assert str(sel4) == "10.0.0.0/24[6/80]"
    bad = body[:6] + b"\x00\x11" + body[8:]  # selector length 17
    with pytest.raises(MalformedMessage, match="selector 0 length"):
        decode_payloads(45, struct.pack("!BBH", 0, 0, len(bad) + 4) + bad)


def test_ts_of_one_address_decodes_to_one_address_object() -> None:
    """Every Child SA keeps its selectors: a single-address range holds one address, not two
    equal ones (issue 15). Ranges still get both ends."""
    one = ipaddress.ip_address("10.1.0.7")
    sels = (TrafficSelector(one, one), TrafficSelector(one, ipaddress.ip_address("10.1.0.9")))
    body = TsPayload(sels, responder=False).encode_body()
    [got] = decode_payloads(44, struct.pack("!BBH", 0, 0, len(body) + 4) + body)
    assert isinstance(got, TsPayload) and got.selectors == sels
    single, ranged = got.selectors
    assert single.start is single.end
    assert ranged.start == one and ranged.end == ipaddress.ip_address("10.1.0.9")


def test_unknown_payload_kept_with_critical_bit() -> None:
    raw = struct.pack("!BBH", 40, 0x80, 6) + b"xy" + struct.pack("!BBH", 0, 0, 20) + bytes(16)
    got = decode_payloads(200, raw)
    assert got[0] == UnknownPayload(200, b"xy", critical=True)
    assert isinstance(got[1], NoncePayload)


def test_sk_must_be_last() -> None:
    raw = struct.pack("!BBH", 33, 0, 8) + b"abcd" + b"junk"
    with pytest.raises(MalformedMessage, match="after the last payload"):
        decode_payloads(46, raw)


def test_transform_str_and_integ() -> None:
    assert str(Transform(TransformType.INTEG, IntegId.HMAC_SHA2_256_128)) == "HMAC_SHA2_256_128"


def test_sa_payload_with_only_unknown_proposals_round_trips() -> None:
    """Found by the mutation test: dropping every proposal must not yield bytes we reject."""
    from xfrmctl.ike.payloads import _decode_sa

    unknown_protocol = bytes([0, 0, 0, 8, 1, 99, 0, 0])  # last, -, length 8, #1, proto 99
    sa = _decode_sa(unknown_protocol, False)
    assert sa.proposals == ()
    assert _decode_sa(sa.encode_body(), False) == sa
    with pytest.raises(MalformedMessage):
        _decode_sa(bytes([2, 0, 0, 8, 1, 3, 0, 0]), False)  # "more follow", but none does
