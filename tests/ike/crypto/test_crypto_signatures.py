"""Sign/verify round trips for every AUTH signature method, tamper failures, encodings."""

from __future__ import annotations

import re
from functools import cache

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa, utils

from xfrmctl.ike.crypto import der
from xfrmctl.ike.crypto.auth import (
    LocalSigner,
    SignatureError,
    check_signature,
    our_hash_algorithms,
    verify_signature,
)
from xfrmctl.ike.crypto.errors import CryptoError, UnsupportedAlgorithm
from xfrmctl.ike.iana import AuthMethod, HashAlgorithm

OCTETS = b"IKE_SA_INIT message | Nr | prf(SK_pi, IDi')" * 3
ALL_HASHES = our_hash_algorithms()
H = HashAlgorithm


@cache
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


@cache
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


def signer(kind: str, *, other: bool = False) -> LocalSigner:
    key: object
    if kind == "rsa":
        key = other_rsa_key() if other else rsa_key()
    elif kind.startswith("secp"):
        key = ec.generate_private_key(getattr(ec, kind.upper())())
    elif kind == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        key = ed448.Ed448PrivateKey.generate()
    return LocalSigner.from_key(key)


def tamper(data: bytes) -> bytes:
    return data[:-1] + bytes((data[-1] ^ 1,))


def test_our_hash_algorithms() -> None:
    assert our_hash_algorithms() == [H.SHA2_256, H.SHA2_384, H.SHA2_512, H.IDENTITY]


@pytest.mark.parametrize(
    ("kind", "method", "size"),
    [
        ("rsa", AuthMethod.RSA_SIG, 256),
        ("secp256r1", AuthMethod.ECDSA_SHA256_P256, 64),
        ("secp384r1", AuthMethod.ECDSA_SHA384_P384, 96),
        ("secp521r1", AuthMethod.ECDSA_SHA512_P521, 132),
    ],
)
def test_classic_methods(kind: str, method: AuthMethod, size: int) -> None:
    s = signer(kind)
    got_method, data = s.sign(OCTETS, None)
    assert got_method == method
    assert len(data) == size  # ECDSA: r || s at fixed length, not DER
    pub = s.public_key()
    assert verify_signature(pub, method, data, OCTETS)
    assert not verify_signature(pub, method, data, tamper(OCTETS))
    assert not verify_signature(pub, method, tamper(data), OCTETS)
    # an empty SIGNATURE_HASH_ALGORITHMS list also means classic
    assert s.sign(OCTETS, [])[0] == method


def test_classic_ecdsa_is_raw_r_s() -> None:
    s = signer("secp256r1")
    _, data = s.sign(OCTETS, None)
    r, t = int.from_bytes(data[:32], "big"), int.from_bytes(data[32:], "big")
    pub = s.public_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    pub.verify(utils.encode_dss_signature(r, t), OCTETS, ec.ECDSA(hashes.SHA256()))


def test_classic_rsa_accepts_sha256_too() -> None:
    key = rsa_key()
    sha256_sig = key.sign(OCTETS, padding.PKCS1v15(), hashes.SHA256())
    assert verify_signature(key.public_key(), AuthMethod.RSA_SIG, sha256_sig, OCTETS)
    sha1_sig = key.sign(OCTETS, padding.PKCS1v15(), hashes.SHA1())
    assert verify_signature(key.public_key(), AuthMethod.RSA_SIG, sha1_sig, OCTETS)


@pytest.mark.parametrize(
    ("kind", "peer", "oid"),
    [
        ("rsa", ALL_HASHES, "1.2.840.113549.1.1.10"),
        ("rsa", [H.SHA2_512], "1.2.840.113549.1.1.10"),
        ("secp256r1", ALL_HASHES, "1.2.840.10045.4.3.2"),
        ("secp384r1", ALL_HASHES, "1.2.840.10045.4.3.3"),
        ("secp521r1", ALL_HASHES, "1.2.840.10045.4.3.4"),
        ("secp521r1", [H.SHA2_256], "1.2.840.10045.4.3.2"),
        ("ed25519", [H.IDENTITY], "1.3.101.112"),
        ("ed448", ALL_HASHES, "1.3.101.113"),
    ],
)
def test_rfc7427_round_trip(kind: str, peer: list[HashAlgorithm], oid: str) -> None:
    s = signer(kind)
    method, data = s.sign(OCTETS, peer)
    assert method == AuthMethod.DIGITAL_SIGNATURE
    algid = data[1 : 1 + data[0]]
    got_oid, _ = der.algorithm_identifier(algid)
    assert der.oid_text(got_oid) == oid
    pub = s.public_key()
    assert verify_signature(pub, method, data, OCTETS)
    assert not verify_signature(pub, method, data, tamper(OCTETS))
    assert not verify_signature(pub, method, tamper(data), OCTETS)
    other = signer(kind, other=True).public_key()
    assert not verify_signature(other, method, data, OCTETS)


