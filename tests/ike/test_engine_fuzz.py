"""Hypothesis mutates real engine traffic and replays it: a bad packet may cost its own SA,
never the process, and the untouched SA pair keeps working. scapy checks our real messages."""

from __future__ import annotations

import struct

from harness import A_IP, B_IP, Harness, make_pair
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.contrib import ikev2 as sc

from xfrmctl.ike.events import ChildSaDeleted, ChildSaReady
from xfrmctl.ike.message import HEADER_LEN, Header, decode_message
from xfrmctl.ike.sa import IkeSa
from xfrmctl.ike.sk import unprotect


def established() -> Harness:
    h, _, _ = make_pair()
    h.a.initiate("a-to-b", now=h.now)
    h.run(2.0)
    return h


REFERENCE = established().log


@given(
    st.sampled_from(range(len(REFERENCE))),
    st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 255)), min_size=1, max_size=6),
    st.booleans(),
    st.booleans(),
)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_traffic_never_escapes(
    index: int, flips: list[tuple[int, int]], fix_length: bool, to_a: bool
) -> None:
    h = established()
    _sender, data = REFERENCE[index]
    raw = bytearray(data)
    for pos, x in flips:
        raw[pos % len(raw)] ^= x
    if fix_length and len(raw) >= HEADER_LEN:
        raw[24:28] = struct.pack("!I", len(raw))
    target = h.a if to_a else h.b
    local, remote = ((A_IP, 500), (B_IP, 500)) if to_a else ((B_IP, 500), (A_IP, 500))
    target.receive_datagram(bytes(raw), local, remote, h.now)  # must not raise
    h.run(5.0)
    # The genuine SA pair still works: delete the child over it.
    if h.a.child_sas() and h.b.child_sas():
        h.a.delete_child(h.a.child_sas()[0].spi_in, h.now)
        h.run(5.0)
        assert h.a.child_sas() == [] and h.b.child_sas() == []
        assert len(h.of("b", ChildSaDeleted)) == 1


@given(st.binary(min_size=0, max_size=400))
@settings(max_examples=200, deadline=None)
def test_random_datagrams_never_escape(raw: bytes) -> None:
    h = established()
    h.b.receive_datagram(raw, (B_IP, 500), (A_IP, 500), h.now)
    h.b.receive_datagram(REFERENCE[0][1][:28] + raw, (B_IP, 500), (A_IP, 500), h.now)
    assert len(h.b.child_sas()) == 1


def _scapy_inner(inner_next: int, plain: bytes) -> list[str]:
    hdr = Header(bytes(8), bytes(8), inner_next, 35, 0, 0, HEADER_LEN + len(plain)).encode()
    pkt = sc.IKEv2(hdr + plain)
    names = []
    layer = pkt.payload
    while isinstance(layer, sc.IKEv2_Payload):
        names.append(type(layer).__name__)
        layer = layer.payload
    return names


def test_scapy_dissects_real_handshake() -> None:
    h = established()
    init_req = sc.IKEv2(h.log[0][1])
    assert init_req.exch_type == 34 and init_req.flags.Initiator
    assert isinstance(init_req.payload, sc.IKEv2_SA)
    assert init_req[sc.IKEv2_KE].group == 31 and len(init_req[sc.IKEv2_KE].ke) == 32
    assert len(init_req[sc.IKEv2_Nonce].nonce) == 32
    init_resp = sc.IKEv2(h.log[1][1])
    assert init_resp.flags.Response and init_resp.resp_SPI != bytes(8)
    prop = init_resp[sc.IKEv2_Proposal]
    assert prop.trans_nb == 3 and prop.trans.transform_id == 20 and prop.trans.key_length == 256
    # Decrypt IKE_AUTH with B's keys and let scapy walk the inner payloads.
    (b_sa,) = h.b.sas.values()
    assert isinstance(b_sa, IkeSa) and b_sa.crypto is not None
    auth_req = h.log[2][1]
    inner_next, plain = unprotect(b_sa.crypto.in_keys(), auth_req, decode_message(auth_req))
    names = _scapy_inner(inner_next, plain)
    assert names[:2] == ["IKEv2_IDi", "IKEv2_IDr"]
    assert "IKEv2_AUTH" in names and names[-3:] == ["IKEv2_SA", "IKEv2_TSi", "IKEv2_TSr"]
    assert h.of("a", ChildSaReady)
