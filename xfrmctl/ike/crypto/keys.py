"""The IKEv2 key schedule: IKE SA keys (RFC 7296 §2.14), rekeyed IKE SA keys (§2.18) and
Child SA KEYMAT (§2.17)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from xfrmctl.ike.crypto.algorithms import Encr, Integ, Prf, prf_plus


class _NoKeysInRepr:
    """Keys must never end up in logs, so repr shows only field names and lengths."""

    __slots__ = ()  # an IKE SA keeps its keys for life: no __dict__ beside them

    def __repr__(self) -> str:
        parts = ", ".join(f"{f.name}=<{len(getattr(self, f.name))} bytes>" for f in fields(self))  # type: ignore[arg-type]
        return f"{type(self).__name__}({parts})"


@dataclass(frozen=True, repr=False, slots=True)
class IkeKeys(_NoKeysInRepr):
    sk_d: bytes
    sk_ai: bytes
    sk_ar: bytes
    sk_ei: bytes
    sk_er: bytes
    sk_pi: bytes
    sk_pr: bytes


@dataclass(frozen=True, repr=False, slots=True)
class ChildKeys(_NoKeysInRepr):
    """`_i` keys protect traffic initiator→responder; integ_* are empty for AEAD."""

    encr_i: bytes
    integ_i: bytes
    encr_r: bytes
    integ_r: bytes


def _split_ike_keys(
    prf: Prf, integ: Integ | None, encr: Encr, skeyseed: bytes, seed: bytes
) -> IkeKeys:
    a = 0 if integ is None or encr.is_aead else integ.key_size
    sizes = (prf.key_size, a, a, encr.key_size, encr.key_size, prf.key_size, prf.key_size)
    stream = prf_plus(prf, skeyseed, seed, sum(sizes))
    parts = []
    offset = 0
    for size in sizes:
        parts.append(stream[offset : offset + size])
        offset += size
    return IkeKeys(*parts)


def derive_ike_keys(
    prf: Prf,
    integ: Integ | None,
    encr: Encr,
    ni: bytes,
    nr: bytes,
    shared_secret: bytes,
    spi_i: bytes,
    spi_r: bytes,
) -> IkeKeys:
    """Keys of a new IKE SA from IKE_SA_INIT.

    For fixed-key PRFs (AES-XCBC/CMAC) the SKEYSEED key is Ni[0:8] | Nr[0:8] (§2.14), as
    strongSwan does, rather than relying on RFC 4434's variable-length key handling.
    """
    nonces = ni[:8] + nr[:8] if prf.fixed_key else ni + nr
    skeyseed = prf(nonces, shared_secret)
    return _split_ike_keys(prf, integ, encr, skeyseed, ni + nr + spi_i + spi_r)


def derive_rekeyed_ike_keys(
    old_prf: Prf,
    old_sk_d: bytes,
    prf: Prf,
    integ: Integ | None,
    encr: Encr,
    shared_secret: bytes,
    ni: bytes,
    nr: bytes,
    spi_i: bytes,
    spi_r: bytes,
) -> IkeKeys:
    """Keys of an IKE SA rekeyed by CREATE_CHILD_SA: SKEYSEED = prf(SK_d_old, g^ir | Ni | Nr),
    computed with the old SA's PRF; the new SA's SPIs and PRF derive the rest."""
    skeyseed = old_prf(old_sk_d, shared_secret + ni + nr)
    return _split_ike_keys(prf, integ, encr, skeyseed, ni + nr + spi_i + spi_r)


def derive_child_keys(
    prf: Prf,
    sk_d: bytes,
    ni: bytes,
    nr: bytes,
    shared_secret: bytes | None,
    encr_key_size: int,
    integ_key_size: int,
) -> ChildKeys:
    """KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr), taken in the order of §2.17."""
    seed = (shared_secret or b"") + ni + nr
    e, a = encr_key_size, integ_key_size
    keymat = prf_plus(prf, sk_d, seed, 2 * (e + a))
    return ChildKeys(
        encr_i=keymat[:e],
        integ_i=keymat[e : e + a],
        encr_r=keymat[e + a : 2 * e + a],
        integ_r=keymat[2 * e + a :],
    )