def test_rsa_pss_algid_matches_rfc7427_a43() -> None:
    """RFC 7427 Appendix A.4.3: RSASSA-PSS with SHA-256, MGF1-SHA-256, 32-byte salt."""
    expected = bytes.fromhex(
        "304106092a864886f70d01010a3034a00f300d06096086480165030402010500"
        "a11c301a06092a864886f70d010108300d06096086480165030402010500a203020120"
    )
    _, data = signer("rsa").sign(OCTETS, [H.SHA2_256])
    assert data[0] == len(expected)
    assert data[1 : 1 + data[0]] == expected


def test_rfc7427_pkcs1_from_peer_accepted() -> None:
    """Peers like strongSwan send sha256WithRSAEncryption (RFC 7427 A.3.3) by default."""
    key = rsa_key()
    algid = bytes.fromhex("300d06092a864886f70d01010b0500")
    sig = key.sign(OCTETS, padding.PKCS1v15(), hashes.SHA256())
    data = bytes((len(algid),)) + algid + sig
    assert verify_signature(key.public_key(), AuthMethod.DIGITAL_SIGNATURE, data, OCTETS)
    # without the NULL parameters too
    algid = bytes.fromhex("300b06092a864886f70d01010b")
    data = bytes((len(algid),)) + algid + sig
    assert verify_signature(key.public_key(), AuthMethod.DIGITAL_SIGNATURE, data, OCTETS)


def test_rfc7427_sha1_refused() -> None:
    key = rsa_key()
    algid = bytes.fromhex("300d06092a864886f70d0101050500")  # sha1WithRSAEncryption
    sig = key.sign(OCTETS, padding.PKCS1v15(), hashes.SHA1())
    data = bytes((len(algid),)) + algid + sig
    with pytest.raises(SignatureError, match=re.escape("1.2.840.113549.1.1.5 is not supported")):
        check_signature(key.public_key(), AuthMethod.DIGITAL_SIGNATURE, data, OCTETS)


def test_key_type_mismatch_and_garbage() -> None:
    rsa_pub = rsa_key().public_key()
    ec_signer = signer("secp256r1")
    method, data = ec_signer.sign(OCTETS, ALL_HASHES)
    with pytest.raises(SignatureError, match="not ECDSA"):
        check_signature(rsa_pub, method, data, OCTETS)
    _, classic = ec_signer.sign(OCTETS, None)
    with pytest.raises(SignatureError, match="needs a secp384r1 key"):
        check_signature(ec_signer.public_key(), AuthMethod.ECDSA_SHA384_P384, classic, OCTETS)
    with pytest.raises(SignatureError, match="must be 64 bytes"):
        check_signature(ec_signer.public_key(), AuthMethod.ECDSA_SHA256_P256, classic[:-1], OCTETS)
    for garbage in (b"", b"\x05", b"\x03\x30\x01\x06", b"\x02\x30\x00sig", bytes(range(40))):
        assert not verify_signature(rsa_pub, AuthMethod.DIGITAL_SIGNATURE, garbage, OCTETS)
    assert not verify_signature(rsa_pub, AuthMethod.PSK, b"x" * 32, OCTETS)


def test_eddsa_needs_identity_hash() -> None:
    with pytest.raises(UnsupportedAlgorithm, match="Identity"):
        signer("ed25519").sign(OCTETS, None)
    with pytest.raises(UnsupportedAlgorithm, match="Identity"):
        signer("ed25519").sign(OCTETS, [H.SHA2_256])


def test_from_pem() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    s = LocalSigner.from_pem(pem, b"secret")
    assert repr(s) == "<LocalSigner ECDSA-secp384r1>"
    assert s.sign(OCTETS, None)[0] == AuthMethod.ECDSA_SHA384_P384
    with pytest.raises(CryptoError, match="cannot load private key"):
        LocalSigner.from_pem(pem, b"wrong")
    with pytest.raises(CryptoError, match="cannot load private key"):
        LocalSigner.from_pem(pem)
    with pytest.raises(CryptoError, match="cannot load private key"):
        LocalSigner.from_pem(b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    k1 = ec.generate_private_key(ec.SECP256K1())
    pem = k1.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(UnsupportedAlgorithm, match="secp256k1"):
        LocalSigner.from_pem(pem)
