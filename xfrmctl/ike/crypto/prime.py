"""Page in the crypto library's code for the algorithms a configuration names, before any IKE SA.

Contract: `prime(proposals)` runs each ENCR, INTEG, PRF and elliptic-curve KE transform of the
given IKE proposals once, on throwaway keys, and the SHA-1 of NAT detection (RFC 7296 §2.23),
each at most once per process. Nothing it computes is kept or sent. Transforms this build
cannot run are skipped: the proposal match never picks them (ike/proposals.py). MODP groups are
not primed: their key generation is real work (a modular exponentiation of 2048 bits or more),
where the elliptic curves' is a few microseconds.

Why: cryptography ships OpenSSL linked into one library of about 8 MB, and the kernel maps its
code in as it first runs. The first IKE SAs of a daemon touched about 1.6 MB of it (X25519,
AES-GCM, HMAC-SHA-256), so page faults slowed them, and RSS measured across a daemon's first
1000 IKE SAs counted that code as 1.4 KiB per IKE SA (issue 15). Primed at start, it counts
where it belongs: in the idle daemon.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import cache

from cryptography.hazmat.primitives import hashes

from xfrmctl.ike.crypto.algorithms import encr_for, integ_for, prf_for, prf_plus
from xfrmctl.ike.crypto.errors import UnsupportedAlgorithm
from xfrmctl.ike.crypto.keyexchange import is_modp, new_key_exchange
from xfrmctl.ike.iana import TransformType
from xfrmctl.ike.transforms import Proposal, Transform

_DATA = bytes(64)


def _encr(t: Transform) -> None:
    encr = encr_for(t)
    key, iv = bytes(encr.key_size), bytes(encr.iv_size)
    plain = _DATA[: encr.block_size * 2] if encr.block_size > 1 else _DATA
    encr.decrypt(key, iv, encr.encrypt(key, iv, plain, _DATA), _DATA)


def _integ(t: Transform) -> None:
    integ = integ_for(t)
    key = bytes(integ.key_size)
    integ.verify(key, _DATA, integ.compute(key, _DATA))


def _prf(t: Transform) -> None:
    prf = prf_for(t)
    key = bytes(prf.key_size)
    prf_plus(prf, prf(key, _DATA), _DATA, 3 * prf.output_size)


def _ke(t: Transform) -> None:
    if is_modp(t.id):
        return
    ours, theirs = new_key_exchange(t.id), new_key_exchange(t.id)
    ours.shared_secret(theirs.public_value())


_RUNS: dict[int, Callable[[Transform], None]] = {
    TransformType.ENCR: _encr,
    TransformType.INTEG: _integ,
    TransformType.PRF: _prf,
    TransformType.KE: _ke,
}


@cache
def _natd() -> None:
    natd = hashes.Hash(hashes.SHA1())
    natd.update(_DATA)
    natd.finalize()


_primed: set[Transform] = set()


def prime(proposals: Iterable[Proposal]) -> int:
    """Run each transform of `proposals` not run before; returns how many ran now."""
    _natd()
    ran = 0
    for proposal in proposals:
        for t in proposal.transforms:
            run = _RUNS.get(t.type)
            if run is None or t in _primed:
                continue
            _primed.add(t)
            try:
                run(t)
            except UnsupportedAlgorithm:
                continue
            ran += 1
    return ran
