"""Known-answer tests for ENCR, INTEG and PRF transforms and prf+ (public RFC/NIST vectors)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from xfrmctl.ike.crypto.algorithms import encr_for, integ_for, prf_for, prf_plus
from xfrmctl.ike.crypto.errors import CryptoError, IntegrityError, UnsupportedAlgorithm
from xfrmctl.ike.crypto.xcbc import aes_xcbc_mac
from xfrmctl.ike.iana import EncrId, IntegId, PrfId, TransformType
from xfrmctl.ike.transforms import Transform

h = bytes.fromhex


def encr(eid: EncrId, bits: int | None = None) -> Transform:
    return Transform(TransformType.ENCR, eid, bits)


def integ(iid: IntegId) -> Transform:
    return Transform(TransformType.INTEG, iid)


def prf(pid: PrfId) -> Transform:
    return Transform(TransformType.PRF, pid)


# --- RFC 4231 HMAC-SHA2 as PRFs ---------------------------------------------------------------

RFC4231 = [
    # (key, data, sha256, sha384, sha512)
    (
        b"\x0b" * 20,
        b"Hi There",
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59c"
        "faea9ea9076ede7f4af152e8b2fa9cb6",
        "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde"
        "daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854",
    ),
    (
        b"Jefe",
        b"what do ya want for nothing?",
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e"
        "8e2240ca5e69e2c78b3239ecfab21649",
        "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
        "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
    ),
    (
        b"\xaa" * 131,
        b"Test Using Larger Than Block-Size Key - Hash Key First",
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        "4ece084485813e9088d2c63a041bc5b44f9ef1012a2b588f3cd11f05033ac4c6"
        "0c2ef6ab4030fe8296248df163f44952",
        "80b24263c7c1a3ebb71493c1dd7be8b49b46d1f41b4aeec1121b013783f8f352"
        "6b56d037e05f2598bd0fd2215d6a1e5295e64f73f63f0aec8b915a985d786598",
    ),
]


@pytest.mark.parametrize(("key", "data", "s256", "s384", "s512"), RFC4231)
def test_hmac_sha2_prf_rfc4231(key: bytes, data: bytes, s256: str, s384: str, s512: str) -> None:
    assert prf_for(prf(PrfId.HMAC_SHA2_256))(key, data) == h(s256)
    assert prf_for(prf(PrfId.HMAC_SHA2_384))(key, data) == h(s384)
    assert prf_for(prf(PrfId.HMAC_SHA2_512))(key, data) == h(s512)


def test_hmac_sha1_prf_rfc2202() -> None:
    p = prf_for(prf(PrfId.HMAC_SHA1))
    assert p(b"\x0b" * 20, b"Hi There") == h("b617318655057264e28bc0b6fb378c8ef146be00")
    assert (p.key_size, p.output_size, p.fixed_key) == (20, 20, False)


def test_prf_sizes() -> None:
    for pid, size in (
        (PrfId.HMAC_SHA2_256, 32),
        (PrfId.HMAC_SHA2_384, 48),
        (PrfId.HMAC_SHA2_512, 64),
    ):
        p = prf_for(prf(pid))
        assert (p.key_size, p.output_size, p.fixed_key) == (size, size, False)


# --- RFC 4868 truncated HMAC-SHA2 integrity ---------------------------------------------------


def test_hmac_sha256_128_rfc4868_auth_case1() -> None:
    i = integ_for(integ(IntegId.HMAC_SHA2_256_128))
    key = b"\x0b" * 32
    icv = i.compute(key, b"Hi There")
    assert icv == h("198a607eb44bfbc69903a0f1cf2bbdc5")
    assert i.verify(key, b"Hi There", icv)
    assert not i.verify(key, b"Hi there", icv)


@pytest.mark.parametrize(
    ("iid", "hash_name", "key_size", "icv_size"),
    [
        (IntegId.HMAC_SHA1_96, "sha1", 20, 12),
        (IntegId.HMAC_SHA2_256_128, "sha256", 32, 16),
        (IntegId.HMAC_SHA2_384_192, "sha384", 48, 24),
        (IntegId.HMAC_SHA2_512_256, "sha512", 64, 32),
    ],
)
def test_hmac_integ_truncation(iid: IntegId, hash_name: str, key_size: int, icv_size: int) -> None:
    i = integ_for(integ(iid))
    assert (i.key_size, i.icv_size) == (key_size, icv_size)
    key = bytes(range(key_size))
    data = b"some IKE message" * 7
    expected = hmac.new(key, data, getattr(hashlib, hash_name)).digest()[:icv_size]
    assert i.compute(key, data) == expected
    assert i.verify(key, data, expected)
    assert not i.verify(key, data, bytes(icv_size))
    assert not i.verify(key, data, expected[:-1])
    with pytest.raises(CryptoError, match="key must be"):
        i.compute(key[:-1], data)


# --- RFC 3566 AES-XCBC-MAC-96 and RFC 4434 AES-XCBC-PRF-128 --------------------------------

XCBC_KEY = h("000102030405060708090a0b0c0d0e0f")
RFC3566 = [
    (b"", "75f0251d528ac01c4573dfd584d79f29"),
    (bytes(range(3)), "5b376580ae2f19afe7219ceef172756f"),
    (bytes(range(16)), "d2a246fa349b68a79998a4394ff7a263"),
    (bytes(range(20)), "47f51b4564966215b8985c63055ed308"),
    (bytes(range(32)), "f54f0ec8d2b9f3d36807734bd5283fd4"),
    (bytes(range(34)), "becbb3bccdb518a30677d5481fb6b4d8"),
    (bytes(1000), "f0dafee895db30253761103b5d84528f"),
]


@pytest.mark.parametrize(("msg", "mac"), RFC3566)
def test_aes_xcbc_mac_rfc3566(msg: bytes, mac: str) -> None:
    assert aes_xcbc_mac(XCBC_KEY, msg) == h(mac)
    i = integ_for(integ(IntegId.AES_XCBC_96))
    assert (i.key_size, i.icv_size) == (16, 12)
    assert i.compute(XCBC_KEY, msg) == h(mac)[:12]
    assert i.verify(XCBC_KEY, msg, h(mac)[:12])


@pytest.mark.parametrize(
    ("key", "out"),
    [
        (h("000102030405060708090a0b0c0d0e0f"), "47f51b4564966215b8985c63055ed308"),
        (h("00010203040506070809"), "0fa087af7d866e7653434e602fdde835"),
        (h("000102030405060708090a0b0c0d0e0fedcb"), "8cd3c93ae598a9803006ffb67c40e9e4"),
    ],
)
def test_aes_xcbc_prf128_rfc4434(key: bytes, out: str) -> None:
    p = prf_for(prf(PrfId.AES128_XCBC))
    assert p(key, bytes(range(20))) == h(out)
    assert (p.key_size, p.output_size, p.fixed_key) == (16, 16, True)


# --- RFC 4493 AES-CMAC and RFC 4615 AES-CMAC-PRF-128 -----------------------------------------

CMAC_KEY = h("2b7e151628aed2a6abf7158809cf4f3c")
CMAC_MSG = h(
    "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710"
)


@pytest.mark.parametrize(
    ("length", "mac"),
    [
        (0, "bb1d6929e95937287fa37d129b756746"),
        (16, "070a16b46b4d4144f79bdd9dd04a287c"),
        (40, "dfa66747de9ae63030ca32611497c827"),
        (64, "51f0bebf7e3b9d92fc49741779363cfe"),
    ],
)
def test_aes_cmac_96_rfc4493(length: int, mac: str) -> None:
    i = integ_for(integ(IntegId.AES_CMAC_96))
    assert (i.key_size, i.icv_size) == (16, 12)
    assert i.compute(CMAC_KEY, CMAC_MSG[:length]) == h(mac)[:12]


@pytest.mark.parametrize(
    ("key", "out"),
    [
        (h("000102030405060708090a0b0c0d0e0fedcb"), "84a348a4a45d235babfffc0d2b4da09a"),
        (h("000102030405060708090a0b0c0d0e0f"), "980ae87b5f4c9c5214f5b6a8455e4c2d"),
        (h("00010203040506070809"), "290d9e112edb09ee141fcf64c0b72f3d"),
    ],
)
def test_aes_cmac_prf128_rfc4615(key: bytes, out: str) -> None:
    p = prf_for(prf(PrfId.AES128_CMAC))
    assert p(key, bytes(range(20))) == h(out)
    assert p.fixed_key


# --- ENCR -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bits", "key", "ct"),
    [  # NIST SP 800-38A F.2.1 / F.2.3 / F.2.5, first block
        (128, "2b7e151628aed2a6abf7158809cf4f3c", "7649abac8119b246cee98e9b12e9197d"),
        (
            192,
            "8e73b0f7da0e6452c810f32b809079e562f8ead2522c6b7b",
            "4f021db243bc633d7178183a9fa071e8",
        ),
        (
            256,
            "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4",
            "f58c4c04d6e5f1ba779eabfb5f7bfbd6",
        ),
    ],
)
def test_aes_cbc_sp800_38a(bits: int, key: str, ct: str) -> None:
    e = encr_for(encr(EncrId.AES_CBC, bits))
    assert (e.key_size, e.iv_size, e.block_size, e.icv_size, e.is_aead) == (
        bits // 8,
        16,
        16,
        0,
        False,
    )
    iv = bytes(range(16))
    pt = h("6bc1bee22e409f96e93d7e117393172a")
    assert e.encrypt(h(key), iv, pt, b"ignored") == h(ct)
    assert e.decrypt(h(key), iv, h(ct), b"") == pt
    with pytest.raises(CryptoError, match="block size"):
        e.encrypt(h(key), iv, pt[:-1], b"")


GCM_K = h("feffe9928665731c6d6a8f9467308308")
GCM_P = h(
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
)
GCM_A = h("feedfacedeadbeeffeedfacedeadbeefabaddad2")
GCM_C = h(
    "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
    "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091"
)
GCM_T = h("5bc94fbc3221a5db94fae95ae7121a47")


@pytest.mark.parametrize(
    ("eid", "icv"), [(EncrId.AES_GCM_8, 8), (EncrId.AES_GCM_12, 12), (EncrId.AES_GCM_16, 16)]
)
def test_aes_gcm_mcgrew_viega_case4(eid: EncrId, icv: int) -> None:
    """GCM spec test case 4; IKE's nonce is salt (last 4 key bytes) || 8-byte IV (RFC 5282)."""
    e = encr_for(encr(eid, 128))
    assert (e.key_size, e.iv_size, e.icv_size, e.is_aead) == (20, 8, icv, True)
    key = GCM_K + h("cafebabe")
    iv = h("facedbaddecaf888")
    out = e.encrypt(key, iv, GCM_P, GCM_A)
    assert out == GCM_C + GCM_T[:icv]
    assert e.decrypt(key, iv, out, GCM_A) == GCM_P
    tampered = bytearray(out)
    tampered[3] ^= 1
    with pytest.raises(IntegrityError):
        e.decrypt(key, iv, bytes(tampered), GCM_A)
    with pytest.raises(IntegrityError):
        e.decrypt(key, iv, out, GCM_A + b"x")
    with pytest.raises(IntegrityError):
        e.decrypt(key, iv, out[: icv - 1], GCM_A)


