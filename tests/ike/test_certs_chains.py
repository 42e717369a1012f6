"""Certificate chains (RFC 7296 §3.6): intermediates sent and configured, the missing link
named, the depth bounded, CERTREQ choosing the chain we send (§3.7), and Ed25519/Ed448 CAs
(RFC 8420) that `cryptography`'s WebPKI verifier refuses."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from certs_fixture import NOW
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from harness import Harness, make_pair

from xfrmctl.ike.crypto.certs import MAX_CHAIN_DEPTH, TrustStore, load_certificate_chain
from xfrmctl.ike.crypto.chains import chain_for_request, key_hash
from xfrmctl.ike.crypto.errors import CertificateError
from xfrmctl.ike.crypto.signatures import LocalSigner
from xfrmctl.ike.events import AuthenticationFailed, ChildSaReady, IkeSaEstablished
from xfrmctl.ike.spec import CertAuth, PeerCertAuth

Key = CertificateIssuerPrivateKeyTypes
Issued = tuple[x509.Certificate, Key]
DER = Encoding.DER


def _hash(key: Key) -> hashes.SHA256 | None:
    return (
        None
        if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
        else hashes.SHA256()
    )


def issue(
    cn: str,
    issuer: Issued | None = None,
    *,
    ca: bool = True,
    key: Key | None = None,
    path_length: int | None = None,
    not_after: dt.datetime = NOW + dt.timedelta(days=365),
    key_usage: x509.KeyUsage | None = None,
    eku: list[x509.ObjectIdentifier] | None = None,
) -> Issued:
    """A certificate for `cn` signed by `issuer` (self-signed without), an ECDSA key by default."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    signer_cert, signer_key = issuer if issuer else (None, key)
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(signer_cert.subject if signer_cert else name)
        .public_key(key.public_key())  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=30))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)  # type: ignore[arg-type]
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()),  # type: ignore[arg-type]
            False,
        )
    )
    if ca:
        ku = key_usage or x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        b = b.add_extension(ku, critical=True)
    else:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
        if key_usage:
            b = b.add_extension(key_usage, critical=True)
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return b.sign(signer_key, _hash(signer_key)), key  # type: ignore[arg-type]


def ders(*certs: Issued) -> list[bytes]:
    return [c.public_bytes(DER) for c, _ in certs]


ROOT = issue("Root CA")
INTER = issue("Intermediate CA", ROOT)
SUB = issue("Sub CA", INTER)
LEAF = issue("a.example", SUB, ca=False)


# --- verification: intermediates from the peer and from the configuration ---------------


def test_intermediates_sent_by_the_peer_complete_the_chain() -> None:
    store = TrustStore([ROOT[0]])
    assert store.verify_chain(*ders(LEAF)[:1], ders(SUB, INTER), NOW) == LEAF[0]


def test_configured_non_self_signed_cacerts_act_as_intermediates() -> None:
    store = TrustStore([ROOT[0], INTER[0], SUB[0]])
    assert store.anchors == [ROOT[0]] and store.intermediates == [INTER[0], SUB[0]]
    assert store.verify_chain(LEAF[0].public_bytes(DER), [], NOW) == LEAF[0]
    # the peer sends part of the chain, the configuration the rest
    assert TrustStore([ROOT[0], INTER[0]]).verify_chain(*ders(LEAF), ders(SUB), NOW) == LEAF[0]


def test_a_configured_intermediate_alone_is_the_trust_anchor() -> None:
    # No self-signed certificate configured: the operator trusts that CA itself.
    store = TrustStore([SUB[0]])
    assert store.anchors == [SUB[0]]
    assert store.verify_chain(LEAF[0].public_bytes(DER), [], NOW) == LEAF[0]


def test_an_intermediate_does_not_become_trusted_beside_a_root() -> None:
    other_root = issue("Other Root")
    store = TrustStore([other_root[0], SUB[0]])  # SUB is only an intermediate here
    with pytest.raises(CertificateError, match="no issuer for CN=Sub CA"):
        store.verify_chain(LEAF[0].public_bytes(DER), [], NOW)


