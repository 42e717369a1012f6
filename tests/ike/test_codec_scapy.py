"""Independent oracle: scapy's IKEv2 dissector must see the same payloads we encoded."""

from __future__ import annotations

import ipaddress
from typing import Any

from codec_strategies import messages
from hypothesis import HealthCheck, given, settings
from scapy.contrib import ikev2 as sc

from xfrmctl.ike.message import Message
from xfrmctl.ike.payloads import (
    AuthPayload,
    CertReqPayload,
    DeletePayload,
    IdPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    SaPayload,
    SkfPayload,
    SkPayload,
    TsPayload,
    VendorPayload,
)


def _scapy_payloads(pkt: Any) -> list[Any]:
    out = []
    layer = pkt.payload
    while layer is not None and isinstance(layer, sc.IKEv2_Payload):
        out.append(layer)
        nxt = layer.payload
        layer = nxt if isinstance(nxt, sc.IKEv2_Payload) else None
    return out


def _check(ours: Payload, theirs: Any) -> None:
    if isinstance(ours, SaPayload):
        assert isinstance(theirs, sc.IKEv2_SA)
        prop = theirs.prop
        for p in ours.proposals:
            assert isinstance(prop, sc.IKEv2_Proposal)
            assert prop.proposal == p.num and prop.proto == p.protocol
            assert p.spi == prop.SPI and prop.trans_nb == len(p.transforms)
            tr = prop.trans
            for t in p.transforms:
                assert tr.transform_type == t.type and tr.transform_id == t.id
                if t.key_length is not None:
                    assert tr.key_length == t.key_length
                tr = tr.payload
            prop = prop.payload
    elif isinstance(ours, KePayload):
        assert isinstance(theirs, sc.IKEv2_KE)
        assert (theirs.group, theirs.ke) == (ours.group, ours.data)
    elif isinstance(ours, IdPayload):
        cls = sc.IKEv2_IDr if ours.responder else sc.IKEv2_IDi
        assert isinstance(theirs, cls) and theirs.IDtype == ours.id_type
        if ours.id_type in (1, 5):
            assert ipaddress.ip_address(theirs.ID) == ipaddress.ip_address(ours.data)
        else:
            assert ours.data == theirs.ID
    elif isinstance(ours, AuthPayload):
        assert isinstance(theirs, sc.IKEv2_AUTH)
        assert (theirs.auth_type, theirs.load) == (ours.method, ours.data)
    elif isinstance(ours, NoncePayload):
        assert isinstance(theirs, sc.IKEv2_Nonce) and theirs.nonce == ours.data
    elif isinstance(ours, NotifyPayload):
        assert isinstance(theirs, sc.IKEv2_Notify)
        assert (theirs.type, theirs.proto, theirs.SPI) == (
            ours.notify_type,
            ours.protocol,
            ours.spi,
        )
        if ours.notify_type not in (16407, 16408):
            assert theirs.notify == ours.data
    elif isinstance(ours, DeletePayload):
        assert isinstance(theirs, sc.IKEv2_Delete)
        assert theirs.proto == ours.protocol and list(theirs.SPI) == list(ours.spis)
    elif isinstance(ours, VendorPayload):
        assert isinstance(theirs, sc.IKEv2_VendorID) and theirs.vendorID == ours.data
    elif isinstance(ours, TsPayload):
        cls = sc.IKEv2_TSr if ours.responder else sc.IKEv2_TSi
        assert isinstance(theirs, cls) and theirs.number_of_TSs == len(ours.selectors)
        for sel, tsel in zip(ours.selectors, theirs.traffic_selector, strict=True):
            assert (tsel.IP_protocol_ID, tsel.start_port, tsel.end_port) == (
                sel.ip_proto,
                sel.start_port,
                sel.end_port,
            )
            v = "v4" if sel.start.version == 4 else "v6"
            assert ipaddress.ip_address(getattr(tsel, f"starting_address_{v}")) == sel.start
            assert ipaddress.ip_address(getattr(tsel, f"ending_address_{v}")) == sel.end
    elif isinstance(ours, CertReqPayload):
        assert isinstance(theirs, sc.IKEv2_CERTREQ)
        assert (theirs.cert_encoding, theirs.cert_authority) == (ours.encoding, ours.data)
    elif isinstance(ours, SkPayload):
        assert isinstance(theirs, sc.IKEv2_Encrypted) and theirs.load == ours.data
    elif isinstance(ours, SkfPayload):
        assert isinstance(theirs, sc.IKEv2_Encrypted_Fragment)
        assert (theirs.frag_number, theirs.frag_total, theirs.load) == (
            ours.number,
            ours.total,
            ours.data,
        )
    assert theirs.length == 4 + len(ours.encode_body())
    assert bool(int(theirs.flags) & 0x80) == ours.critical


@given(messages())
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_scapy_dissects_same_payloads(msg: Message) -> None:
    data = msg.encode()
    pkt = sc.IKEv2(data)
    assert pkt.init_SPI == msg.spi_i and pkt.resp_SPI == msg.spi_r
    assert pkt.exch_type == msg.exchange and pkt.id == msg.message_id
    assert pkt.length == len(data)
    assert bool(int(pkt.flags) & 0x20) == msg.is_response
    theirs = _scapy_payloads(pkt)
    assert len(theirs) == len(msg.payloads)
    for ours, t in zip(msg.payloads, theirs, strict=True):
        _check(ours, t)
