"""Key schedule cross-checked against a straightforward re-computation of RFC 7296 §2.13-2.18
written with stdlib HMAC and a standalone AES-CMAC built on `cryptography`'s CMAC."""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms

from xfrmctl.ike.crypto.algorithms import encr_for, integ_for, prf_for
from xfrmctl.ike.crypto.keys import (
    ChildKeys,
    IkeKeys,
    derive_child_keys,
    derive_ike_keys,
    derive_rekeyed_ike_keys,
)
from xfrmctl.ike.iana import EncrId, IntegId, PrfId, TransformType
from xfrmctl.ike.transforms import Transform

NI = bytes(range(32))
NR = bytes(range(100, 132))
GIR = bytes(i % 256 for i in range(7, 263))
SPI_I = bytes.fromhex("0011223344556677")
SPI_R = bytes.fromhex("8899aabbccddeeff")

SHA256 = prf_for(Transform(TransformType.PRF, PrfId.HMAC_SHA2_256))
CMAC = prf_for(Transform(TransformType.PRF, PrfId.AES128_CMAC))
CBC256 = encr_for(Transform(TransformType.ENCR, EncrId.AES_CBC, 256))
GCM128 = encr_for(Transform(TransformType.ENCR, EncrId.AES_GCM_16, 128))
HMAC384 = integ_for(Transform(TransformType.INTEG, IntegId.HMAC_SHA2_384_192))


def ref_hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def ref_cmac_prf(key: bytes, data: bytes) -> bytes:
    def mac(k: bytes, d: bytes) -> bytes:
        c = cmac.CMAC(algorithms.AES(k))
        c.update(d)
        return c.finalize()

    return mac(key if len(key) == 16 else mac(bytes(16), key), data)


def ref_prf_plus(f, key: bytes, seed: bytes, n: int) -> bytes:  # type: ignore[no-untyped-def]
    out, t, i = b"", b"", 1
    while len(out) < n:
        t = f(key, t + seed + bytes([i]))
        out += t
        i += 1
    return out[:n]


def split(stream: bytes, sizes: list[int]) -> list[bytes]:
    out, pos = [], 0
    for s in sizes:
        out.append(stream[pos : pos + s])
        pos += s
    return out


def test_ike_keys_hmac_cbc() -> None:
    keys = derive_ike_keys(SHA256, HMAC384, CBC256, NI, NR, GIR, SPI_I, SPI_R)
    skeyseed = ref_hmac(NI + NR, GIR)
    sizes = [32, 48, 48, 32, 32, 32, 32]
    stream = ref_prf_plus(ref_hmac, skeyseed, NI + NR + SPI_I + SPI_R, sum(sizes))
    assert keys == IkeKeys(*split(stream, sizes))
    assert len(keys.sk_ai) == 48 and len(keys.sk_ei) == 32


def test_ike_keys_aead_have_no_integrity_keys() -> None:
    keys = derive_ike_keys(SHA256, None, GCM128, NI, NR, GIR, SPI_I, SPI_R)
    skeyseed = ref_hmac(NI + NR, GIR)
    sizes = [32, 0, 0, 20, 20, 32, 32]
    stream = ref_prf_plus(ref_hmac, skeyseed, NI + NR + SPI_I + SPI_R, sum(sizes))
    assert keys == IkeKeys(*split(stream, sizes))
    assert keys.sk_ai == keys.sk_ar == b""


def test_ike_keys_fixed_key_prf_truncates_nonces() -> None:
    """§2.14: AES-CMAC/XCBC PRFs take Ni[0:8] | Nr[0:8] as the SKEYSEED key."""
    keys = derive_ike_keys(CMAC, HMAC384, CBC256, NI, NR, GIR, SPI_I, SPI_R)
    skeyseed = ref_cmac_prf(NI[:8] + NR[:8], GIR)
    sizes = [16, 48, 48, 32, 32, 16, 16]
    stream = ref_prf_plus(ref_cmac_prf, skeyseed, NI + NR + SPI_I + SPI_R, sum(sizes))
    assert keys == IkeKeys(*split(stream, sizes))
    # and it really differs from using the whole nonces
    wrong = ref_cmac_prf(NI + NR, GIR)
    assert ref_prf_plus(ref_cmac_prf, wrong, NI + NR + SPI_I + SPI_R, 16) != keys.sk_d


def test_rekeyed_ike_keys_use_old_prf_and_sk_d() -> None:
    old_sk_d = b"\x42" * 16
    keys = derive_rekeyed_ike_keys(CMAC, old_sk_d, SHA256, None, GCM128, GIR, NI, NR, SPI_I, SPI_R)
    skeyseed = ref_cmac_prf(old_sk_d, GIR + NI + NR)
    sizes = [32, 0, 0, 20, 20, 32, 32]
    stream = ref_prf_plus(ref_hmac, skeyseed, NI + NR + SPI_I + SPI_R, sum(sizes))
    assert keys == IkeKeys(*split(stream, sizes))


def test_child_keys_without_and_with_pfs() -> None:
    sk_d = b"\x17" * 32
    no_pfs = derive_child_keys(SHA256, sk_d, NI, NR, None, 32, 32)
    km = ref_prf_plus(ref_hmac, sk_d, NI + NR, 128)
    assert no_pfs == ChildKeys(*split(km, [32, 32, 32, 32]))
    pfs = derive_child_keys(SHA256, sk_d, NI, NR, GIR, 36, 0)
    km = ref_prf_plus(ref_hmac, sk_d, GIR + NI + NR, 72)
    assert pfs == ChildKeys(km[:36], b"", km[36:], b"")


def test_repr_hides_keys() -> None:
    keys = derive_ike_keys(SHA256, HMAC384, CBC256, NI, NR, GIR, SPI_I, SPI_R)
    text = repr(keys) + str(keys)
    assert "sk_d=<32 bytes>" in text
    for value in (keys.sk_d, keys.sk_ei, keys.sk_pr):
        assert value.hex() not in text
        assert repr(value)[2:20] not in text
    child = derive_child_keys(SHA256, keys.sk_d, NI, NR, None, 20, 0)
    assert child.encr_i.hex() not in repr(child)
    assert "integ_i=<0 bytes>" in repr(child)
