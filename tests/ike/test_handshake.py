"""IKE_SA_INIT + IKE_AUTH + first Child SA between two in-memory engines, both roles."""

from __future__ import annotations

from harness import A_IP, B_IP, make_pair

from xfrmctl.ike.events import ChildSaReady, IkeSaEstablished
from xfrmctl.ike.iana import EncrId, ProtocolId


def test_psk_handshake_installs_matching_child_sas() -> None:
    h, a_spec, b_spec = make_pair()
    h.a.initiate("a-to-b", now=h.now)
    h.run(2.0)
    (ea,) = h.of("a", IkeSaEstablished)
    (eb,) = h.of("b", IkeSaEstablished)
    assert ea.initiator and not eb.initiator
    assert ea.remote_id == "b.example" and eb.remote_id == "a.example"
    (ca,) = h.of("a", ChildSaReady)
    (cb,) = h.of("b", ChildSaReady)
    assert ca.protocol == ProtocolId.ESP and ca.encr is not None
    assert ca.encr.id == EncrId.AES_GCM_16 and ca.integ is None
    assert ca.spi_in == cb.spi_out and ca.spi_out == cb.spi_in
    assert ca.encr_key_out == cb.encr_key_in and ca.encr_key_in == cb.encr_key_out
    assert len(ca.encr_key_out) == 36 and ca.encr_key_in != ca.encr_key_out
    assert ca.local == A_IP and ca.remote == B_IP
    assert [str(t) for t in ca.local_ts] == ["10.1.0.0/16"]
    assert [str(t) for t in ca.remote_ts] == ["10.2.0.0/16"]
    assert ca.local_ts == cb.remote_ts and ca.remote_ts == cb.local_ts
    assert ca.encap is None and ca.reqid > 0
    assert "encr_key" not in repr(ca)
