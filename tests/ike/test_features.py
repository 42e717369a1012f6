"""NAT traversal, cookies, INVALID_KE_PAYLOAD retry, fragmentation, certificates, limits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from certs_fixture import NOW, cert_auth, make_ca
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from harness import NAT_IP, Harness, make_pair

from xfrmctl.ike.engine import EndpointConfig, IkeEndpoint
from xfrmctl.ike.events import (
    AuthenticationFailed,
    ChildSaReady,
    IkeSaEstablished,
    NegotiationFailed,
    ProtocolViolation,
)
from xfrmctl.ike.iana import ExchangeType, KeId, NotifyType, PayloadType
from xfrmctl.ike.message import Message, decode_message
from xfrmctl.ike.payloads import (
    CertPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    SaPayload,
    SkfPayload,
    UnknownPayload,
    decode_payloads,
)
from xfrmctl.ike.sk import unprotect
from xfrmctl.ike.spec import Encap


def up(h: Harness) -> None:
    h.a.initiate("a-to-b", now=h.now)
    h.run(5.0)


def test_nat_detected_floats_to_4500_and_encapsulates() -> None:
    h, _, _ = make_pair()
    h.nat_a = True
    up(h)
    (ca,) = h.of("a", ChildSaReady)
    (cb,) = h.of("b", ChildSaReady)
    assert ca.encap is not None and (ca.encap.local_port, ca.encap.remote_port) == (4500, 4500)
    assert cb.encap is not None and cb.encap.local_port == 4500
    assert cb.encap.remote_port == 44500  # the NAT's mapping of A's port 4500
    (sa_a,) = h.a.ike_sas()
    (sa_b,) = h.b.ike_sas()
    assert sa_a.nat_local and not sa_a.nat_remote
    assert sa_b.nat_remote and sa_b.remote == (NAT_IP, 44500)
    # IKE_AUTH onwards went over 4500
    auth = [d for s, d in h.log if s == "a" and decode_message(d).exchange == ExchangeType.IKE_AUTH]
    assert auth


def test_no_nat_stays_on_500_without_encap() -> None:
    h, _, _ = make_pair()
    up(h)
    (ca,) = h.of("a", ChildSaReady)
    assert ca.encap is None and h.a.ike_sas()[0].local[1] == 500


def test_forced_encapsulation() -> None:
    h, _, _ = make_pair(a={"encap": Encap.FORCE})
    up(h)
    (ca,) = h.of("a", ChildSaReady)
    (cb,) = h.of("b", ChildSaReady)
    assert ca.encap is not None and cb.encap is not None


def test_cookie_challenge_then_success() -> None:
    cfg = EndpointConfig(cookie_threshold=0)
    h, _, _ = make_pair(config=cfg)
    up(h)
    assert h.of("a", IkeSaEstablished) and h.of("b", ChildSaReady)
    init = [decode_message(d) for s, d in h.log if decode_message(d).exchange == 34]
    first_answer = init[1]
    assert first_answer.is_response and first_answer.spi_r == bytes(8)
    assert [p.notify_type for p in first_answer.payloads if isinstance(p, NotifyPayload)] == [
        NotifyType.COOKIE
    ]
    retry = init[2]
    assert isinstance(retry.payloads[0], NotifyPayload)
    assert retry.payloads[0].notify_type == NotifyType.COOKIE


def test_bad_cookie_is_challenged_again_without_state() -> None:
    cfg = EndpointConfig(cookie_threshold=0)
    ep = IkeEndpoint([], config=cfg)
    _h, a_spec, b_spec = make_pair(config=cfg)
    ep.update_specs([b_spec])
    msg = Message(
        b"\x01" * 8,
        bytes(8),
        ExchangeType.IKE_SA_INIT,
        0,
        False,
        True,
        (
            NotifyPayload(NotifyType.COOKIE, b"\x00" + b"forged" * 5),
            SaPayload(a_spec.ike_proposals),
            KePayload(KeId.CURVE25519, b"\x09" * 32),
            NoncePayload(b"\x01" * 32),
        ),
    )
    from harness import A_IP, B_IP

    ep.receive_datagram(msg.encode(), (B_IP, 500), (A_IP, 500), 0.0)
    (out,) = ep.datagrams_to_send()
    reply = decode_message(out.data)
    assert isinstance(reply.payloads[0], NotifyPayload)
    assert reply.payloads[0].notify_type == NotifyType.COOKIE
    assert ep.ike_sas() == []


def test_invalid_ke_payload_retry() -> None:
    h, _, _ = make_pair(
        a={"ike": ("aes256gcm16-prfsha256-x25519-ecp256",)},
        b={"ike": ("aes256gcm16-prfsha256-ecp256",)},
    )
    up(h)
    assert h.of("a", ChildSaReady) and h.of("b", ChildSaReady)
    inits = [decode_message(d) for s, d in h.log if decode_message(d).exchange == 34]
    assert len(inits) == 4
    groups = [p.group for m in inits for p in m.payloads if isinstance(p, KePayload)]
    assert groups[0] == KeId.CURVE25519 and groups[1:] == [KeId.ECP256, KeId.ECP256]
    err = [p for p in inits[1].payloads if isinstance(p, NotifyPayload)]
    assert err[0].notify_type == NotifyType.INVALID_KE_PAYLOAD and err[0].data == b"\x00\x13"


def test_fragmentation_of_large_messages() -> None:
    cfg = EndpointConfig(fragment_size=200)
    h, _, _ = make_pair(config=cfg)
    up(h)
    assert h.of("a", ChildSaReady) and h.of("b", ChildSaReady)
    frags = [
        (s, decode_message(d))
        for s, d in h.log
        if decode_message(d).exchange == ExchangeType.IKE_AUTH
    ]
    requests = [m for s, m in frags if s == "a"]
    assert len(requests) >= 2 and all(isinstance(m.payloads[-1], SkfPayload) for m in requests)
    assert all(len(d) <= 200 for s, d in h.log if decode_message(d).exchange == 35)
    totals = {m.payloads[-1].total for _, m in frags if isinstance(m.payloads[-1], SkfPayload)}
    assert min(totals) >= 2


def test_fragments_lost_then_retransmitted() -> None:
    cfg = EndpointConfig(fragment_size=200, retransmit_timeout=1.0)
    h, _, _ = make_pair(config=cfg)
    dropped = []

    def drop_second_fragment_once(f):  # type: ignore[no-untyped-def]
        m = decode_message(f.dg.data)
        last = m.payloads[-1] if m.payloads else None
        if isinstance(last, SkfPayload) and last.number == 2 and not dropped:
            dropped.append(1)
            return []
        return [f]

    h.hook = drop_second_fragment_once
    up(h)
    assert dropped and h.of("a", ChildSaReady) and h.of("b", ChildSaReady)


def test_certificate_authentication_ecdsa() -> None:
    ca_key, ca = make_ca()
    a_auth = cert_auth(ca_key, ca, "a.example", ca)
    b_auth = cert_auth(ca_key, ca, "b.example", ca)
    h, _a_spec, _b_spec = make_pair(a={"auth": a_auth}, b={"auth": b_auth})
    for ep in (h.a, h.b):
        ep.wall_clock = lambda: NOW
    up(h)
    assert h.of("a", IkeSaEstablished) and h.of("b", IkeSaEstablished)
    assert h.of("a", ChildSaReady)
    # A's IKE_AUTH carried its leaf certificate, and B authenticated A by it.
    (auth_req,) = [
        d for s, d in h.log if s == "a" and decode_message(d).exchange == ExchangeType.IKE_AUTH
    ]
    (b_sa,) = h.b.sas.values()
    assert b_sa.crypto is not None
    msg = decode_message(auth_req)
    inner = decode_payloads(*unprotect(b_sa.crypto.in_keys(), auth_req, msg))
    certs = [p.data for p in inner if isinstance(p, CertPayload)]
    assert certs == list(a_auth.cert_chain)
    (est_b,) = h.of("b", IkeSaEstablished)
    assert est_b.remote_id == "a.example"


@pytest.mark.parametrize("kind", ["ed25519", "rsa-pss", "secp384r1"])
def test_certificate_authentication_other_leaf_keys(kind: str) -> None:
    """RFC 7427 signatures with each key type a leaf may carry (the CA stays ECDSA: the
    certificate verifier of `cryptography` refuses Ed25519-signed chains)."""
    ca_key, ca = make_ca()
    keys: dict[str, Callable[[], CertificateIssuerPrivateKeyTypes]] = {
        "ed25519": ed25519.Ed25519PrivateKey.generate,
        "rsa-pss": lambda: rsa.generate_private_key(65537, 2048),
        "secp384r1": lambda: ec.generate_private_key(ec.SECP384R1()),
    }
    a_auth = cert_auth(ca_key, ca, "a.example", ca, keys[kind]())
    b_auth = cert_auth(ca_key, ca, "b.example", ca)
    h, _a_spec, _b_spec = make_pair(a={"auth": a_auth}, b={"auth": b_auth})
    for ep in (h.a, h.b):
        ep.wall_clock = lambda: NOW
    up(h)
    assert h.of("a", IkeSaEstablished) and h.of("b", IkeSaEstablished)
    assert h.of("a", ChildSaReady) and h.of("b", ChildSaReady)


def test_certificate_from_untrusted_ca_fails() -> None:
    ca_key, ca = make_ca()
    rogue_key, rogue = make_ca("Rogue CA")
    a_auth = cert_auth(rogue_key, rogue, "a.example", ca)
    b_auth = cert_auth(ca_key, ca, "b.example", ca)
    h, _, _ = make_pair(a={"auth": a_auth}, b={"auth": b_auth})
    for ep in (h.a, h.b):
        ep.wall_clock = lambda: NOW
    up(h)
    (fb,) = h.of("b", AuthenticationFailed)
    assert "not trusted" in fb.reason
    assert h.of("a", AuthenticationFailed) and not h.of("b", ChildSaReady)


def test_certificate_identity_mismatch_fails() -> None:
    ca_key, ca = make_ca()
    a_auth = cert_auth(ca_key, ca, "mallory.example", ca)  # cert for another name
    b_auth = cert_auth(ca_key, ca, "b.example", ca)
    h, _, _ = make_pair(a={"auth": a_auth}, b={"auth": b_auth})
    for ep in (h.a, h.b):
        ep.wall_clock = lambda: NOW
    up(h)
    (fb,) = h.of("b", AuthenticationFailed)
    assert "does not match" in fb.reason


def test_half_open_limit_bounds_memory() -> None:
    from harness import A_IP, B_IP

    cfg = EndpointConfig(
        max_half_open=5, cookie_threshold=100, cookie_threshold_ip=100, block_threshold=100
    )
    h, a_spec, _b_spec = make_pair(config=cfg)
    for _i in range(12):
        h.a.update_specs([a_spec])
        h.a.initiate("a-to-b", now=h.now)
    for dg in h.a.datagrams_to_send():
        h.b.receive_datagram(dg.data, (B_IP, 500), (A_IP, 500), h.now)
    assert len(h.b.ike_sas()) == 5
    assert any("half-open" in e.reason for e in h.b.events() if isinstance(e, ProtocolViolation))
    # Half-open SAs expire.
    h.b.handle_timer(h.now + 31.0)
    assert h.b.ike_sas() == []


def test_unknown_critical_payload_answered() -> None:
    from harness import A_IP, B_IP

    h, a_spec, _ = make_pair()
    msg = Message(
        b"\x02" * 8,
        bytes(8),
        ExchangeType.IKE_SA_INIT,
        0,
        False,
        True,
        (
            SaPayload(a_spec.ike_proposals),
            KePayload(KeId.CURVE25519, b"\x09" * 32),
            NoncePayload(b"\x01" * 32),
            UnknownPayload(222, b"future", critical=True),
        ),
    )
    h.b.receive_datagram(msg.encode(), (B_IP, 500), (A_IP, 500), 0.0)
    (out,) = h.b.datagrams_to_send()
    (n,) = decode_message(out.data).payloads
    assert isinstance(n, NotifyPayload)
    assert n.notify_type == NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD and n.data == bytes([222])
    # Non-critical unknown payloads are skipped.
    msg2 = replace(msg, spi_i=b"\x03" * 8, payloads=(*msg.payloads[:3], UnknownPayload(222, b"x")))
    h.b.receive_datagram(msg2.encode(), (B_IP, 500), (A_IP, 500), 0.0)
    (out2,) = h.b.datagrams_to_send()
    kinds = [p.ptype for p in decode_message(out2.data).payloads]
    assert PayloadType.SA in kinds and PayloadType.KE in kinds


def test_no_matching_connection_for_address() -> None:
    from harness import A_IP

    h, _, b_spec = make_pair()
    import ipaddress

    h.b.update_specs([replace(b_spec, remote_addrs=(ipaddress.ip_address("10.99.0.1"),))])
    up(h)
    assert h.of("a", NegotiationFailed) and not h.of("b", IkeSaEstablished)
    assert A_IP


def test_fragmentation_no_sends_whole_messages() -> None:
    """`fragmentation: no` on either side: not announced, so IKE_AUTH goes unfragmented."""
    cfg = EndpointConfig(fragment_size=200)
    h, _, _ = make_pair(config=cfg, a={"fragmentation": False})
    up(h)
    assert h.of("a", ChildSaReady) and h.of("b", ChildSaReady)
    auth = [d for s, d in h.log if decode_message(d).exchange == ExchangeType.IKE_AUTH]
    assert auth and not any(isinstance(decode_message(d).payloads[-1], SkfPayload) for d in auth)
    (init,) = [decode_message(d) for s, d in h.log if s == "a"][:1]
    notes = [p.notify_type for p in init.payloads if isinstance(p, NotifyPayload)]
    assert NotifyType.IKEV2_FRAGMENTATION_SUPPORTED not in notes


def test_fragmentation_with_cbc_and_hmac() -> None:
    cfg = EndpointConfig(fragment_size=180)
    h, _, _ = make_pair(config=cfg, ike=("aes128-sha256-modp2048",))
    up(h)
    assert h.of("a", ChildSaReady) and h.of("b", ChildSaReady)
    skf = [d for s, d in h.log if isinstance(decode_message(d).payloads[-1], SkfPayload)]
    assert skf and all(len(d) <= 180 for d in skf)


def test_reassembly_is_bounded() -> None:
    import pytest

    from xfrmctl.ike.errors import MalformedMessage
    from xfrmctl.ike.sk import MAX_FRAGMENTS, MAX_REASSEMBLY_BYTES, Reassembly

    r = Reassembly(1, 3)
    assert not r.add(1, 3, 35, b"a")
    assert not r.add(1, 3, 35, b"a")  # duplicate ignored
    with pytest.raises(MalformedMessage):
        r.add(4, 3, 0, b"x")
    with pytest.raises(MalformedMessage):
        r.add(2, 4, 0, b"x")
    with pytest.raises(MalformedMessage):
        Reassembly(1, MAX_FRAGMENTS + 1).add(1, MAX_FRAGMENTS + 1, 0, b"x")
    big = Reassembly(1, 3)
    big.add(1, 3, 0, bytes(MAX_REASSEMBLY_BYTES - 10))
    with pytest.raises(MalformedMessage, match="too large"):
        big.add(2, 3, 0, bytes(20))


def test_status_snapshot() -> None:
    h, _, _ = make_pair()
    up(h)
    (s,) = h.a.ike_sas()
    assert s.state == "established" and s.initiator and s.conn == "a-to-b"
    assert s.proposal == "aes256gcm16-prfsha256-x25519"
    assert s.remote_id == "b.example" and s.local_id == "a.example"
    (c,) = s.children
    assert c.name == "net" and c.local_ts == ("10.1.0.0/16",) and c.proposal == "aes256gcm16"
    assert c.spi_in == h.b.ike_sas()[0].children[0].spi_out


def test_initiator_rejecting_responder_auth_tells_the_responder() -> None:
    from xfrmctl.ike.events import ChildSaDeleted, IkeSaDeleted

    ca_key, ca = make_ca()
    other_key, other = make_ca("Other CA")
    a_auth = cert_auth(ca_key, ca, "a.example", other)  # A trusts only "Other CA"
    b_auth = cert_auth(ca_key, ca, "b.example", ca)
    h, _, _ = make_pair(a={"auth": a_auth}, b={"auth": b_auth})
    for ep in (h.a, h.b):
        ep.wall_clock = lambda: NOW
    up(h)
    (fa,) = h.of("a", AuthenticationFailed)
    assert "not trusted" in fa.reason
    (fb,) = h.of("b", AuthenticationFailed)
    assert "rejected" in fb.reason
    assert h.of("b", ChildSaDeleted) and h.of("b", IkeSaDeleted)
    assert h.a.ike_sas() == [] and h.b.ike_sas() == []
    assert other_key is not None