def test_the_missing_link_is_named() -> None:
    store = TrustStore([ROOT[0]], origins=["/etc/xfrmctl/root.pem"])
    with pytest.raises(CertificateError) as e:
        store.verify_chain(LEAF[0].public_bytes(DER), ders(SUB), NOW)  # INTER missing
    msg = str(e.value)
    assert "certificate 'CN=a.example' is not trusted" in msg, msg
    assert "no issuer for CN=Sub CA: its issuer 'CN=Intermediate CA'" in msg, msg
    assert "trusted CAs: 'CN=Root CA' from /etc/xfrmctl/root.pem" in msg, msg
    with pytest.raises(CertificateError, match=r"no issuer for CN=a\.example: its issuer 'CN=Sub"):
        store.verify_chain(LEAF[0].public_bytes(DER), [], NOW)


def _long_chain(n: int, key: Key | None = None) -> tuple[Issued, list[Issued], Issued]:
    root = issue("Deep Root", key=key)
    cas = [root]
    for i in range(n):
        cas.append(issue(f"Level {i}", cas[-1], key=key))
    return root, cas[1:], issue("deep.example", cas[-1], ca=False, key=key)


@pytest.mark.parametrize("eddsa", [False, True], ids=["webpki", "ed25519"])
def test_depth_is_bounded(eddsa: bool) -> None:
    key = ed25519.Ed25519PrivateKey.generate() if eddsa else None
    root, cas, leaf = _long_chain(MAX_CHAIN_DEPTH - 2, key)
    ok = TrustStore([root[0]]).verify_chain(*ders(leaf), ders(*reversed(cas)), NOW)
    assert ok == leaf[0]
    root, cas, leaf = _long_chain(MAX_CHAIN_DEPTH + 1, key)
    with pytest.raises(CertificateError, match=r"is not trusted: chain from .* longer than 8"):
        TrustStore([root[0]]).verify_chain(*ders(leaf), ders(*reversed(cas)), NOW)


# --- Ed25519 / Ed448 (RFC 8420) ----------------------------------------------------------


def ed_pki(kind: str) -> tuple[Issued, Issued, Issued]:
    def new() -> Key:
        return (
            ed25519.Ed25519PrivateKey.generate()
            if kind == "ed25519"
            else ed448.Ed448PrivateKey.generate()
        )

    root = issue(f"{kind} Root", key=new())
    inter = issue(f"{kind} Intermediate", root, key=new())
    return root, inter, issue("a.example", inter, ca=False, key=new())


@pytest.mark.parametrize("kind", ["ed25519", "ed448"])
def test_eddsa_chain_verifies(kind: str) -> None:
    root, inter, leaf = ed_pki(kind)
    assert TrustStore([root[0]]).verify_chain(*ders(leaf), ders(inter), NOW) == leaf[0]
    assert TrustStore([root[0], inter[0]]).verify_chain(*ders(leaf), [], NOW) == leaf[0]


def test_eddsa_root_over_ecdsa_leaf_and_vice_versa() -> None:
    root = issue("Ed Root", key=ed25519.Ed25519PrivateKey.generate())
    inter = issue("EC Inter", root)  # ECDSA key, Ed25519 signature
    leaf = issue("a.example", inter, ca=False, key=ed25519.Ed25519PrivateKey.generate())
    assert TrustStore([root[0]]).verify_chain(*ders(leaf), ders(inter), NOW) == leaf[0]


