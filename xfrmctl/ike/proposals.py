"""Proposals in strongSwan's syntax (`aes256gcm16-prfsha384-x25519`), defaults, and selection.

Operators already know strongSwan's keywords, so we accept its spelling and its rules
(docs.strongswan.org "Algorithm Proposals"): several algorithms of one type in a proposal are
alternatives in order of preference; for IKE without a prf keyword the PRFs follow the integrity
algorithms; AEAD ciphers drop integrity algorithms and cannot be mixed with classic ciphers;
an ESP/AH key exchange method means PFS; ESP/AH default to `noesn`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence

from xfrmctl.ike.iana import EncrId, EsnId, IntegId, KeId, PrfId, ProtocolId, TransformType
from xfrmctl.ike.transforms import Proposal, Transform

_ENCR = TransformType.ENCR
_PRF = TransformType.PRF
_INTEG = TransformType.INTEG
_KE = TransformType.KE
_ESN = TransformType.ESN


class ProposalSyntaxError(ValueError):
    """A proposal string we cannot use; `token` is the offending keyword (or whole proposal)."""

    def __init__(self, token: str, why: str) -> None:
        self.token = token
        super().__init__(f"proposal keyword {token!r}: {why}" if token else why)


def _build_keywords() -> dict[str, Transform]:
    kw: dict[str, Transform] = {}
    for bits in (128, 192, 256):
        kw[f"aes{bits}"] = Transform(_ENCR, EncrId.AES_CBC, bits)
        for icv, eid in ((16, EncrId.AES_GCM_16), (8, EncrId.AES_GCM_8), (12, EncrId.AES_GCM_12)):
            kw[f"aes{bits}gcm{icv}"] = Transform(_ENCR, eid, bits)
            kw[f"aes{bits}gcm{icv * 8}"] = Transform(_ENCR, eid, bits)
        kw[f"aes{bits}gcm"] = Transform(_ENCR, EncrId.AES_GCM_16, bits)
    kw["aes"] = kw["aes128"]
    kw["chacha20poly1305"] = Transform(_ENCR, EncrId.CHACHA20_POLY1305)
    for name, iid, pid in (
        ("sha256", IntegId.HMAC_SHA2_256_128, PrfId.HMAC_SHA2_256),
        ("sha384", IntegId.HMAC_SHA2_384_192, PrfId.HMAC_SHA2_384),
        ("sha512", IntegId.HMAC_SHA2_512_256, PrfId.HMAC_SHA2_512),
        ("sha1", IntegId.HMAC_SHA1_96, PrfId.HMAC_SHA1),
        ("aesxcbc", IntegId.AES_XCBC_96, PrfId.AES128_XCBC),
        ("aescmac", IntegId.AES_CMAC_96, PrfId.AES128_CMAC),
    ):
        kw[name] = Transform(_INTEG, iid)
        kw["prf" + name] = Transform(_PRF, pid)
    kw["sha"] = kw["sha1"]
    for bits in (256, 384, 512):
        kw[f"sha2_{bits}"] = kw[f"sha{bits}"]
        kw[f"prfsha2_{bits}"] = kw[f"prfsha{bits}"]
    for name, gid in (
        ("x25519", KeId.CURVE25519),
        ("x448", KeId.CURVE448),
        ("ecp256", KeId.ECP256),
        ("ecp384", KeId.ECP384),
        ("ecp521", KeId.ECP521),
        ("modp2048", KeId.MODP2048),
        ("modp3072", KeId.MODP3072),
        ("modp4096", KeId.MODP4096),
    ):
        kw[name] = Transform(_KE, gid)
    kw["curve25519"] = kw["x25519"]
    kw["curve448"] = kw["x448"]
    kw["esn"] = Transform(_ESN, EsnId.ESN)
    kw["noesn"] = Transform(_ESN, EsnId.NO_ESN)
    return kw


KEYWORDS = _build_keywords()
# First keyword per transform is the canonical spelling used by format_proposal.
_CANONICAL: dict[Transform, str] = {}
for _name, _t in KEYWORDS.items():
    _CANONICAL.setdefault(_t, _name)

# strongSwan keywords for algorithms we deliberately do not implement (weak or unneeded).
_KNOWN_UNSUPPORTED = re.compile(
    r"(3?des|null|blowfish\d*|cast128|camellia\d*\w*|serpent\d*|twofish\d*|idea|"
    r"aes\d*(ctr|ccm\d*|gmac)|aes\d*gcm\d+|chacha20|md5(_128)?|prfmd5|sha1_160|sha\d+_96|"
    r"prfcamellia\w*|modp(768|1024|1536|6144|8192|1024s160|2048s224|2048s256|none)|"
    r"ecp(192|224)|ecp\d+bp|mlkem\d+|ke\d_\w+|ntru\w*|newhope\w*)"
)

_PRF_OF_INTEG = {
    Transform(_INTEG, iid): Transform(_PRF, pid)
    for iid, pid in (
        (IntegId.HMAC_SHA1_96, PrfId.HMAC_SHA1),
        (IntegId.HMAC_SHA2_256_128, PrfId.HMAC_SHA2_256),
        (IntegId.HMAC_SHA2_384_192, PrfId.HMAC_SHA2_384),
        (IntegId.HMAC_SHA2_512_256, PrfId.HMAC_SHA2_512),
        (IntegId.AES_XCBC_96, PrfId.AES128_XCBC),
        (IntegId.AES_CMAC_96, PrfId.AES128_CMAC),
    )
}

_AEAD = frozenset(
    {EncrId.AES_GCM_8, EncrId.AES_GCM_12, EncrId.AES_GCM_16, EncrId.CHACHA20_POLY1305}
)


def is_aead(t: Transform) -> bool:
    return t.type == _ENCR and t.id in _AEAD


def _unique(items: Iterable[Transform]) -> list[Transform]:
    out: list[Transform] = []
    for t in items:
        if t not in out:
            out.append(t)
    return out


def _lookup(token: str, protocol: ProtocolId) -> Transform:
    if not token:
        raise ProposalSyntaxError(token, "empty algorithm keyword (doubled or trailing '-')")
    t = KEYWORDS.get(token.lower())
    if t is None:
        if _KNOWN_UNSUPPORTED.fullmatch(token.lower()):
            raise ProposalSyntaxError(token, "algorithm is not supported by xfrmctl")
        raise ProposalSyntaxError(token, "unknown algorithm keyword")
    if t.type == _ENCR and protocol == ProtocolId.AH:
        raise ProposalSyntaxError(token, "AH proposals cannot contain encryption algorithms")
    if t.type == _PRF and protocol != ProtocolId.IKE:
        raise ProposalSyntaxError(token, "PRF keywords are only valid in IKE proposals")
    if t.type == _ESN and protocol == ProtocolId.IKE:
        raise ProposalSyntaxError(token, "ESN keywords are only valid in ESP/AH proposals")
    return t


@functools.lru_cache(maxsize=256)
def parse_proposal(text: str, protocol: ProtocolId) -> Proposal:
    """One proposal, e.g. IKE "aes256gcm16-prfsha384-x25519", ESP "aes256gcm16-x25519" (PFS).

    Cached (a Proposal is immutable): a fleet's connections repeat a few proposals, and a
    reload checked each one's text twice (issue 15). Errors are raised again, not kept."""
    if not isinstance(text, str):
        raise ProposalSyntaxError("", f"proposal must be a string, not {type(text).__name__}")
    if protocol not in (ProtocolId.IKE, ProtocolId.ESP, ProtocolId.AH):
        raise ProposalSyntaxError("", f"no proposals for protocol {protocol!r}")
    whole = text.strip()
    if not whole:
        raise ProposalSyntaxError("", "empty proposal")
    found: dict[TransformType, list[Transform]] = {tt: [] for tt in TransformType}
    first_encr: tuple[str, bool] | None = None
    for token in whole.split("-"):
        t = _lookup(token.strip(), protocol)
        if t.type == _ENCR:
            if first_encr is None:
                first_encr = (token, is_aead(t))
            elif first_encr[1] != is_aead(t):
                kinds = ("AEAD", "classic") if first_encr[1] else ("classic", "AEAD")
                raise ProposalSyntaxError(
                    token,
                    f"{kinds[1]} cipher cannot be combined with {kinds[0]} cipher "
                    f"{first_encr[0]!r} in one proposal (use two proposals)",
                )
        found[t.type].append(t)
    encr, integ = _unique(found[_ENCR]), _unique(found[_INTEG])
    prf, ke, esn = _unique(found[_PRF]), _unique(found[_KE]), _unique(found[_ESN])
    aead = first_encr is not None and first_encr[1]
    name = protocol.name
    if protocol != ProtocolId.AH and not encr:
        raise ProposalSyntaxError(whole, f"{name} proposal needs an encryption algorithm")
    if protocol == ProtocolId.IKE:
        if not prf:
            prf = _unique(_PRF_OF_INTEG[t] for t in integ)
        if not prf:
            raise ProposalSyntaxError(
                whole, "IKE proposal with an AEAD cipher needs a PRF keyword, e.g. prfsha256"
            )
        if not ke:
            raise ProposalSyntaxError(
                whole, "IKE proposal needs a key exchange method, e.g. x25519"
            )
    if aead:
        integ = []  # strongSwan: integrity algorithms are not proposed with AEAD
    elif not integ:
        raise ProposalSyntaxError(whole, f"{name} proposal needs an integrity algorithm")
    if protocol != ProtocolId.IKE and not esn:
        esn = [Transform(_ESN, EsnId.NO_ESN)]
    return Proposal(protocol, tuple(encr + prf + integ + ke + esn))