def test_aes_gcm_256_key_size() -> None:
    e = encr_for(encr(EncrId.AES_GCM_16, 256))
    assert e.key_size == 36
    key, iv = bytes(range(36)), bytes(8)
    assert e.decrypt(key, iv, e.encrypt(key, iv, b"payload", b"hdr"), b"hdr") == b"payload"


def test_chacha20_poly1305_rfc8439_aead() -> None:
    e = encr_for(encr(EncrId.CHACHA20_POLY1305))
    assert (e.key_size, e.iv_size, e.icv_size, e.is_aead) == (36, 8, 16, True)
    key = bytes(range(0x80, 0xA0)) + h("07000000")
    iv = h("4041424344454647")
    aad = h("50515253c0c1c2c3c4c5c6c7")
    pt = (
        b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for "
        b"the future, sunscreen would be it."
    )
    ct = h(
        "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6"
        "3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36"
        "92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc"
        "3ff4def08e4b7a9de576d26586cec64b6116"
    )
    tag = h("1ae10b594f09e26a7e902ecbd0600691")
    assert e.encrypt(key, iv, pt, aad) == ct + tag
    assert e.decrypt(key, iv, ct + tag, aad) == pt
    with pytest.raises(IntegrityError):
        e.decrypt(key, iv, ct + bytes(16), aad)


