"""IKEv2 transform → kernel algorithm mapping, and kernel errors in words."""

from __future__ import annotations

import errno

import pytest

from xfrmctl.daemon.transforms import (
    UnsupportedTransformError,
    kernel_encr,
    kernel_integ,
    sa_algorithms,
    supports_encr,
    supports_integ,
)
from xfrmctl.ike.iana import EncrId, IntegId
from xfrmctl.kernel.algorithms import Capabilities, probe_sas
from xfrmctl.kernel.errors import (
    AlgorithmUnavailableError,
    ErrorContext,
    KernelError,
    NotFoundError,
    ObjectExistsError,
    PermissionDeniedError,
    UnsupportedError,
)
from xfrmctl.kernel.messages import Msg


@pytest.mark.parametrize(
    ("encr", "bits", "name", "kernel_bits", "icv"),
    [
        (EncrId.AES_GCM_16, 256, "rfc4106(gcm(aes))", 288, 128),
        (EncrId.AES_GCM_16, 128, "rfc4106(gcm(aes))", 160, 128),
        (EncrId.AES_GCM_12, 192, "rfc4106(gcm(aes))", 224, 96),
        (EncrId.AES_GCM_8, 128, "rfc4106(gcm(aes))", 160, 64),
        (EncrId.CHACHA20_POLY1305, None, "rfc7539esp(chacha20,poly1305)", 288, 128),
        (EncrId.CHACHA20_POLY1305, 256, "rfc7539esp(chacha20,poly1305)", 288, 128),
        (EncrId.AES_CCM_16, 128, "rfc4309(ccm(aes))", 152, 128),
        (EncrId.NULL_AUTH_AES_GMAC, 256, "rfc4543(gcm(aes))", 288, 128),
        (EncrId.AES_CBC, 256, "cbc(aes)", 256, None),
        (EncrId.AES_CTR, 128, "rfc3686(ctr(aes))", 160, None),
        (EncrId.NULL, None, "ecb(cipher_null)", 0, None),
    ],
)
def test_encr_mapping(
    encr: EncrId, bits: int | None, name: str, kernel_bits: int, icv: int | None
) -> None:
    ke = kernel_encr(encr, bits)
    assert (ke.name, ke.key_bits, ke.icv_bits) == (name, kernel_bits, icv)
    assert ke.aead == (icv is not None)


@pytest.mark.parametrize(
    ("integ", "name", "key_bits", "trunc"),
    [
        (IntegId.HMAC_SHA1_96, "hmac(sha1)", 160, 96),
        (IntegId.HMAC_SHA2_256_128, "hmac(sha256)", 256, 128),
        (IntegId.HMAC_SHA2_384_192, "hmac(sha384)", 384, 192),
        (IntegId.HMAC_SHA2_512_256, "hmac(sha512)", 512, 256),
        (IntegId.AES_XCBC_96, "xcbc(aes)", 128, 96),
        (IntegId.AES_CMAC_96, "cmac(aes)", 128, 96),
    ],
)
def test_integ_mapping(integ: IntegId, name: str, key_bits: int, trunc: int) -> None:
    ki = kernel_integ(integ)
    assert (ki.name, ki.key_bits, ki.trunc_bits) == (name, key_bits, trunc)


def test_bad_transforms_are_named() -> None:
    with pytest.raises(UnsupportedTransformError, match="AES_CBC with a 100-bit key"):
        kernel_encr(EncrId.AES_CBC, 100)
    with pytest.raises(UnsupportedTransformError, match="AES_GCM_16 needs a key length"):
        kernel_encr(EncrId.AES_GCM_16)
    with pytest.raises(UnsupportedTransformError, match="ENCR transform 1 "):
        kernel_encr(EncrId.DES_IV64, 64)
    with pytest.raises(UnsupportedTransformError, match="INTEG transform 9 "):
        kernel_integ(IntegId.AES_128_GMAC)