def parse_proposals(texts: Sequence[str], protocol: ProtocolId) -> list[Proposal]:
    """Several proposals (list items and/or comma-separated); "default" inserts the defaults."""
    if isinstance(texts, str):
        texts = [texts]
    out: list[Proposal] = []
    for text in texts:
        if not isinstance(text, str):
            raise ProposalSyntaxError("", f"proposal must be a string, not {type(text).__name__}")
        for part in text.split(","):
            if part.strip().lower() == "default":
                out.extend(default_proposals(protocol))
            else:
                out.append(parse_proposal(part, protocol))
    if not out:
        raise ProposalSyntaxError("", f"no {protocol.name} proposals given")
    return out


# strongSwan names of transforms we do not implement, so logs of a peer's offer read naturally.
_OTHER_NAMES: dict[tuple[TransformType, int], str] = {
    (_ENCR, EncrId.DES3): "3des",
    (_ENCR, EncrId.DES): "des",
    (_ENCR, EncrId.NULL): "null",
    (_ENCR, EncrId.AES_CTR): "aes{}ctr",
    (_ENCR, EncrId.AES_CCM_8): "aes{}ccm8",
    (_ENCR, EncrId.AES_CCM_12): "aes{}ccm12",
    (_ENCR, EncrId.AES_CCM_16): "aes{}ccm16",
    (_ENCR, EncrId.CAMELLIA_CBC): "camellia{}",
    (_INTEG, IntegId.HMAC_MD5_96): "md5",
    (_INTEG, IntegId.HMAC_SHA1_160): "sha1_160",
    (_INTEG, IntegId.NONE): "nointeg",
    (_PRF, PrfId.HMAC_MD5): "prfmd5",
    (_KE, KeId.NONE): "nokex",
    **{(_KE, g): g.name.lower() for g in KeId if g.name.startswith("MODP")},
}


