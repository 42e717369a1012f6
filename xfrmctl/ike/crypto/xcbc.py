"""AES-XCBC-MAC (RFC 3566) and AES-XCBC-PRF-128 (RFC 4434).

`cryptography` has no XCBC, so the mode is assembled here from its AES block cipher: the three
subkeys come from AES-ECB, and the CBC-MAC chain from AES-CBC with a zero IV (whose last output
block is exactly the chained E(K1, M[i] ^ E[i-1]) of RFC 3566 §4).
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from xfrmctl.ike.crypto.errors import CryptoError

BLOCK = 16
_ZERO_BLOCK = bytes(BLOCK)


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def aes_xcbc_mac(key: bytes, message: bytes) -> bytes:
    """Full 128-bit AES-XCBC-MAC of `message` under a 128-bit `key`."""
    if len(key) != BLOCK:
        raise CryptoError(f"AES-XCBC-MAC needs a 16-byte key, got {len(key)} bytes")
    subkeys = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    k1 = subkeys.update(b"\x01" * BLOCK)
    k2 = subkeys.update(b"\x02" * BLOCK)
    k3 = subkeys.update(b"\x03" * BLOCK)
    subkeys.finalize()
    if message and len(message) % BLOCK == 0:
        head, last, mask = message[:-BLOCK], message[-BLOCK:], k2
    else:
        cut = len(message) - len(message) % BLOCK
        tail = message[cut:] + b"\x80"
        head, last, mask = message[:cut], tail + bytes(BLOCK - len(tail)), k3
    chain = Cipher(algorithms.AES(k1), modes.CBC(_ZERO_BLOCK)).encryptor()
    out = chain.update(head + _xor(last, mask)) + chain.finalize()
    return out[-BLOCK:]


def aes_xcbc_prf128(key: bytes, message: bytes) -> bytes:
    """AES-XCBC-PRF-128: the MAC with RFC 4434 §2 handling of keys that are not 128 bits."""
    if len(key) < BLOCK:
        key = key + bytes(BLOCK - len(key))
    elif len(key) > BLOCK:
        key = aes_xcbc_mac(_ZERO_BLOCK, key)
    return aes_xcbc_mac(key, message)
