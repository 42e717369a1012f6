"""Key exchange: RFC 5903 / RFC 7748 known answers, round trips and rejection of bad values."""

from __future__ import annotations

import random

import pytest

from xfrmctl.ike.crypto.errors import InvalidKeyExchange, UnsupportedAlgorithm
from xfrmctl.ike.crypto.keyexchange import (
    _MODP_PRIMES,
    key_exchange_from_private,
    new_key_exchange,
    public_value_size,
    supported_groups,
)
from xfrmctl.ike.iana import KeId

h = bytes.fromhex

ALL_GROUPS = [
    KeId.MODP2048,
    KeId.MODP3072,
    KeId.MODP4096,
    KeId.ECP256,
    KeId.ECP384,
    KeId.ECP521,
    KeId.CURVE25519,
    KeId.CURVE448,
]


def test_supported_groups() -> None:
    assert supported_groups() == frozenset(ALL_GROUPS)


@pytest.mark.parametrize("group", ALL_GROUPS)
def test_round_trip(group: KeId) -> None:
    a, b = new_key_exchange(group), new_key_exchange(group)
    assert len(a.public_value()) == public_value_size(group)
    secret = a.shared_secret(b.public_value())
    assert secret == b.shared_secret(a.public_value())
    assert any(secret)
    assert a.public_value() != b.public_value()
    assert repr(a) == f"<{type(a).__name__} {group.name}>"


@pytest.mark.parametrize("group", ALL_GROUPS)
def test_wrong_length_rejected(group: KeId) -> None:
    a, b = new_key_exchange(group), new_key_exchange(group)
    with pytest.raises(InvalidKeyExchange, match="must be"):
        a.shared_secret(b.public_value()[:-1])
    with pytest.raises(InvalidKeyExchange, match="must be"):
        a.shared_secret(b.public_value() + b"\0")


@pytest.mark.parametrize("group", ALL_GROUPS)
def test_zero_rejected(group: KeId) -> None:
    a = new_key_exchange(group)
    with pytest.raises(InvalidKeyExchange):
        a.shared_secret(bytes(public_value_size(group)))


@pytest.mark.parametrize("group", [KeId.MODP2048, KeId.MODP3072, KeId.MODP4096])
def test_modp_bounds(group: KeId) -> None:
    a = new_key_exchange(group)
    size = public_value_size(group)
    p = _MODP_PRIMES[group]
    assert p.bit_length() == size * 8
    for bad in (0, 1, p - 1, p, p + 1, 2 ** (8 * size) - 1):
        with pytest.raises(InvalidKeyExchange, match="1 < y < p-1"):
            a.shared_secret(bad.to_bytes(size, "big"))
    # 2 and p-2 are legal values
    assert len(a.shared_secret((2).to_bytes(size, "big"))) == size
    assert len(a.shared_secret((p - 2).to_bytes(size, "big"))) == size


