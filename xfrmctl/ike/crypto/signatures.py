"""Public key AUTH: RFC 7427 digital signatures plus the classic RSA (1) and ECDSA (9-11) methods.

We sign with RFC 7427 whenever the peer announced SIGNATURE_HASH_ALGORITHMS, because it names
the hash and padding explicitly (RSASSA-PSS for RSA, as RFC 8247 recommends); the classic
methods remain for peers that did not. Verification never raises: a bad AUTH is just False,
and `check_signature` gives the reason for logs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import exceptions as cx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa, utils

from xfrmctl.ike.crypto import der
from xfrmctl.ike.crypto.errors import CryptoError, UnsupportedAlgorithm
from xfrmctl.ike.iana import AuthMethod, HashAlgorithm

PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)
PrivateKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)


class SignatureError(CryptoError):
    """Why an AUTH signature was not accepted."""


_HASH_OIDS: dict[HashAlgorithm, bytes] = {
    HashAlgorithm.SHA2_256: der.oid("2.16.840.1.101.3.4.2.1"),
    HashAlgorithm.SHA2_384: der.oid("2.16.840.1.101.3.4.2.2"),
    HashAlgorithm.SHA2_512: der.oid("2.16.840.1.101.3.4.2.3"),
}
_HASHES: dict[HashAlgorithm, type[hashes.HashAlgorithm]] = {
    HashAlgorithm.SHA1: hashes.SHA1,
    HashAlgorithm.SHA2_256: hashes.SHA256,
    HashAlgorithm.SHA2_384: hashes.SHA384,
    HashAlgorithm.SHA2_512: hashes.SHA512,
}
_RSA_PKCS1_OIDS = {
    der.oid("1.2.840.113549.1.1.11"): HashAlgorithm.SHA2_256,
    der.oid("1.2.840.113549.1.1.12"): HashAlgorithm.SHA2_384,
    der.oid("1.2.840.113549.1.1.13"): HashAlgorithm.SHA2_512,
}
_ECDSA_OIDS = {
    der.oid("1.2.840.10045.4.3.2"): HashAlgorithm.SHA2_256,
    der.oid("1.2.840.10045.4.3.3"): HashAlgorithm.SHA2_384,
    der.oid("1.2.840.10045.4.3.4"): HashAlgorithm.SHA2_512,
}
_RSA_PSS = der.oid("1.2.840.113549.1.1.10")
_MGF1 = der.oid("1.2.840.113549.1.1.8")
_ED25519 = der.oid("1.3.101.112")
_ED448 = der.oid("1.3.101.113")

# Classic ECDSA methods (RFC 4754): curve, hash and the byte length of r and of s.
_CLASSIC_ECDSA: dict[AuthMethod, tuple[str, HashAlgorithm, int]] = {
    AuthMethod.ECDSA_SHA256_P256: ("secp256r1", HashAlgorithm.SHA2_256, 32),
    AuthMethod.ECDSA_SHA384_P384: ("secp384r1", HashAlgorithm.SHA2_384, 48),
    AuthMethod.ECDSA_SHA512_P521: ("secp521r1", HashAlgorithm.SHA2_512, 66),
}
_METHOD_OF_CURVE = {curve: m for m, (curve, _, _) in _CLASSIC_ECDSA.items()}


def our_hash_algorithms() -> list[HashAlgorithm]:
    """What we announce in SIGNATURE_HASH_ALGORITHMS (RFC 7427 §4, Identity per RFC 8420)."""
    return [
        HashAlgorithm.SHA2_256,
        HashAlgorithm.SHA2_384,
        HashAlgorithm.SHA2_512,
        HashAlgorithm.IDENTITY,
    ]


def _pss_algid(h: HashAlgorithm) -> bytes:
    """RSASSA-PSS AlgorithmIdentifier as in RFC 7427 A.4.3: MGF1 with the same hash, salt of
    the hash length."""
    hash_id = der.seq(_HASH_OIDS[h] + der.NULL)
    params = der.seq(
        der.tlv(0xA0, hash_id)
        + der.tlv(0xA1, der.seq(_MGF1 + hash_id))
        + der.tlv(0xA2, der.integer(_HASHES[h]().digest_size))
    )
    return der.seq(_RSA_PSS + params)


def _pss(h: HashAlgorithm, salt: int) -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(_HASHES[h]()), salt_length=salt)


@dataclass(frozen=True, repr=False)
class LocalSigner:
    """Our private key for AUTH payloads; repr shows only the key type."""

    key: PrivateKey

    def __repr__(self) -> str:
        return f"<LocalSigner {self.describe()}>"

    def describe(self) -> str:
        if isinstance(self.key, rsa.RSAPrivateKey):
            return f"RSA-{self.key.key_size}"
        if isinstance(self.key, ec.EllipticCurvePrivateKey):
            return f"ECDSA-{self.key.curve.name}"
        return "Ed25519" if isinstance(self.key, ed25519.Ed25519PrivateKey) else "Ed448"

    @classmethod
    def from_pem(cls, pem: bytes, password: bytes | None = None) -> LocalSigner:
        try:
            key = serialization.load_pem_private_key(pem, password)
        except TypeError as e:  # password given for an unencrypted key, or missing
            raise CryptoError(f"cannot load private key: {e}") from None
        except (ValueError, cx.UnsupportedAlgorithm) as e:
            raise CryptoError(
                f"cannot load private key (not PEM, wrong password or corrupt): {e}"
            ) from None
        return cls.from_key(key)

    @classmethod
    def from_key(cls, key: object) -> LocalSigner:
        if isinstance(key, ec.EllipticCurvePrivateKey):
            if key.curve.name not in _METHOD_OF_CURVE:
                raise UnsupportedAlgorithm(f"ECDSA curve {key.curve.name} is not supported")
        elif not isinstance(
            key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey
        ):
            raise UnsupportedAlgorithm(
                f"private key type {type(key).__name__} is not supported for IKE AUTH"
            )
        return cls(key)

    def public_key(self) -> PublicKey:
        return self.key.public_key()

    def sign(
        self, octets: bytes, peer_hash_algorithms: Sequence[HashAlgorithm | int] | None
    ) -> tuple[AuthMethod, bytes]:
        """AUTH method and data: RFC 7427 when the peer sent its hash list, else classic."""
        key = self.key
        if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
            if peer_hash_algorithms is None or HashAlgorithm.IDENTITY not in peer_hash_algorithms:
                raise UnsupportedAlgorithm(
                    f"{self.describe()} keys need the peer to support RFC 7427 with the "
                    "Identity hash (RFC 8420)"
                )
            algid = der.seq(_ED25519 if isinstance(key, ed25519.Ed25519PrivateKey) else _ED448)
            return AuthMethod.DIGITAL_SIGNATURE, _ds(algid, key.sign(octets))
        h = self._pick_hash(peer_hash_algorithms)
        if isinstance(key, rsa.RSAPrivateKey):
            if h is None:
                return AuthMethod.RSA_SIG, key.sign(octets, padding.PKCS1v15(), hashes.SHA1())
            salt = _HASHES[h]().digest_size
            return AuthMethod.DIGITAL_SIGNATURE, _ds(
                _pss_algid(h), key.sign(octets, _pss(h, salt), _HASHES[h]())
            )
        if h is None:
            method = _METHOD_OF_CURVE[key.curve.name]
            _, mh, size = _CLASSIC_ECDSA[method]
            r, s = utils.decode_dss_signature(key.sign(octets, ec.ECDSA(_HASHES[mh]())))
            return method, r.to_bytes(size, "big") + s.to_bytes(size, "big")
        oid = next(o for o, oh in _ECDSA_OIDS.items() if oh == h)
        return AuthMethod.DIGITAL_SIGNATURE, _ds(
            der.seq(oid), key.sign(octets, ec.ECDSA(_HASHES[h]()))
        )

    def _pick_hash(self, peer: Sequence[HashAlgorithm | int] | None) -> HashAlgorithm | None:
        if not peer:
            return None
        prefs = [HashAlgorithm.SHA2_256, HashAlgorithm.SHA2_384, HashAlgorithm.SHA2_512]
        if isinstance(self.key, ec.EllipticCurvePrivateKey):
            # the hash matching the curve's strength first
            _, natural, _ = _CLASSIC_ECDSA[_METHOD_OF_CURVE[self.key.curve.name]]
            prefs.remove(natural)
            prefs.insert(0, natural)
        return next((h for h in prefs if h in peer), None)


def _ds(algid: bytes, signature: bytes) -> bytes:
    return bytes((len(algid),)) + algid + signature


def verify_signature(
    public_key: object, method: AuthMethod | int, auth_data: bytes, octets: bytes
) -> bool:
    """True only if `auth_data` is a valid signature of `octets` by `public_key`."""
    try:
        check_signature(public_key, method, auth_data, octets)
    except CryptoError:
        return False
    return True


def check_signature(
    public_key: object, method: AuthMethod | int, auth_data: bytes, octets: bytes
) -> None:
    """Like verify_signature, but raises SignatureError saying why the signature is bad."""
    try:
        _check(public_key, method, auth_data, octets)
    except InvalidSignature:
        raise SignatureError("signature does not verify") from None
    except der.DerError as e:
        raise SignatureError(f"malformed AUTH data: {e}") from None


def _check(key: object, method: AuthMethod | int, data: bytes, octets: bytes) -> None:
    if method == AuthMethod.RSA_SIG:
        if not isinstance(key, rsa.RSAPublicKey):
            raise SignatureError("RSA signature method but the peer's key is not RSA")
        try:  # RFC 7296 leaves the hash open: SHA-1 in practice, SHA-256 seen too
            key.verify(data, octets, padding.PKCS1v15(), hashes.SHA1())
        except InvalidSignature:
            key.verify(data, octets, padding.PKCS1v15(), hashes.SHA256())
        return
    if method in _CLASSIC_ECDSA:
        curve, h, size = _CLASSIC_ECDSA[AuthMethod(method)]
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != curve:
            raise SignatureError(f"{AuthMethod(method).name} needs a {curve} key")
        if len(data) != 2 * size:
            raise SignatureError(f"ECDSA signature must be {2 * size} bytes, got {len(data)}")
        r, s = int.from_bytes(data[:size], "big"), int.from_bytes(data[size:], "big")
        key.verify(utils.encode_dss_signature(r, s), octets, ec.ECDSA(_HASHES[h]()))
        return
    if method != AuthMethod.DIGITAL_SIGNATURE:
        raise SignatureError(f"authentication method {method} is not a signature method")
    if not data or len(data) < 1 + data[0]:
        raise SignatureError("RFC 7427 AUTH data is truncated")
    algid, signature = data[1 : 1 + data[0]], data[1 + data[0] :]
    oid, params = der.algorithm_identifier(algid)
    if oid in (_ED25519, _ED448):
        want = ed25519.Ed25519PublicKey if oid == _ED25519 else ed448.Ed448PublicKey
        if not isinstance(key, want) or params:
            raise SignatureError("EdDSA signature does not match the peer's key type")
        key.verify(signature, octets)
    elif oid in _ECDSA_OIDS:
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise SignatureError("ECDSA signature but the peer's key is not ECDSA")
        key.verify(signature, octets, ec.ECDSA(_HASHES[_ECDSA_OIDS[oid]]()))
    elif oid in _RSA_PKCS1_OIDS:
        if not isinstance(key, rsa.RSAPublicKey):
            raise SignatureError("RSA signature but the peer's key is not RSA")
        key.verify(signature, octets, padding.PKCS1v15(), _HASHES[_RSA_PKCS1_OIDS[oid]]())
    elif oid == _RSA_PSS:
        if not isinstance(key, rsa.RSAPublicKey):
            raise SignatureError("RSASSA-PSS signature but the peer's key is not RSA")
        h, mgf_h, salt = _parse_pss(params)
        pss = padding.PSS(mgf=padding.MGF1(_HASHES[mgf_h]()), salt_length=salt)
        key.verify(signature, octets, pss, _HASHES[h]())
    else:
        raise SignatureError(f"signature algorithm {der.oid_text(oid)} is not supported")


def _hash_of(algid: bytes) -> HashAlgorithm:
    oid, _ = der.algorithm_identifier(algid)
    for h, h_oid in _HASH_OIDS.items():
        if h_oid == oid:
            return h
    raise SignatureError(f"hash {der.oid_text(oid)} is not accepted in RSASSA-PSS")


def _parse_pss(params: bytes) -> tuple[HashAlgorithm, HashAlgorithm, int]:
    """RSASSA-PSS-params (RFC 4055); SHA-1 defaults are refused, as in our hash list."""
    h = mgf_h = HashAlgorithm.SHA1
    salt = 20
    fields = der.sequence_items(params) if params else []
    for tag, content in fields:
        if tag == 0xA0:
            h = _hash_of(content)
        elif tag == 0xA1:
            mgf_oid, mgf_params = der.algorithm_identifier(content)
            if mgf_oid != _MGF1:
                raise SignatureError("RSASSA-PSS mask generation function is not MGF1")
            mgf_h = _hash_of(mgf_params)
        elif tag == 0xA2:
            salt = der.read_integer(content)
        elif tag == 0xA3:
            if der.read_integer(content) != 1:
                raise SignatureError("RSASSA-PSS trailer field must be 1")
        else:
            raise SignatureError("unexpected field in RSASSA-PSS parameters")
    if HashAlgorithm.SHA1 in (h, mgf_h):
        raise SignatureError("RSASSA-PSS with SHA-1 is not accepted")
    return h, mgf_h, salt