def test_eddsa_chain_refusals() -> None:
    root, inter, leaf = ed_pki("ed25519")
    store = TrustStore([root[0]])
    twin = issue("ed25519 Root", key=ed25519.Ed25519PrivateKey.generate())  # same name
    with pytest.raises(CertificateError, match="signature of 'CN=ed25519 Intermediate'"):
        TrustStore([twin[0]]).verify_chain(*ders(leaf), ders(inter), NOW)
    with pytest.raises(CertificateError, match="no issuer for CN=ed25519 Intermediate"):
        TrustStore([issue("Elsewhere", key=ed25519.Ed25519PrivateKey.generate())[0]]).verify_chain(
            *ders(leaf), ders(inter), NOW
        )
    late = NOW + dt.timedelta(days=200)
    old = issue("ed25519 Intermediate", root, key=inter[1], not_after=late - dt.timedelta(1))
    leaf2 = issue("b.example", old, ca=False, key=ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(CertificateError, match="is not valid at"):
        store.verify_chain(*ders(leaf2), ders(old), late)
    not_ca = issue("Not a CA", root, ca=False, key=ed25519.Ed25519PrivateKey.generate())
    under = issue("c.example", not_ca, ca=False, key=ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(CertificateError, match="is not a CA"):
        store.verify_chain(*ders(under), ders(not_ca), NOW)
    no_sign = x509.KeyUsage(True, False, False, False, False, False, True, False, False)
    weak = issue(
        "No keyCertSign", root, key=ed25519.Ed25519PrivateKey.generate(), key_usage=no_sign
    )
    under = issue("d.example", weak, ca=False, key=ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(CertificateError, match="lacks keyCertSign"):
        store.verify_chain(*ders(under), ders(weak), NOW)


def test_eddsa_path_length_and_leaf_usage() -> None:
    root = issue("Pathlen Root", key=ed25519.Ed25519PrivateKey.generate(), path_length=0)
    inter = issue("Too Deep", root, key=ed25519.Ed25519PrivateKey.generate())
    leaf = issue("a.example", inter, ca=False, key=ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(CertificateError, match="allows 0 intermediates below it, not 1"):
        TrustStore([root[0]]).verify_chain(*ders(leaf), ders(inter), NOW)
    root, inter, _ = ed_pki("ed25519")
    code = issue("e.example", inter, ca=False, eku=[ExtendedKeyUsageOID.CODE_SIGNING])
    with pytest.raises(CertificateError, match="EKU"):
        TrustStore([root[0]]).verify_chain(*ders(code), ders(inter), NOW)
    enc_only = x509.KeyUsage(False, False, True, False, False, False, False, False, False)
    enc = issue("f.example", inter, ca=False, key_usage=enc_only)
    with pytest.raises(CertificateError, match="keyUsage allows no signature"):
        TrustStore([root[0]]).verify_chain(*ders(enc), ders(inter), NOW)


# --- CERTREQ picks the chain we send -----------------------------------------------------

# One intermediate key certified twice: by ROOT_A and, cross-signed, by ROOT_B.
ROOT_A, ROOT_B = issue("Root A"), issue("Root B")
CROSS_KEY = ec.generate_private_key(ec.SECP256R1())
INTER_A = issue("Shared Intermediate", ROOT_A, key=CROSS_KEY)
INTER_B = issue("Shared Intermediate", ROOT_B, key=CROSS_KEY)
A_LEAF = issue("a.example", INTER_A, ca=False)
B_LEAF = issue("b.example", ROOT_A, ca=False)


def test_chain_for_request_picks_the_path_to_a_requested_ca() -> None:
    ours = [A_LEAF[0], INTER_A[0], INTER_B[0]]
    roots = [ROOT_A[0], ROOT_B[0]]
    assert chain_for_request(ours, {key_hash(ROOT_B[0])}, roots) == [A_LEAF[0], INTER_B[0]]
    assert chain_for_request(ours, {key_hash(ROOT_A[0])}, roots) == [A_LEAF[0], INTER_A[0]]
    assert chain_for_request(ours, {key_hash(INTER_A[0])}, roots) == [A_LEAF[0]]
    assert chain_for_request(ours, {b"\x01" * 20}, roots) == ours  # no match: everything
    assert chain_for_request(ours, set(), roots) == ours
    # the requested CA must be known (our chain or our CAs) to find the path leading to it
    assert chain_for_request(ours, {key_hash(ROOT_B[0])}) == ours
    with_root = [*ours, ROOT_B[0]]
    assert chain_for_request(with_root, {key_hash(ROOT_B[0])}) == [A_LEAF[0], INTER_B[0]]


class RecordingStore(TrustStore):
    """A trust store that remembers the certificates the peer sent."""

    received: list[list[bytes]]

    def verify_chain(
        self, leaf_der: bytes, intermediates_der: Sequence[bytes], now: dt.datetime | float
    ) -> x509.Certificate:
        self.received.append([leaf_der, *intermediates_der])
        return super().verify_chain(leaf_der, intermediates_der, now)


def _run(a: dict[str, Any], b: dict[str, Any]) -> Harness:
    h, _, _ = make_pair(a=a, b=b)
    for ep in (h.a, h.b):
        ep.wall_clock = lambda: NOW
    h.a.initiate("a-to-b", now=h.now)
    h.run(5.0)
    return h


def _a_auth(send_certreq: bool = True) -> CertAuth:
    chain = tuple(ders(A_LEAF, INTER_A, INTER_B))
    trust = TrustStore([ROOT_A[0], ROOT_B[0]])  # which tells A the CAs B may ask for
    return CertAuth(LocalSigner.from_key(A_LEAF[1]), chain, trust, send_certreq)


def _b(trusted: Issued, send_certreq: bool = True) -> tuple[dict[str, Any], RecordingStore]:
    store = RecordingStore([trusted[0]])
    store.received = []
    b_auth = CertAuth(LocalSigner.from_key(B_LEAF[1]), tuple(ders(B_LEAF)), None)
    return {"auth": b_auth, "remote_auth": PeerCertAuth(store, send_certreq)}, store


@pytest.mark.parametrize(
    ("trusted", "certreq", "sent"),
    [
        (ROOT_B, True, [A_LEAF, INTER_B]),
        (ROOT_A, True, [A_LEAF, INTER_A]),
        (ROOT_B, False, [A_LEAF, INTER_A, INTER_B]),
        (ROOT_A, False, [A_LEAF, INTER_A, INTER_B]),
    ],
    ids=["certreq-root-b", "certreq-root-a", "no-certreq-b", "no-certreq-a"],
)
def test_engines_send_the_chain_the_certreq_asks_for(
    trusted: Issued, certreq: bool, sent: list[Issued]
) -> None:
    b, store = _b(trusted, certreq)
    h = _run({"auth": _a_auth()}, b)
    assert h.of("a", IkeSaEstablished) and h.of("b", IkeSaEstablished), h.of(
        "b", AuthenticationFailed
    )
    assert h.of("a", ChildSaReady) and h.of("b", ChildSaReady)
    assert store.received == [ders(*sent)]


def test_engines_with_an_unrequested_ca_fall_back_to_the_full_chain() -> None:
    # B asks for a CA on none of A's paths (and for Root A): A sends the path to Root A;
    # asked for the unrelated CA alone, A sends all it has.
    unrelated = issue("Unrelated Root")
    store = RecordingStore([unrelated[0], ROOT_A[0]])
    store.received = []
    b_auth = CertAuth(LocalSigner.from_key(B_LEAF[1]), tuple(ders(B_LEAF)), None)
    h = _run({"auth": _a_auth()}, {"auth": b_auth, "remote_auth": PeerCertAuth(store)})
    assert h.of("b", IkeSaEstablished)
    assert store.received == [ders(A_LEAF, INTER_A)]  # Root A is requested too: shortest path
    store = RecordingStore([unrelated[0]])
    store.received = []
    h = _run({"auth": _a_auth()}, {"auth": b_auth, "remote_auth": PeerCertAuth(store)})
    assert store.received == [ders(A_LEAF, INTER_A, INTER_B)]
    (fail,) = h.of("b", AuthenticationFailed)
    assert "no issuer for CN=Shared Intermediate" in fail.reason, fail.reason


def test_engines_authenticate_with_ed25519_cas_both_ways() -> None:
    root, inter, a_leaf = ed_pki("ed25519")
    b_leaf = issue("b.example", root, ca=False, key=ed25519.Ed25519PrivateKey.generate())
    trust = TrustStore([root[0]])
    a = CertAuth(LocalSigner.from_key(a_leaf[1]), tuple(ders(a_leaf, inter)), trust)
    b = CertAuth(LocalSigner.from_key(b_leaf[1]), tuple(ders(b_leaf)), trust)
    h = _run({"auth": a}, {"auth": b})
    assert h.of("a", IkeSaEstablished) and h.of("b", IkeSaEstablished)
    assert h.of("a", ChildSaReady) and h.of("b", ChildSaReady)
    # the same chain without its intermediate is refused, naming the missing link
    a = dataclasses.replace(a, cert_chain=tuple(ders(a_leaf)))
    h = _run({"auth": a}, {"auth": b})
    (fail,) = h.of("b", AuthenticationFailed)
    assert "no issuer for CN=a.example: its issuer 'CN=ed25519 Intermediate'" in fail.reason


@pytest.mark.parametrize(
    ("trusted", "sent"), [(ROOT_B, [A_LEAF, INTER_B]), (ROOT_A, [A_LEAF, INTER_A])]
)
def test_a_responder_honours_the_certreq_of_the_initiators_ike_auth(
    trusted: Issued, sent: list[Issued]
) -> None:
    # A (initiator) asks in its IKE_AUTH; B answers with the path to that CA. B knows both
    # roots only as the CAs it trusts for A (remote.cacerts), as a daemon config gives it.
    a_store = RecordingStore([trusted[0]])
    a_store.received = []
    a_auth = CertAuth(LocalSigner.from_key(B_LEAF[1]), tuple(ders(B_LEAF)), None)
    b_auth = CertAuth(LocalSigner.from_key(A_LEAF[1]), tuple(ders(A_LEAF, INTER_A, INTER_B)), None)
    b_peer = PeerCertAuth(TrustStore([ROOT_A[0], ROOT_B[0]]))
    h = _run(
        {
            "auth": a_auth,
            "remote_auth": PeerCertAuth(a_store),
            "local_id": "b.example",
            "remote_id": "a.example",
        },
        {"auth": b_auth, "remote_auth": b_peer, "local_id": "a.example", "remote_id": "b.example"},
    )
    assert h.of("a", IkeSaEstablished) and h.of("b", IkeSaEstablished), h.of(
        "a", AuthenticationFailed
    )
    assert a_store.received == [ders(*sent)]


def test_a_chain_file_in_pem_or_a_der_certificate_loads_in_order(tmp_path: Path) -> None:
    pem = b"".join(c.public_bytes(Encoding.PEM) for c, _ in (LEAF, SUB, INTER))
    assert load_certificate_chain(pem) == [LEAF[0], SUB[0], INTER[0]]
    assert load_certificate_chain(LEAF[0].public_bytes(DER)) == [LEAF[0]]
    with pytest.raises(CertificateError, match="cannot parse"):
        load_certificate_chain(b"\x30\x03abc")
    (tmp_path / "root.der").write_bytes(ROOT[0].public_bytes(DER))
    (tmp_path / "inter.pem").write_bytes(INTER[0].public_bytes(Encoding.PEM))
    store = TrustStore.from_pem_files([tmp_path / "root.der", tmp_path / "inter.pem"])
    assert store.anchors == [ROOT[0]] and store.intermediates == [INTER[0]]
    assert store.verify_chain(*ders(LEAF), ders(SUB), NOW) == LEAF[0]


def test_an_ed25519_anchor_beside_does_not_change_how_ecdsa_chains_verify() -> None:
    ed_root, _, _ = ed_pki("ed25519")
    store = TrustStore([ROOT[0], ed_root[0]])
    assert store.verify_chain(*ders(LEAF), ders(SUB, INTER), NOW) == LEAF[0]
    # still WebPKI: its own wording for a same-name CA with another key
    twin = issue("Root CA")
    with pytest.raises(CertificateError, match="signature does not match"):
        TrustStore([twin[0], ed_root[0]]).verify_chain(*ders(LEAF), ders(SUB, INTER), NOW)
