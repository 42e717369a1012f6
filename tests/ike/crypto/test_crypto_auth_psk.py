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