def _keyword(t: Transform) -> str:
    """Canonical keyword; transforms without one get a readable name for logs."""
    if t in _CANONICAL:
        return _CANONICAL[t]
    other = _OTHER_NAMES.get((t.type, t.id))
    if other is not None:
        return other.format(t.key_length or "")
    return f"{t.type.name.lower()}{t.id}" + (f"_{t.key_length}" if t.key_length else "")


def format_proposal(p: Proposal) -> str:
    """strongSwan spelling of a proposal; parse_proposal(format_proposal(p)) == p."""
    return _format(Proposal(p.protocol, p.transforms))


@functools.lru_cache(maxsize=256)
def _format(p: Proposal) -> str:
    """Cached: every IKE and Child SA event and status names its proposal, and a daemon
    agrees on few distinct ones (the key holds neither the number nor the SPI)."""
    tokens = [_keyword(t) for t in p.of_type(_ENCR)]
    integ, prf = p.of_type(_INTEG), p.of_type(_PRF)
    tokens += [_keyword(t) for t in integ]
    if list(prf) != _unique(_PRF_OF_INTEG.get(t, t) for t in integ):
        tokens += [_keyword(t) for t in prf]
    tokens += [_keyword(t) for t in p.of_type(_KE)]
    esn = p.of_type(_ESN)
    if esn != (Transform(_ESN, EsnId.NO_ESN),):
        tokens += [_keyword(t) for t in esn]
    return "-".join(tokens)


_DEFAULTS = {
    ProtocolId.IKE: [
        "aes256gcm16-aes128gcm16-chacha20poly1305-prfsha256-prfsha384-prfsha512"
        "-x25519-ecp256-ecp384-x448-modp3072-modp4096",
        "aes256-aes128-sha256-sha384-sha512-x25519-ecp256-ecp384-x448-modp3072-modp4096",
    ],
    ProtocolId.ESP: [
        "aes256gcm16-aes128gcm16-chacha20poly1305",
        "aes256-aes128-sha256-sha384-sha512",
    ],
    ProtocolId.AH: ["sha256-sha384-sha512"],
}