def test_unsupported_and_malformed_transforms() -> None:
    with pytest.raises(UnsupportedAlgorithm, match="DES3"):
        encr_for(encr(EncrId.DES3))
    with pytest.raises(UnsupportedAlgorithm, match="key length"):
        encr_for(encr(EncrId.AES_CBC))
    with pytest.raises(UnsupportedAlgorithm, match="key length"):
        encr_for(encr(EncrId.AES_GCM_16, 64))
    with pytest.raises(UnsupportedAlgorithm, match="HMAC_MD5_96"):
        integ_for(integ(IntegId.HMAC_MD5_96))
    with pytest.raises(UnsupportedAlgorithm, match="HMAC_MD5"):
        prf_for(prf(PrfId.HMAC_MD5))
    with pytest.raises(UnsupportedAlgorithm, match="PrfId"):
        prf_for(Transform(TransformType.PRF, 99))
    with pytest.raises(UnsupportedAlgorithm, match="not an encryption"):
        encr_for(prf(PrfId.HMAC_SHA2_256))


# --- prf+ -------------------------------------------------------------------------------------


def _reference_prf_plus(key: bytes, seed: bytes, length: int) -> bytes:
    """Straight from RFC 7296 §2.13 with stdlib HMAC-SHA-256."""
    t = b""
    out = b""
    for n in range(1, 256):
        t = hmac.new(key, t + seed + bytes([n]), hashlib.sha256).digest()
        out += t
        if len(out) >= length:
            break
    return out[:length]