def _is_probable_prime(n: int, rounds: int = 8) -> bool:
    if n % 2 == 0:
        return False
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    rng = random.Random(4242)
    for _ in range(rounds):
        x = pow(rng.randrange(2, n - 2), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


@pytest.mark.parametrize("group", [KeId.MODP2048, KeId.MODP3072, KeId.MODP4096])
def test_modp_primes_are_rfc3526_safe_primes(group: KeId) -> None:
    """The embedded primes have RFC 3526's shape (top and bottom 64 bits set) and are safe."""
    p = _MODP_PRIMES[group]
    bits = p.bit_length()
    assert p >> (bits - 64) == 2**64 - 1
    assert p & (2**64 - 1) == 2**64 - 1
    assert _is_probable_prime(p, 2)
    assert _is_probable_prime((p - 1) // 2, 2)
    # RFC 3526: the 2048-bit prime is a prefix-sharing sibling of the larger ones (pi digits).
    p2048 = _MODP_PRIMES[KeId.MODP2048]
    assert (p >> (bits - 1800)) == (p2048 >> (2048 - 1800))


def test_ecp256_rfc5903() -> None:
    i = h("C88F01F510D9AC3F70A292DAA2316DE544E9AAB8AFE84049C62A9C57862D1433")
    gi = h(
        "DAD0B65394221CF9B051E1FECA5787D098DFE637FC90B9EF945D0C3772581180"
        "5271A0461CDB8252D61F1C456FA3E59AB1F45B33ACCF5F58389E0577B8990BB3"
    )
    r = h("C6EF9C5D78AE012A011164ACB397CE2088685D8F06BF9BE0B283AB46476BEE53")
    gr = h(
        "D12DFB5289C8D4F81208B70270398C342296970A0BCCB74C736FC7554494BF63"
        "56FBF3CA366CC23E8157854C13C58D6AAC23F046ADA30F8353E74F33039872AB"
    )
    gir = h("D6840F6B42F6EDAFD13116E0E12565202FEF8E9ECE7DCE03812464D04B9442DE")
    ki = key_exchange_from_private(KeId.ECP256, i)
    kr = key_exchange_from_private(KeId.ECP256, r)
    assert ki.public_value() == gi
    assert kr.public_value() == gr
    assert ki.shared_secret(gr) == gir
    assert kr.shared_secret(gi) == gir


@pytest.mark.parametrize("group", [KeId.ECP256, KeId.ECP384, KeId.ECP521])
def test_ecp_point_not_on_curve(group: KeId) -> None:
    a, b = new_key_exchange(group), new_key_exchange(group)
    pub = bytearray(b.public_value())
    pub[-1] ^= 1  # y no longer matches x
    with pytest.raises(InvalidKeyExchange, match="not on the curve"):
        a.shared_secret(bytes(pub))


def test_x25519_rfc7748() -> None:
    a_priv = h("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    a_pub = h("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    b_priv = h("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
    b_pub = h("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    k = h("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
    a = key_exchange_from_private(KeId.CURVE25519, a_priv)
    b = key_exchange_from_private(KeId.CURVE25519, b_priv)
    assert a.public_value() == a_pub
    assert b.public_value() == b_pub
    assert a.shared_secret(b_pub) == k
    assert b.shared_secret(a_pub) == k


def test_x448_rfc7748() -> None:
    a_priv = h(
        "9a8f4925d1519f5775cf46b04b5800d4ee9ee8bae8bc5565d498c28d"
        "d9c9baf574a9419744897391006382a6f127ab1d9ac2d8c0a598726b"
    )
    a_pub = h(
        "9b08f7cc31b7e3e67d22d5aea121074a273bd2b83de09c63faa73d2c"
        "22c5d9bbc836647241d953d40c5b12da88120d53177f80e532c41fa0"
    )
    b_priv = h(
        "1c306a7ac2a0e2e0990b294470cba339e6453772b075811d8fad0d1d"
        "6927c120bb5ee8972b0d3e21374c9c921b09d1b0366f10b65173992d"
    )
    b_pub = h(
        "3eb7a829b0cd20f5bcfc0b599b6feccf6da4627107bdb0d4f345b430"
        "27d8b972fc3e34fb4232a13ca706dcb57aec3dae07bdc1c67bf33609"
    )
    k = h(
        "07fff4181ac6cc95ec1c16a94a0f74d12da232ce40a77552281d282b"
        "b60c0b56fd2464c335543936521c24403085d59a449a5037514a879d"
    )
    a = key_exchange_from_private(KeId.CURVE448, a_priv)
    b = key_exchange_from_private(KeId.CURVE448, b_priv)
    assert a.public_value() == a_pub
    assert b.public_value() == b_pub
    assert a.shared_secret(b_pub) == k


def test_x25519_low_order_point_rejected() -> None:
    a = new_key_exchange(KeId.CURVE25519)
    one = (1).to_bytes(32, "little")  # u = 1 has order 4: the result is all zero
    with pytest.raises(InvalidKeyExchange, match="low-order"):
        a.shared_secret(one)


def test_unsupported_groups() -> None:
    for group in (KeId.MODP1024, KeId.MODP1536, KeId.NONE, 12345):
        with pytest.raises(UnsupportedAlgorithm, match="not supported"):
            new_key_exchange(group)