def test_sa_algorithms_checks_key_lengths_and_aead_rules() -> None:
    aead, crypt, auth = sa_algorithms(EncrId.AES_GCM_16, 256, None, bytes(36))
    assert aead is not None and aead.name == "rfc4106(gcm(aes))" and aead.icv_bits == 128
    assert crypt is None and auth is None
    aead, crypt, auth = sa_algorithms(
        EncrId.AES_CBC, 128, IntegId.HMAC_SHA2_256_128, bytes(16), bytes(32)
    )
    assert aead is None and crypt is not None and auth is not None
    assert auth.trunc_bits == 128
    with pytest.raises(ValueError, match="36-byte key"):
        sa_algorithms(EncrId.AES_GCM_16, 256, None, bytes(32))
    with pytest.raises(UnsupportedTransformError, match="AEAD"):
        sa_algorithms(EncrId.AES_GCM_16, 256, IntegId.HMAC_SHA1_96, bytes(36), bytes(20))
    with pytest.raises(ValueError, match="20-byte key"):
        sa_algorithms(EncrId.AES_CBC, 128, IntegId.HMAC_SHA1_96, bytes(16), bytes(16))


def test_capabilities_answer_by_transform() -> None:
    caps = Capabilities(True, False, frozenset({"rfc4106(gcm(aes))", "hmac(sha256)"}))
    assert supports_encr(caps, EncrId.AES_GCM_16, 256)
    assert not supports_encr(caps, EncrId.CHACHA20_POLY1305)
    assert not supports_encr(caps, EncrId.AES_GCM_16, 100)
    assert supports_integ(caps, IntegId.HMAC_SHA2_256_128)
    assert not supports_integ(caps, IntegId.HMAC_SHA1_96)
    no_esp = Capabilities(False, False, frozenset({"rfc4106(gcm(aes))"}))
    assert not supports_encr(no_esp, EncrId.AES_GCM_16, 256)


def test_probe_covers_every_kernel_algorithm_once() -> None:
    sas = probe_sas()
    names = [
        (sa.aead or (sa.auth if sa.auth and sa.crypt else sa.crypt) or sa.auth).name  # type: ignore[union-attr]
        for sa in sas[:-1]
    ]
    assert len(names) == len(set(names))
    assert {
        "rfc4106(gcm(aes))",
        "rfc7539esp(chacha20,poly1305)",
        "cbc(aes)",
        "hmac(sha512)",
    } <= set(names)
    assert len({sa.spi for sa in sas}) == len(sas)


# --- errors in words ----------------------------------------------------------------------------


def test_error_messages_name_object_and_cause() -> None:
    ctx = ErrorContext("esp spi 0x00001000 dst 192.0.2.2", "esp4", {"aead": "rfc4106(gcm(aes))"})
    err = KernelError.from_netlink(Msg.NEWSA, errno.EEXIST, None, ctx)
    assert isinstance(err, ObjectExistsError)
    assert str(err) == "SA already exists: esp spi 0x00001000 dst 192.0.2.2"

    err = KernelError.from_netlink(
        Msg.NEWSA, errno.ENOSYS, "Requested AEAD algorithm not found", ctx
    )
    assert isinstance(err, AlgorithmUnavailableError)
    assert "algorithm rfc4106(gcm(aes)) not available in this kernel" in str(err)
    assert "Requested AEAD algorithm not found" in str(err)

    err = KernelError.from_netlink(
        Msg.NEWSA, errno.EPROTONOSUPPORT, "Requested type not found", ctx
    )
    assert isinstance(err, UnsupportedError)
    assert "kernel lacks ESP support (module esp4 not loaded)" in str(err)

    err = KernelError.from_netlink(Msg.DELPOLICY, errno.ENOENT, None, ErrorContext("policy out x"))
    assert isinstance(err, NotFoundError) and str(err) == "no such policy: policy out x"

    err = KernelError.from_netlink(Msg.NEWPOLICY, errno.EPERM, None, ErrorContext("policy in y"))
    assert isinstance(err, PermissionDeniedError) and "CAP_NET_ADMIN" in str(err)

    err = KernelError.from_netlink(Msg.NEWSA, errno.EINVAL, "Invalid replay window", ctx)
    assert "invalid request" in str(err) and "Invalid replay window" in str(err)
    assert err.code == errno.EINVAL and err.ext_ack == "Invalid replay window"
