"""PSK AUTH and signed octets (RFC 7296 §2.15), checked against a direct re-computation."""

from __future__ import annotations

import hashlib
import hmac

from xfrmctl.ike.crypto.algorithms import prf_for
from xfrmctl.ike.crypto.auth import psk_auth_data, psk_verify, signed_octets
from xfrmctl.ike.iana import PrfId, TransformType
from xfrmctl.ike.transforms import Transform

PRF = prf_for(Transform(TransformType.PRF, PrfId.HMAC_SHA2_256))


def test_signed_octets_layout() -> None:
    msg, nonce, sk_pi = b"IKE_SA_INIT bytes", b"N" * 32, b"k" * 32
    id_body = bytes([2, 0, 0, 0]) + b"moon.example.org"
    expected = msg + nonce + hmac.new(sk_pi, id_body, hashlib.sha256).digest()
    assert signed_octets(msg, nonce, PRF, sk_pi, id_body) == expected


def test_psk_auth_data_and_verify() -> None:
    psk, octets = b"correct horse battery staple", b"octets" * 10
    pad = hmac.new(psk, b"Key Pad for IKEv2", hashlib.sha256).digest()
    expected = hmac.new(pad, octets, hashlib.sha256).digest()
    auth = psk_auth_data(PRF, psk, octets)
    assert auth == expected
    assert psk_verify(PRF, psk, octets, auth)
    assert not psk_verify(PRF, psk + b"!", octets, auth)
    assert not psk_verify(PRF, psk, octets + b"!", auth)
    assert not psk_verify(PRF, psk, octets, auth[:-1])
    assert not psk_verify(PRF, psk, octets, b"")


class _CountingPrf:
    """The real HMAC-SHA-256 PRF, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, key: bytes, data: bytes) -> bytes:
        self.calls += 1
        return PRF(key, data)


def test_the_padded_key_is_computed_once_per_key() -> None:
    prf, psk = _CountingPrf(), b"one fleet key"
    first = psk_auth_data(prf, psk, b"a")  # type: ignore[arg-type]
    assert prf.calls == 2
    assert psk_verify(prf, psk, b"a", first)  # type: ignore[arg-type]
    assert psk_auth_data(prf, psk, b"b") != first  # type: ignore[arg-type]
    assert prf.calls == 4  # the outer prf of each AUTH, not the pad again
    psk_auth_data(prf, b"another key", b"a")  # type: ignore[arg-type]
    assert prf.calls == 6
