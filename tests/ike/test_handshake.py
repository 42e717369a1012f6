"""IKE_SA_INIT + IKE_AUTH + first Child SA between two in-memory engines, both roles."""

from __future__ import annotations

from harness import A_IP, B_IP, make_pair

from xfrmctl.ike.events import ChildSaReady, IkeSaEstablished
from xfrmctl.ike.iana import EncrId, ProtocolId


def test_psk_handshake_installs_matching_child_sas() -> None:
    h, _, _ = make_pair()
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


def _established(h: object) -> None:
    from harness import Harness

    assert isinstance(h, Harness)
    h.a.initiate("a-to-b", now=h.now)
    h.run(2.0)
    assert h.of("a", IkeSaEstablished) and h.of("b", IkeSaEstablished)


def test_wrong_psk_fails_authentication_on_both_sides() -> None:
    from dataclasses import replace

    from harness import PSK

    from xfrmctl.ike.events import AuthenticationFailed, IkeSaDeleted
    from xfrmctl.ike.spec import PskAuth

    h, _, b_spec = make_pair()
    h.b.update_specs([replace(b_spec, auth=PskAuth(PSK.psk + b"x"))])
    h.a.initiate("a-to-b", now=h.now)
    h.run(5.0)
    (fb,) = h.of("b", AuthenticationFailed)
    assert "pre-shared key mismatch" in fb.reason
    (fa,) = h.of("a", AuthenticationFailed)
    assert "AUTHENTICATION_FAILED" in fa.reason
    assert not h.of("a", ChildSaReady) and not h.of("b", ChildSaReady)
    assert h.of("a", IkeSaDeleted)
    assert h.a.ike_sas() == [] and h.b.ike_sas() == []


def test_unknown_peer_identity_is_rejected() -> None:
    from xfrmctl.ike.events import AuthenticationFailed

    _h, _, _ = make_pair(b={"remote_id": None})
    h2, _, _ = make_pair(a={"local_id": "intruder.example"})
    h2.a.initiate("a-to-b", now=h2.now)
    h2.run(5.0)
    (fb,) = h2.of("b", AuthenticationFailed)
    assert "intruder.example" in fb.reason
    assert h2.of("a", AuthenticationFailed)


def test_ike_proposal_mismatch_reports_both_offers() -> None:
    from xfrmctl.ike.events import NegotiationFailed

    h, _, _ = make_pair(
        a={"ike": ("aes128-sha256-modp3072",)}, b={"ike": ("aes256gcm16-prfsha384-x25519",)}
    )
    h.a.initiate("a-to-b", now=h.now)
    h.run(5.0)
    (na,) = h.of("a", NegotiationFailed)
    assert na.reason == "NO_PROPOSAL_CHOSEN"
    (nb,) = h.of("b", NegotiationFailed)
    assert nb.ours.proposal_text and nb.theirs.proposal_text
    assert "MODP_3072" in " ".join(nb.theirs.proposal_text).upper().replace("MODP3072", "MODP_3072")
    assert nb.ours.proposal_text != nb.theirs.proposal_text


def test_child_ts_mismatch_keeps_ike_sa_and_reports() -> None:
    from harness import child_spec

    from xfrmctl.ike.events import NegotiationFailed

    h, _, _ = make_pair(children=(child_spec(remote="10.9.0.0/16"),))
    # B mirrors A's child, so make B's differ by giving it an unrelated child
    from dataclasses import replace

    b_spec = next(iter(h.b.specs.values()))
    h.b.update_specs(
        [replace(b_spec, children=(child_spec(local="10.7.0.0/16", remote="10.8.0.0/16"),))]
    )
    h.a.initiate("a-to-b", now=h.now)
    h.run(3.0)
    assert h.of("a", IkeSaEstablished) and h.of("b", IkeSaEstablished)
    (nb,) = h.of("b", NegotiationFailed)
    assert nb.reason == "TS_UNACCEPTABLE"
    assert [str(t) for t in nb.theirs.remote_ts] == ["10.1.0.0/16"]
    (na,) = h.of("a", NegotiationFailed)
    assert na.reason == "TS_UNACCEPTABLE" and na.child == "net"
    assert not h.of("a", ChildSaReady)


def test_narrowing_to_responder_policy() -> None:
    from dataclasses import replace

    from harness import child_spec

    h, _, _ = make_pair(children=(child_spec(local="10.1.0.0/16", remote="10.2.0.0/16"),))
    b_spec = next(iter(h.b.specs.values()))
    h.b.update_specs(
        [replace(b_spec, children=(child_spec(local="10.2.3.0/24", remote="10.1.0.0/20"),))]
    )
    h.a.initiate("a-to-b", now=h.now)
    h.run(3.0)
    (ca,) = h.of("a", ChildSaReady)
    assert [str(t) for t in ca.local_ts] == ["10.1.0.0/20"]
    assert [str(t) for t in ca.remote_ts] == ["10.2.3.0/24"]


def test_transport_mode_negotiated() -> None:
    from harness import child_spec

    from xfrmctl.ike.spec import Mode

    h, _, _ = make_pair(
        children=(child_spec(local="192.0.2.1/32", remote="198.51.100.2/32", mode=Mode.TRANSPORT),)
    )
    _established(h)
    (ca,) = h.of("a", ChildSaReady)
    (cb,) = h.of("b", ChildSaReady)
    assert ca.mode == Mode.TRANSPORT and cb.mode == Mode.TRANSPORT


def test_cbc_sha2_with_ipv6_endpoints() -> None:
    import ipaddress

    import harness

    from xfrmctl.ike.iana import IntegId

    old_a, old_b = harness.A_IP, harness.B_IP
    harness.A_IP = ipaddress.ip_address("2001:db8::1")  # type: ignore[assignment]
    harness.B_IP = ipaddress.ip_address("2001:db8::2")  # type: ignore[assignment]
    try:
        h, _, _ = harness.make_pair(
            ike=("aes128-sha256-modp2048",),
            children=(
                harness.child_spec(
                    local="fd00:1::/64", remote="fd00:2::/64", proposals=("aes128-sha256",)
                ),
            ),
        )
        _established(h)
    finally:
        harness.A_IP, harness.B_IP = old_a, old_b
    (ca,) = h.of("a", ChildSaReady)
    (cb,) = h.of("b", ChildSaReady)
    assert ca.integ is not None and ca.integ.id == IntegId.HMAC_SHA2_256_128
    assert ca.integ_key_out == cb.integ_key_in and len(ca.integ_key_out) == 32
    assert str(ca.remote_ts[0]) == "fd00:2::/64"