@pytest.mark.parametrize("length", [0, 1, 32, 33, 100, 255 * 32])
def test_prf_plus_matches_reference(length: int) -> None:
    p = prf_for(prf(PrfId.HMAC_SHA2_256))
    key, seed = b"k" * 32, b"seed material"
    assert prf_plus(p, key, seed, length) == _reference_prf_plus(key, seed, length)


def test_prf_plus_limit() -> None:
    p = prf_for(prf(PrfId.HMAC_SHA2_256))
    with pytest.raises(CryptoError, match="prf\\+"):
        prf_plus(p, b"k", b"s", 255 * 32 + 1)


def test_every_sa_of_a_transform_shares_one_algorithm_object() -> None:
    """Stateless algorithm objects are made once per transform, not per IKE SA (issue 15:
    two per SA, ~240 bytes), and a transform of another key length gets its own."""
    gcm = encr_for(Transform(TransformType.ENCR, EncrId.AES_GCM_16, 256))
    assert encr_for(Transform(TransformType.ENCR, EncrId.AES_GCM_16, 256)) is gcm
    assert encr_for(Transform(TransformType.ENCR, EncrId.AES_GCM_16, 128)) is not gcm
    assert prf_for(prf(PrfId.HMAC_SHA2_256)) is prf_for(prf(PrfId.HMAC_SHA2_256))
    integ = Transform(TransformType.INTEG, IntegId.HMAC_SHA2_256_128)
    assert integ_for(integ) is integ_for(Transform(TransformType.INTEG, IntegId.HMAC_SHA2_256_128))
    with pytest.raises(UnsupportedAlgorithm):  # refused every time, not remembered as good
        encr_for(Transform(TransformType.ENCR, EncrId.AES_CBC, 1000))
    with pytest.raises(UnsupportedAlgorithm):
        encr_for(Transform(TransformType.ENCR, EncrId.AES_CBC, 1000))
