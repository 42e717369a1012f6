"""IKE_AUTH payload computation (RFC 7296 §2.15): signed octets and pre-shared key AUTH data.

Signature methods live in `signatures`; they are re-exported here so the engine has one import.
"""

from __future__ import annotations

import functools

from cryptography.hazmat.primitives import constant_time

from xfrmctl.ike.crypto.algorithms import Prf
from xfrmctl.ike.crypto.signatures import (
    LocalSigner,
    SignatureError,
    check_signature,
    our_hash_algorithms,
    verify_signature,
)

_KEY_PAD = b"Key Pad for IKEv2"
PADDED_KEYS_KEPT = 256  # distinct (PRF, PSK) pairs: a fleet's keys, bounded


def signed_octets(
    message: bytes, peer_nonce: bytes, prf: Prf, sk_p: bytes, id_payload_body: bytes
) -> bytes:
    """<SignedOctets> = RealMessage | NonceData of the peer | prf(SK_p, RestOfIDPayload).

    `message` is our first message of the exchange (IKE_SA_INIT request or response) as sent;
    `sk_p` is SK_pi for the initiator's AUTH and SK_pr for the responder's.
    """
    return message + peer_nonce + prf(sk_p, id_payload_body)


def psk_auth_data(prf: Prf, psk: bytes, octets: bytes) -> bytes:
    """AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"), <SignedOctets>)."""
    return prf(padded_key(prf, psk), octets)


@functools.lru_cache(maxsize=PADDED_KEYS_KEPT)
def padded_key(prf: Prf, psk: bytes) -> bytes:
    """prf(Shared Secret, "Key Pad for IKEv2"): one key's is the same in every AUTH, made and
    checked, so it is computed once (2 of a PSK setup's 16 HMACs per side, issue 15). It is
    as secret as the key it comes from, which the daemon holds anyway."""
    return prf(psk, _KEY_PAD)


def psk_verify(prf: Prf, psk: bytes, octets: bytes, auth_data: bytes) -> bool:
    """Constant-time check of a peer's PSK AUTH data."""
    return constant_time.bytes_eq(psk_auth_data(prf, psk, octets), auth_data)


__all__ = [
    "LocalSigner",
    "SignatureError",
    "check_signature",
    "our_hash_algorithms",
    "psk_auth_data",
    "psk_verify",
    "signed_octets",
    "verify_signature",
]
