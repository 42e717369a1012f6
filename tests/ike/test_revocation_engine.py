"""IKE_AUTH parks while the host fetches revocation status, in both roles; a parked IKE SA
stalls no other one and times out by its own timers; a revoked peer is refused with the reason."""

from __future__ import annotations

import dataclasses
from typing import Any

from certs_fixture import NOW
from cryptography import x509
from harness import Harness, make_pair, seeded_endpoint
from revocation_fixture import CRL_URI, OCSP_URI, Pki

from xfrmctl.ike.crypto import revocation as rv
from xfrmctl.ike.crypto.certs import TrustStore
from xfrmctl.ike.diagnosis_auth import diagnose_auth
from xfrmctl.ike.engine import IkeEndpoint
from xfrmctl.ike.events import (
    AuthenticationFailed,
    IkeSaEstablished,
    RevocationFetchNeeded,
)
from xfrmctl.ike.spec import CertAuth

PKI = Pki.new()
A_AUTH, A_LEAF = PKI.auth("a.example")
B_AUTH, B_LEAF = PKI.auth("b.example")
PLAIN_A, _ = PKI.auth("a.example", crl=None, ocsp_uri=None)


def policy(auth: CertAuth, p: rv.Policy) -> CertAuth:
    return dataclasses.replace(auth, revocation=rv.RevocationConfig(p, timeout=2.0))


def harness(a: dict[str, Any], b: dict[str, Any]) -> Harness:
    h, _, _ = make_pair(a=a, b=b)
    for ep in (h.a, h.b):
        ep.wall_clock = lambda: NOW
    return h


def answer(h: Harness, side: str, data: dict[str, bytes | None]) -> RevocationFetchNeeded:
    """Serve the last fetch `side` asked for: bytes per URI, None = connection refused."""
    ep = h.a if side == "a" else h.b
    need = h.of(side, RevocationFetchNeeded)[-1]
    results = [
        rv.FetchResult(r.kind, r.uri, data.get(r.uri), "" if data.get(r.uri) else "refused")
        for r in need.requests
    ]
    ep.revocation_fetched(need.ike_sa_id, results, h.now)
    return need


def test_responder_parks_then_refuses_a_revoked_initiator() -> None:
    pki = Pki.new()
    a_auth, a_leaf = pki.auth("a.example")
    b_auth, _ = pki.auth("b.example", crl=None, ocsp_uri=None)
    pki.revoke(a_leaf, x509.ReasonFlags.key_compromise)
    h = harness({"auth": a_auth}, {"auth": b_auth})
    h.a.initiate("a-to-b", now=h.now)
    h.run(3.0)  # past A's first IKE_AUTH retransmission: B must not answer or re-ask
    (need,) = h.of("b", RevocationFetchNeeded)
    assert {(r.kind, r.uri) for r in need.requests} == {("ocsp", OCSP_URI), ("crl", CRL_URI)}
    assert need.timeout == 5.0 and not h.of("a", AuthenticationFailed)
    answer(h, "b", {OCSP_URI: None, CRL_URI: pki.crl()})
    h.run(2.0)
    (fb,) = h.of("b", AuthenticationFailed)
    assert fb.kind == "revoked" and f"serial {a_leaf.serial_number:#x}" in fb.reason
    assert f"CRL {CRL_URI} says revoked" in fb.reason and "key_compromise" in fb.reason
    (fa,) = h.of("a", AuthenticationFailed)
    assert fa.kind == "peer_rejected"
    assert not h.of("a", IkeSaEstablished) and not h.b.ike_sas()


def test_initiator_parks_then_accepts_a_good_responder_and_caches() -> None:
    b_strict = policy(B_AUTH, rv.Policy.STRICT)
    h = harness({"auth": policy(A_AUTH, rv.Policy.STRICT)}, {"auth": b_strict})
    h.a.initiate("a-to-b", now=h.now)
    h.run(1.0)
    answer(h, "b", {OCSP_URI: PKI.ocsp(A_LEAF)})  # B checks A by OCSP
    h.run(1.0)
    need = answer(h, "a", {OCSP_URI: PKI.ocsp(B_LEAF)})  # then A checks B
    assert need.conn == "a-to-b"
    h.run(2.0)
    assert h.of("a", IkeSaEstablished) and h.of("b", IkeSaEstablished)
    # A second IKE SA needs no fetch: both answers are cached until their nextUpdate.
    h.a.initiate("a-to-b", now=h.now)
    h.run(2.0)
    assert len(h.of("a", IkeSaEstablished)) == 2 and len(h.of("a", RevocationFetchNeeded)) == 1