def default_proposals(protocol: ProtocolId) -> list[Proposal]:
    """Secure and fast: AEAD first, X25519 preferred, classic CBC+HMAC-SHA2 as a fallback."""
    if protocol not in _DEFAULTS:
        raise ProposalSyntaxError("", f"no proposals for protocol {protocol!r}")
    return [parse_proposal(text, protocol) for text in _DEFAULTS[protocol]]


# --- selection ------------------------------------------------------------------------------


def _types(p: Proposal, ignore_ke: bool) -> set[TransformType]:
    return {t.type for t in p.transforms if not (ignore_ke and t.type == _KE)}


_NO_ESN = Transform(_ESN, EsnId.NO_ESN)
_OPTIONAL = (_INTEG, _KE)  # types whose ID 0 means "none of this"


def _alternatives(p: Proposal, ttype: TransformType) -> tuple[Transform, ...]:
    found = p.of_type(ttype)
    if not found and ttype == _ESN and p.protocol != ProtocolId.IKE:
        return (_NO_ESN,)  # a peer that omits ESN cannot do extended sequence numbers
    return found


# What _match answered, by (each side's protocol and transforms, ignore_ke): a responder
# matches the same configured proposals against the same few offers for every IKE and Child
# SA (decoded transforms are shared objects, so a lookup compares them by identity). Bounded:
# a peer may offer anything.
_MATCHED: dict[tuple[object, ...], tuple[Transform, ...] | None] = {}
_MATCHED_KEPT = 1024


def _match(first: Proposal, second: Proposal, ignore_ke: bool) -> tuple[Transform, ...] | None:
    key = (first.protocol, first.transforms, second.protocol, second.transforms, ignore_ke)
    try:
        return _MATCHED[key]
    except KeyError:
        pass
    chosen = _match_types(first, second, ignore_ke)
    if len(_MATCHED) < _MATCHED_KEPT:
        _MATCHED[key] = chosen
    return chosen


def _match_types(
    first: Proposal, second: Proposal, ignore_ke: bool
) -> tuple[Transform, ...] | None:
    chosen: list[Transform] = []
    for ttype in sorted(_types(first, ignore_ke) | _types(second, ignore_ke)):
        a, b = _alternatives(first, ttype), _alternatives(second, ttype)
        if not a or not b:
            # an absent INTEG/KE matches the other side's NONE (ID 0) alternative
            if ttype in _OPTIONAL and any(t.id == 0 for t in a or b):
                continue
            return None
        pick = next((t for t in a if t in b), None)
        if pick is None:
            return None
        if not (ttype in _OPTIONAL and pick.id == 0):
            chosen.append(pick)
    return tuple(chosen)


def select_proposal(
    ours: Sequence[Proposal],
    theirs: Sequence[Proposal],
    *,
    prefer_ours: bool = True,
    ignore_ke: bool = False,
) -> Proposal | None:
    """Responder's choice: one transform per type, with the peer's proposal num and SPI.

    `ignore_ke` drops KE transforms on both sides (the Child SA negotiated in IKE_AUTH, where
    RFC 7296 §1.2 says KE transforms are not used).
    """
    pairs = (
        [(o, t) for o in ours for t in theirs]
        if prefer_ours
        else [(o, t) for t in theirs for o in ours]
    )
    for o, t in pairs:
        if o.protocol != t.protocol:
            continue
        first, second = (o, t) if prefer_ours else (t, o)
        chosen = _match(first, second, ignore_ke)
        if chosen is not None:
            return Proposal(t.protocol, chosen, num=t.num, spi=t.spi)
    return None


def proposal_is_acceptable(
    ours: Sequence[Proposal], chosen: Proposal, *, ignore_ke: bool = False
) -> bool:
    """Initiator's check of the responder's answer: exactly one transform per type, all of
    them from one of our proposals."""
    types = [t.type for t in chosen.transforms if not (ignore_ke and t.type == _KE)]
    if len(types) != len(set(types)):
        return False
    for p in ours:
        if p.protocol != chosen.protocol:
            continue
        match = _match(chosen, p, ignore_ke)
        expected = {
            t
            for t in chosen.transforms
            if not (t.type in _OPTIONAL and t.id == 0) and not (ignore_ke and t.type == _KE)
        }
        if match is not None and set(match) >= expected:
            return True
    return False
