"""A peer's malformed certificate is an authentication failure, answered as one: never an
exception inside the engine (found by fuzzing: a DER version of 10 raised InvalidVersion)."""

from __future__ import annotations

import dataclasses

from certs_fixture import NOW, cert_auth, make_ca
from harness import Harness, make_pair
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xfrmctl.ike.events import AuthenticationFailed, ChildSaReady, IkeSaEstablished
from xfrmctl.ike.spec import CertAuth

CA_KEY, CA = make_ca()
A_AUTH = cert_auth(CA_KEY, CA, "a.example", CA)
B_AUTH = cert_auth(CA_KEY, CA, "b.example", CA)
LEAF = A_AUTH.cert_chain[0]
VERSION_3 = b"\xa0\x03\x02\x01\x02"  # TBSCertificate's [0] EXPLICIT INTEGER 2 (v3)


def run_with_leaf(der: bytes) -> Harness:
    a_auth: CertAuth = dataclasses.replace(A_AUTH, cert_chain=(der,))
    h, _, _ = make_pair(a={"auth": a_auth}, b={"auth": B_AUTH})  # strict: a guard firing raises
    for ep in (h.a, h.b):
        ep.wall_clock = lambda: NOW
    h.a.initiate("a-to-b", now=h.now)
    h.run(5.0)
    return h


def refused(h: Harness) -> str:
    """B refused A's certificate and told A so (A saw AUTHENTICATION_FAILED)."""
    (fb,) = h.of("b", AuthenticationFailed)
    assert h.of("a", AuthenticationFailed), "A was not told"
    assert not h.of("b", ChildSaReady) and not h.of("b", IkeSaEstablished)
    assert not h.b.ike_sas(), "B kept a half-open SA"
    return fb.reason


def test_invalid_certificate_version_is_an_authentication_failure() -> None:
    assert LEAF.count(VERSION_3) == 1
    reason = refused(run_with_leaf(LEAF.replace(VERSION_3, b"\xa0\x03\x02\x01\x0a")))
    assert "bad certificate" in reason and "version" in reason.lower(), reason


def test_garbage_and_truncated_certificates_are_authentication_failures() -> None:
    for der in (b"", b"\x30\x03\x02\x01", b"not a certificate", LEAF[: len(LEAF) // 2]):
        assert "bad certificate" in refused(run_with_leaf(der))


@given(
    st.lists(st.tuples(st.integers(0, len(LEAF) - 1), st.integers(1, 255)), min_size=1, max_size=4)
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_certificates_never_escape(flips: list[tuple[int, int]]) -> None:
    der = bytearray(LEAF)
    for pos, x in flips:
        der[pos] ^= x
    h = run_with_leaf(bytes(der))
    if h.of("b", IkeSaEstablished):  # a flip the signature does not cover (outer padding)
        return
    refused(h)