def test_strict_refuses_and_relaxed_accepts_when_fetches_fail() -> None:
    for p, up in ((rv.Policy.STRICT, False), (rv.Policy.RELAXED, True)):
        h = harness({"auth": policy(PLAIN_A, p)}, {"auth": B_AUTH})
        h.a.initiate("a-to-b", now=h.now)
        h.run(1.0)
        answer(h, "a", {})
        h.run(2.0)
        assert bool(h.of("a", IkeSaEstablished)) == up, p
        if not up:
            (fa,) = h.of("a", AuthenticationFailed)
            assert fa.kind == "revocation" and "refused" in fa.reason and OCSP_URI in fa.reason


def test_a_parked_ike_sa_stalls_no_other_and_times_out() -> None:
    """A2 uses a certificate without URIs; A1's certificate makes B fetch, and B's host never
    answers: A2 comes up meanwhile, A1 is decided by the policy at B's half-open timeout."""
    a1, b_spec = _pair_specs_two()
    h = Harness(IkeEndpoint(a1, config=None), seeded_endpoint(b_spec, None, 7))
    for ep in (h.a, h.b):
        ep.wall_clock = lambda: NOW
    h.a.initiate("one", now=h.now)
    h.run(0.5)
    assert len(h.of("b", RevocationFetchNeeded)) == 1
    h.a.initiate("two", now=h.now)
    h.run(2.0)
    assert [e.conn for e in h.of("a", IkeSaEstablished)] == ["two"]
    assert not h.of("b", AuthenticationFailed)
    h.run(2.0)  # 2 x 2 s after B parked: ifuri and A1 has URIs, so it is refused
    (fb,) = h.of("b", AuthenticationFailed)
    assert fb.kind == "revocation" and "no answer in time" in fb.reason
    assert len(h.b.ike_sas()) == 1 and not h.b.revocations.waits


def _pair_specs_two() -> tuple[list[Any], Any]:
    from harness import pair_specs

    b_auth, _ = PKI.auth("b.example", crl=None, ocsp_uri=None)
    b_ifuri = policy(b_auth, rv.Policy.IFURI)
    one, b = pair_specs(a={"auth": A_AUTH, "name": "one"}, b={"auth": b_ifuri})
    two = dataclasses.replace(one, name="two", auth=PLAIN_A)
    return [one, two], b


def test_explain_says_revoked_or_no_status_and_what_to_do() -> None:
    pki = Pki.new()
    a_auth, _ = pki.auth("a.example", crl=None, ocsp_uri=None)
    b_auth, b_leaf = pki.auth("b.example", ocsp_uri=None)
    pki.revoke(b_leaf, x509.ReasonFlags.cessation_of_operation)
    for crl, kind in ((pki.crl(), "revoked"), (None, "revocation")):
        h = harness({"auth": policy(a_auth, rv.Policy.STRICT)}, {"auth": b_auth})
        h.a.initiate("a-to-b", now=h.now)
        h.run(1.0)
        answer(h, "a", {CRL_URI: crl})
        h.run(2.0)
        (fa,) = h.of("a", AuthenticationFailed)
        assert fa.kind == kind
        text = "\n".join(diagnose_auth(fa).lines())
        if kind == "revoked":
            assert "includes a revoked certificate" in text and "cessation_of_operation" in text
            assert "needs a new certificate" in text
        else:
            assert "no revocation status could be obtained" in text and CRL_URI in text
            assert "connections.a-to-b.remote.crls" in text
            assert "connections.a-to-b.remote.revocation: relaxed`" in text


def test_a_configured_intermediate_is_checked_up_to_the_anchor() -> None:
    """The peer sends its leaf only; the sub-CA in our cacerts completes the chain, and the
    root's CRL, which revokes that sub-CA, refuses it (the walk does not stop at cacerts)."""
    root = Pki.new("Root CA")
    sub = root.sub_ca("Sub CA")
    a_auth, _ = sub.auth("a.example", crl=None, ocsp_uri=None)
    b_auth, _ = root.auth("b.example", crl=None, ocsp_uri=None)
    root.revoke(sub.cert, x509.ReasonFlags.ca_compromise)
    crl = rv.LoadedCrl("root.crl", rv.load_crl(root.crl(), "root.crl"))
    trust = TrustStore([root.cert, sub.cert])
    b_auth = dataclasses.replace(
        b_auth, trust_store=trust, revocation=rv.RevocationConfig(crls=(crl,))
    )
    a_auth = dataclasses.replace(a_auth, trust_store=TrustStore([root.cert]))
    h = harness({"auth": a_auth}, {"auth": b_auth})
    h.a.initiate("a-to-b", now=h.now)
    h.run(3.0)
    (failed,) = h.of("b", AuthenticationFailed)
    assert "Sub CA" in failed.reason and "ca_compromise" in failed.reason, failed.reason
    assert not h.of("b", IkeSaEstablished)
