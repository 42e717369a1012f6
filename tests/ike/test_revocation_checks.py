"""crypto.revocation: CRLs and OCSP answers verified, looked up and cached; strongSwan's
strict/ifuri/relaxed policies; every certificate of the chain with its issuer is checked."""

from __future__ import annotations

import datetime as dt

import pytest
from certs_fixture import NOW
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp
from revocation_fixture import CRL_URI, DAY, OCSP_URI, Pki

from xfrmctl.ike.crypto import revocation as rv
from xfrmctl.ike.crypto.errors import CertificateError

KEY_COMPROMISE = x509.ReasonFlags.key_compromise


def links_for(pki: Pki, cert: x509.Certificate) -> list[rv.Link]:
    return rv.chain_links(cert, [], [pki.cert])


def check(
    links: list[rv.Link],
    config: rv.RevocationConfig | None = None,
    cache: rv.RevocationCache | None = None,
    failures: dict[tuple[str, str], str] | None = None,
    now: dt.datetime = NOW,
) -> rv.Refusal | rv.NeedFetch | None:
    return rv.check_chain(
        links, config or rv.RevocationConfig(), cache or rv.RevocationCache(), now, failures or {}
    )


def crl_config(
    pki: Pki, policy: rv.Policy = rv.Policy.RELAXED, **kw: object
) -> rv.RevocationConfig:
    crl = rv.load_crl(pki.crl(**kw), "/etc/x/ca.crl")  # type: ignore[arg-type]
    return rv.RevocationConfig(policy, (rv.LoadedCrl("/etc/x/ca.crl", crl),))


def fetch(
    need: rv.Refusal | rv.NeedFetch | None,
    answers: dict[str, bytes | None],
    cache: rv.RevocationCache,
) -> dict[tuple[str, str], str]:
    """Answer each request as a host would; the failures, by (kind, uri)."""
    assert isinstance(need, rv.NeedFetch)
    failures = {}
    for req, links in need.requests.items():
        data = answers.get(req.uri)
        result = rv.FetchResult(req.kind, req.uri, data, "" if data else "connection refused")
        why = rv.absorb(result, links, cache, NOW)
        if why:
            failures[(req.kind, req.uri)] = why
    return failures


def test_a_configured_crl_refuses_a_revoked_certificate_and_says_why() -> None:
    pki = Pki.new()
    _, bad = pki.issue("bad.example", crl=None, ocsp_uri=None)
    _, good = pki.issue("good.example", crl=None, ocsp_uri=None)
    pki.revoke(bad, KEY_COMPROMISE)
    config = crl_config(pki, rv.Policy.STRICT)
    refusal = check(links_for(pki, bad), config)
    assert isinstance(refusal, rv.Refusal) and refusal.kind == "revoked"
    assert f"serial {bad.serial_number:#x}" in refusal.reason
    assert "CRL file /etc/x/ca.crl" in refusal.reason and "key_compromise" in refusal.reason
    assert (NOW - 2 * DAY).date().isoformat() in refusal.reason
    assert check(links_for(pki, good), config) is None  # strict: the CRL is a good status


@pytest.mark.parametrize(
    "kw",
    [
        {"next_": NOW - dt.timedelta(hours=1), "last": NOW - 2 * DAY},  # expired
        {"last": NOW + DAY},  # not yet valid
        {"key": "other"},  # signed by another key
    ],
    ids=["expired", "future", "forged"],
)
def test_an_unusable_crl_is_no_status(kw: dict[str, object]) -> None:
    pki = Pki.new()
    _, bad = pki.issue("bad.example", crl=None, ocsp_uri=None)
    pki.revoke(bad, KEY_COMPROMISE)
    if kw.get("key") == "other":
        kw["key"] = Pki.new("Revocation CA").key  # same name, another key
    strict = check(links_for(pki, bad), crl_config(pki, rv.Policy.STRICT, **kw))
    assert isinstance(strict, rv.Refusal) and strict.kind == "revocation"
    assert check(links_for(pki, bad), crl_config(pki, **kw)) is None  # relaxed


def test_requests_name_the_configured_responder_then_aia_then_cdp() -> None:
    pki = Pki.new()
    _, leaf = pki.issue("a.example")
    config = rv.RevocationConfig(ocsp_uris=("http://mine.test/ocsp",))
    need = check(links_for(pki, leaf), config)
    assert isinstance(need, rv.NeedFetch)
    reqs = list(need.requests)
    assert [(r.kind, r.uri) for r in reqs] == [
        ("ocsp", "http://mine.test/ocsp"),
        ("ocsp", OCSP_URI),
        ("crl", CRL_URI),
    ]
    sent = ocsp.load_der_ocsp_request(reqs[0].body)
    assert sent.serial_number == leaf.serial_number
    assert sent.issuer_key_hash == rv.key_hash(pki.cert)


