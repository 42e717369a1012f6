"""Each direction authenticates its own way (RFC 7296 §2.15), pinned peer certificates, and
refusals that say which certificate, which CAs and why."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from certs_fixture import NOW, cert_auth, make_ca, make_leaf
from cryptography import x509
from harness import PSK, Harness, make_pair

from xfrmctl.ike.crypto.certs import TrustStore
from xfrmctl.ike.events import AuthenticationFailed, ChildSaReady, IkeSaEstablished
from xfrmctl.ike.spec import CertAuth, PeerCertAuth

CA_KEY, CA = make_ca()
A_CERT = cert_auth(CA_KEY, CA, "a.example", CA)
B_CERT = cert_auth(CA_KEY, CA, "b.example", CA)
A_LEAF = x509.load_der_x509_certificate(A_CERT.cert_chain[0])


def run(a: dict[str, Any], b: dict[str, Any]) -> Harness:
    h, _, _ = make_pair(a=a, b=b)
    for ep in (h.a, h.b):
        ep.wall_clock = lambda: NOW
    h.a.initiate("a-to-b", now=h.now)
    h.run(5.0)
    return h


def up_both(h: Harness) -> None:
    assert h.of("a", IkeSaEstablished) and h.of("b", IkeSaEstablished)
    assert h.of("a", ChildSaReady) and h.of("b", ChildSaReady)


def refused_by_b(h: Harness) -> str:
    (fb,) = h.of("b", AuthenticationFailed)
    assert not h.of("b", IkeSaEstablished)
    return fb.reason


def signer_only(auth: CertAuth) -> CertAuth:
    return dataclasses.replace(auth, trust_store=None)


def test_we_sign_and_the_peer_uses_a_psk() -> None:
    # A proves itself with its certificate, B with the PSK; each checks the other's way.
    a = {"auth": signer_only(A_CERT), "remote_auth": PSK}
    b = {"auth": PSK, "remote_auth": PeerCertAuth(TrustStore([CA]))}
    up_both(run(a, b))


def test_a_peer_using_the_other_method_is_refused() -> None:
    # B demands a certificate from A, but A authenticates with the PSK.
    a = {"auth": PSK, "remote_auth": PeerCertAuth(TrustStore([CA]))}
    b = {"auth": PSK, "remote_auth": PeerCertAuth(TrustStore([CA]))}
    h = run(a, b)
    assert not h.of("b", IkeSaEstablished) and not h.of("a", ChildSaReady)


def test_a_pinned_certificate_needs_no_ca() -> None:
    b = {"auth": signer_only(B_CERT), "remote_auth": PeerCertAuth(TrustStore(pinned=[A_LEAF]))}
    up_both(run({"auth": A_CERT}, b))


def test_a_certificate_other_than_the_pinned_one_is_refused() -> None:
    _, other = make_leaf(CA_KEY, CA, "a.example")  # same name, same CA, another certificate
    b = {"auth": signer_only(B_CERT), "remote_auth": PeerCertAuth(TrustStore(pinned=[other]))}
    reason = refused_by_b(run({"auth": A_CERT}, b))
    assert "not one of the pinned peer certificates" in reason and "a.example" in reason


def test_pinned_and_ca_together_need_both() -> None:
    _, rogue = make_ca("Rogue CA")
    trust = TrustStore([rogue], pinned=[A_LEAF])  # pinned, but not issued by a trusted CA
    b = {"auth": signer_only(B_CERT), "remote_auth": PeerCertAuth(trust)}
    assert "not trusted" in refused_by_b(run({"auth": A_CERT}, b))


def test_unknown_issuer_names_the_issuer_and_the_trusted_cas() -> None:
    rogue_key, rogue = make_ca("Rogue CA")
    a_auth = cert_auth(rogue_key, rogue, "a.example", CA)
    trust = TrustStore([CA], origins=["/etc/xfrmctl/ca.pem"])
    b = {"auth": signer_only(B_CERT), "remote_auth": PeerCertAuth(trust)}
    reason = refused_by_b(run({"auth": a_auth}, b))
    assert "CN=a.example" in reason and "its issuer 'CN=Rogue CA'" in reason, reason
    assert "trusted CAs: 'CN=Test CA' from /etc/xfrmctl/ca.pem" in reason, reason
    assert "candidates exhausted" not in reason


def test_a_ca_of_the_same_name_with_another_key_is_explained() -> None:
    twin_key, twin = make_ca()  # "Test CA" again, another key
    a_auth = cert_auth(twin_key, twin, "a.example", CA)
    b = {"auth": signer_only(B_CERT), "remote_auth": PeerCertAuth(TrustStore([CA]))}
    reason = refused_by_b(run({"auth": a_auth}, b))
    assert "is not trusted: signature does not match (trusted CAs: 'CN=Test CA')" in reason


@pytest.mark.parametrize(("when", "word"), [(+400, "expired"), (-400, "not valid before")])
def test_validity_is_named(when: int, word: str) -> None:
    import datetime as dt

    h, _, _ = make_pair(a={"auth": A_CERT}, b={"auth": B_CERT})
    for ep in (h.a, h.b):
        ep.wall_clock = lambda: NOW + dt.timedelta(days=when)
    h.a.initiate("a-to-b", now=h.now)
    h.run(5.0)
    (fb,) = h.of("b", AuthenticationFailed)
    assert word in fb.reason and "a.example" in fb.reason, fb.reason