def test_ocsp_revoked_answer_refuses_and_is_cached() -> None:
    pki = Pki.new()
    _, leaf = pki.issue("a.example", crl=None)
    pki.revoke(leaf, x509.ReasonFlags.superseded)
    cache = rv.RevocationCache()
    links = links_for(pki, leaf)
    assert fetch(check(links, cache=cache), {OCSP_URI: pki.ocsp(leaf)}, cache) == {}
    for _ in range(2):  # the second time from the cache alone
        refusal = check(links, cache=cache)
        assert isinstance(refusal, rv.Refusal) and refusal.kind == "revoked"
        assert f"OCSP {OCSP_URI} says revoked" in refusal.reason and "superseded" in refusal.reason
    # After nextUpdate the answer is stale: asked again.
    assert isinstance(check(links, cache=cache, now=NOW + 2 * DAY), rv.NeedFetch)


def test_ocsp_good_from_a_delegated_signer() -> None:
    pki = Pki.new()
    _, leaf = pki.issue("a.example", crl=None)
    cache = rv.RevocationCache()
    links = links_for(pki, leaf)
    answer = pki.ocsp(leaf, signer=pki.ocsp_signer())
    assert fetch(check(links, cache=cache), {OCSP_URI: answer}, cache) == {}
    assert check(links, rv.RevocationConfig(rv.Policy.STRICT), cache) is None


@pytest.mark.parametrize("case", ["no-eku", "stranger", "unknown", "expired", "garbage"])
def test_unusable_ocsp_answers_give_no_status(case: str) -> None:
    pki = Pki.new()
    _, leaf = pki.issue("a.example", crl=None)
    pki.revoke(leaf, KEY_COMPROMISE)  # each answer would say revoked if it were believed
    answer = {
        "no-eku": lambda: pki.ocsp(leaf, signer=pki.ocsp_signer(with_eku=False)),
        "stranger": lambda: pki.ocsp(leaf, signer=Pki.new("Revocation CA").ocsp_signer()),
        "unknown": lambda: pki.ocsp(leaf, status=ocsp.OCSPCertStatus.UNKNOWN),
        "expired": lambda: pki.ocsp(leaf, next_=NOW - dt.timedelta(minutes=30)),
        "garbage": lambda: b"\x30\x03\x0a\x01\x00" + b"junk",
    }[case]()
    cache = rv.RevocationCache()
    links = links_for(pki, leaf)
    failures = fetch(check(links, cache=cache), {OCSP_URI: answer}, cache)
    assert set(failures) == {("ocsp", OCSP_URI)}
    assert check(links, cache=cache, failures=failures) is None  # relaxed
    strict = rv.RevocationConfig(rv.Policy.STRICT)
    refusal = check(links, strict, cache, failures)
    assert isinstance(refusal, rv.Refusal) and refusal.kind == "revocation"
    assert OCSP_URI in refusal.reason


def test_policies_when_nothing_can_be_learnt() -> None:
    pki = Pki.new()
    _, with_uri = pki.issue("a.example")
    _, without = pki.issue("b.example", crl=None, ocsp_uri=None)
    failed = {("ocsp", OCSP_URI): "connection refused", ("crl", CRL_URI): "connection refused"}
    cases = {
        (rv.Policy.RELAXED, True): None,
        (rv.Policy.RELAXED, False): None,
        (rv.Policy.IFURI, True): "revocation",
        (rv.Policy.IFURI, False): None,
        (rv.Policy.STRICT, True): "revocation",
        (rv.Policy.STRICT, False): "revocation",
    }
    for (policy, uri), want in cases.items():
        cert = with_uri if uri else without
        got = check(links_for(pki, cert), rv.RevocationConfig(policy), failures=failed)
        assert (got.kind if isinstance(got, rv.Refusal) else got) == want, (policy, uri)


def test_a_revoked_intermediate_refuses_the_chain() -> None:
    root = Pki.new("Root CA")
    sub = root.sub_ca("Sub CA")
    _, leaf = sub.issue("a.example", crl=None, ocsp_uri=None)
    root.revoke(sub.cert, x509.ReasonFlags.ca_compromise)
    links = rv.chain_links(leaf, [sub.cert], [root.cert])
    assert [link.cert for link in links] == [leaf, sub.cert]
    crl = rv.RevocationConfig(crls=(rv.LoadedCrl("root.crl", rv.load_crl(root.crl(), "x")),))
    refusal = check(links, crl)
    assert isinstance(refusal, rv.Refusal) and "Sub CA" in refusal.reason
    assert "ca_compromise" in refusal.reason


def test_crl_fetched_over_http_covers_every_certificate_of_its_issuer() -> None:
    pki = Pki.new()
    _, a = pki.issue("a.example", ocsp_uri=None)
    _, b = pki.issue("b.example", ocsp_uri=None)
    pki.revoke(b, KEY_COMPROMISE)
    cache = rv.RevocationCache()
    pem = x509.load_der_x509_crl(pki.crl()).public_bytes(serialization.Encoding.PEM)
    assert fetch(check(links_for(pki, a), cache=cache), {CRL_URI: pem}, cache) == {}
    assert check(links_for(pki, a), rv.RevocationConfig(rv.Policy.STRICT), cache) is None
    refusal = check(links_for(pki, b), cache=cache)  # no fetch: the cached CRL speaks for b
    assert isinstance(refusal, rv.Refusal) and f"CRL {CRL_URI} says revoked" in refusal.reason


def test_a_crl_file_that_is_no_crl_is_named() -> None:
    with pytest.raises(CertificateError, match=r"/x\.crl: not a PEM or DER CRL"):
        rv.load_crl(b"hello", "/x.crl")
