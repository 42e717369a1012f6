"""strongSwan proposal syntax: parsing, errors naming the token, formatting, defaults, selection."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xfrmctl.ike.iana import EncrId, EsnId, IntegId, KeId, PrfId, ProtocolId, TransformType
from xfrmctl.ike.proposals import (
    KEYWORDS,
    ProposalSyntaxError,
    default_proposals,
    format_proposal,
    parse_proposal,
    parse_proposals,
    proposal_is_acceptable,
    select_proposal,
)
from xfrmctl.ike.transforms import Proposal, Transform

IKE, ESP, AH = ProtocolId.IKE, ProtocolId.ESP, ProtocolId.AH
ENCR, PRF, INTEG, KE, ESN = (
    TransformType.ENCR,
    TransformType.PRF,
    TransformType.INTEG,
    TransformType.KE,
    TransformType.ESN,
)
NO_ESN = Transform(ESN, EsnId.NO_ESN)


def test_ike_aead_with_prf() -> None:
    p = parse_proposal("aes256gcm16-prfsha384-x25519", IKE)
    assert p == Proposal(
        IKE,
        (
            Transform(ENCR, EncrId.AES_GCM_16, 256),
            Transform(PRF, PrfId.HMAC_SHA2_384),
            Transform(KE, KeId.CURVE25519),
        ),
    )


def test_ike_classic_prf_follows_integrity() -> None:
    p = parse_proposal("aes128-sha256-modp3072", IKE)
    assert p.transforms == (
        Transform(ENCR, EncrId.AES_CBC, 128),
        Transform(PRF, PrfId.HMAC_SHA2_256),
        Transform(INTEG, IntegId.HMAC_SHA2_256_128),
        Transform(KE, KeId.MODP3072),
    )
    q = parse_proposal("aes128-sha256-aesxcbc-sha256-x25519", IKE)
    assert q.of_type(PRF) == (
        Transform(PRF, PrfId.HMAC_SHA2_256),
        Transform(PRF, PrfId.AES128_XCBC),
    )
    assert len(q.of_type(INTEG)) == 2


def test_explicit_prf_overrides_integrity() -> None:
    p = parse_proposal("aes128-sha1-prfsha256-ecp256", IKE)
    assert p.of_type(PRF) == (Transform(PRF, PrfId.HMAC_SHA2_256),)
    assert p.of_type(INTEG) == (Transform(INTEG, IntegId.HMAC_SHA1_96),)


def test_ike_aead_integrity_keyword_becomes_prf() -> None:
    """strongSwan derives the PRF from the integrity keyword, then drops integrity for AEAD."""
    p = parse_proposal("aes256gcm16-sha384-x25519", IKE)
    assert p.of_type(PRF) == (Transform(PRF, PrfId.HMAC_SHA2_384),)
    assert p.of_type(INTEG) == ()


def test_alternatives_keep_order() -> None:
    p = parse_proposal("aes128-aes256-sha256-x25519-ecp256", IKE)
    assert p.of_type(ENCR) == (
        Transform(ENCR, EncrId.AES_CBC, 128),
        Transform(ENCR, EncrId.AES_CBC, 256),
    )
    assert p.of_type(KE) == (Transform(KE, KeId.CURVE25519), Transform(KE, KeId.ECP256))
    # the order of different kinds does not matter
    assert parse_proposal("x25519-sha256-aes128-ecp256-aes256", IKE) == p


def test_esp() -> None:
    assert parse_proposal("aes256gcm16", ESP).transforms == (
        Transform(ENCR, EncrId.AES_GCM_16, 256),
        NO_ESN,
    )
    pfs = parse_proposal("aes256gcm16-x25519", ESP)
    assert pfs.of_type(KE) == (Transform(KE, KeId.CURVE25519),)
    assert parse_proposal("aes256gcm16-esn", ESP).of_type(ESN) == (Transform(ESN, EsnId.ESN),)
    both = parse_proposal("aes128-sha256-esn-noesn", ESP)
    assert both.of_type(ESN) == (Transform(ESN, EsnId.ESN), NO_ESN)
    assert both.of_type(PRF) == ()
    # AEAD drops integrity in ESP too
    assert parse_proposal("aes128gcm16-sha256", ESP).of_type(INTEG) == ()


def test_ah() -> None:
    assert parse_proposal("sha256", AH).transforms == (
        Transform(INTEG, IntegId.HMAC_SHA2_256_128),
        NO_ESN,
    )


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("aes128gcm64", "aes128gcm8"),
        ("aes192gcm96", "aes192gcm12"),
        ("aes256gcm128", "aes256gcm16"),
        ("aes256gcm", "aes256gcm16"),
        ("curve25519", "x25519"),
        ("curve448", "x448"),
        ("aes", "aes128"),
        ("sha2_256", "sha256"),
        ("sha", "sha1"),
    ],
)
def test_aliases(alias: str, canonical: str) -> None:
    assert KEYWORDS[alias] == KEYWORDS[canonical]


@pytest.mark.parametrize(
    ("text", "protocol", "token", "why"),
    [
        ("aes128-sha256-foo-x25519", IKE, "foo", "unknown"),
        ("aes128-md5-x25519", IKE, "md5", "not supported"),
        ("3des-sha256-modp2048", IKE, "3des", "not supported"),
        ("aes128-sha256-modp1024", IKE, "modp1024", "not supported"),
        ("aes128gcm16-aes256-prfsha256-x25519", IKE, "aes256", "cannot be combined"),
        ("aes256-aes128gcm16-sha256-x25519", IKE, "aes128gcm16", "cannot be combined"),
        ("aes128--sha256-x25519", IKE, "", "empty"),
        ("aes128-sha256-x25519-", IKE, "", "empty"),
        ("aes128-sha256-esn-x25519", IKE, "esn", "only valid in ESP/AH"),
        ("aes128-sha256-prfsha256", ESP, "prfsha256", "only valid in IKE"),
        ("aes128-sha256", AH, "aes128", "AH proposals cannot"),
        ("aes256gcm16-x25519", IKE, "aes256gcm16-x25519", "needs a PRF"),
        ("aes256-sha256", IKE, "aes256-sha256", "key exchange"),
        ("aes256", ESP, "aes256", "integrity"),
        ("sha256-x25519", IKE, "sha256-x25519", "encryption"),
        ("  ", ESP, "", "empty proposal"),
    ],
)
def test_errors_name_the_token(text: str, protocol: ProtocolId, token: str, why: str) -> None:
    with pytest.raises(ProposalSyntaxError, match=why) as exc:
        parse_proposal(text, protocol)
    assert exc.value.token == token
    if token:
        assert repr(token) in str(exc.value)


def test_parse_proposals_default_and_commas() -> None:
    got = parse_proposals(["aes128-sha256-x25519, default"], IKE)
    assert got[0] == parse_proposal("aes128-sha256-x25519", IKE)
    assert got[1:] == default_proposals(IKE)
    with pytest.raises(ProposalSyntaxError, match="no ESP proposals"):
        parse_proposals([], ESP)


def test_defaults_are_aead_and_x25519_first() -> None:
    for proto in (IKE, ESP):
        first = default_proposals(proto)[0]
        assert first.of_type(ENCR)[0].id in (EncrId.AES_GCM_16, EncrId.CHACHA20_POLY1305)
    assert default_proposals(IKE)[0].of_type(KE)[0] == Transform(KE, KeId.CURVE25519)
    assert default_proposals(AH)


@pytest.mark.parametrize(
    "text",
    [
        "aes256gcm16-prfsha384-x25519",
        "aes128-sha256-modp3072",
        "aes128-sha1-prfsha256-ecp256",
        "aes128-aes256-sha256-aesxcbc-x25519-ecp256",
        "chacha20poly1305-prfsha512-x448",
    ],
)
def test_format_round_trip_ike(text: str) -> None:
    p = parse_proposal(text, IKE)
    assert format_proposal(p) == text
    assert parse_proposal(format_proposal(p), IKE) == p


def test_format_esp() -> None:
    assert format_proposal(parse_proposal("aes256gcm128-x25519", ESP)) == "aes256gcm16-x25519"
    assert format_proposal(parse_proposal("aes128-sha256-esn", ESP)) == "aes128-sha256-esn"


# --- hypothesis -------------------------------------------------------------------------------

PROTOCOLS = st.sampled_from([IKE, ESP, AH])
KEYWORD = st.sampled_from(sorted(KEYWORDS))


TEXTS = st.one_of(
    st.text(),
    st.lists(st.one_of(KEYWORD, st.text(max_size=6)), max_size=8).map("-".join),
)


@settings(max_examples=500, deadline=None)
@given(TEXTS, PROTOCOLS)
def test_parser_only_raises_syntax_error_on_text(text: str, protocol: ProtocolId) -> None:
    with contextlib.suppress(ProposalSyntaxError):
        parse_proposal(text, protocol)
    with contextlib.suppress(ProposalSyntaxError):
        parse_proposals([text], protocol)


@settings(max_examples=400, deadline=None)
@given(st.lists(KEYWORD, min_size=1, max_size=8), PROTOCOLS)
def test_parse_format_round_trip(words: list[str], protocol: ProtocolId) -> None:
    try:
        p = parse_proposal("-".join(words), protocol)
    except ProposalSyntaxError:
        return
    assert parse_proposal(format_proposal(p), protocol) == p


# --- selection --------------------------------------------------------------------------------


def props(protocol: ProtocolId, *texts: str) -> list[Proposal]:
    return [parse_proposal(t, protocol) for t in texts]


def test_select_prefers_ours_and_keeps_peer_num_and_spi() -> None:
    ours = props(IKE, "aes256gcm16-prfsha384-prfsha256-x25519-ecp256")
    peer = Proposal(
        IKE,
        parse_proposal("aes128gcm16-aes256gcm16-prfsha256-prfsha384-ecp256-x25519", IKE).transforms,
        num=3,
        spi=b"\x01" * 8,
    )
    chosen = select_proposal(ours, [peer])
    assert chosen is not None
    assert chosen.transforms == (
        Transform(ENCR, EncrId.AES_GCM_16, 256),
        Transform(PRF, PrfId.HMAC_SHA2_384),
        Transform(KE, KeId.CURVE25519),
    )
    assert (chosen.num, chosen.spi) == (3, b"\x01" * 8)
    theirs_first = select_proposal(ours, [peer], prefer_ours=False)
    assert theirs_first is not None
    assert theirs_first.of_type(PRF) == (Transform(PRF, PrfId.HMAC_SHA2_256),)
    assert theirs_first.of_type(KE) == (Transform(KE, KeId.ECP256),)
    assert proposal_is_acceptable(ours, chosen)
    assert proposal_is_acceptable(ours, theirs_first)


def test_select_no_match() -> None:
    ours = props(IKE, "aes256gcm16-prfsha384-x25519")
    assert select_proposal(ours, props(IKE, "aes256gcm16-prfsha384-ecp256")) is None
    assert select_proposal(ours, props(IKE, "aes128gcm16-prfsha384-x25519")) is None
    assert select_proposal(ours, props(ESP, "aes256gcm16")) is None
    # AES key length is part of the match
    assert select_proposal(props(ESP, "aes128-sha256"), props(ESP, "aes256-sha256")) is None


def test_select_pfs_required_and_optional() -> None:
    pfs = props(ESP, "aes256gcm16-x25519")
    no_pfs = props(ESP, "aes256gcm16")
    assert select_proposal(pfs, no_pfs) is None
    assert select_proposal(no_pfs, pfs) is None
    # IKE_AUTH Child SA: KE transforms are ignored on both sides
    chosen = select_proposal(pfs, no_pfs, ignore_ke=True)
    assert chosen is not None and chosen.of_type(KE) == ()
    # peer offering KE NONE as an alternative matches our proposal without PFS
    optional = Proposal(
        ESP, (*pfs[0].transforms, Transform(KE, KeId.NONE)), num=1, spi=b"\xaa\xbb\xcc\xdd"
    )
    chosen = select_proposal(no_pfs, [optional])
    assert chosen is not None
    assert chosen.of_type(KE) == ()
    assert chosen.spi == b"\xaa\xbb\xcc\xdd"


def test_select_integ_none_alongside_aead() -> None:
    peer = Proposal(
        ESP,
        (Transform(ENCR, EncrId.AES_GCM_16, 128), Transform(INTEG, IntegId.NONE), NO_ESN),
    )
    chosen = select_proposal(props(ESP, "aes128gcm16"), [peer])
    assert chosen is not None
    assert chosen.transforms == (Transform(ENCR, EncrId.AES_GCM_16, 128), NO_ESN)


def test_acceptable_rejects_multiple_or_foreign_transforms() -> None:
    ours = props(IKE, "aes256gcm16-prfsha384-x25519-ecp256")
    two = parse_proposal("aes256gcm16-prfsha384-x25519-ecp256", IKE)
    assert not proposal_is_acceptable(ours, two)
    foreign = parse_proposal("aes256gcm16-prfsha256-x25519", IKE)
    assert not proposal_is_acceptable(ours, foreign)
    missing = Proposal(IKE, two.transforms[:2])
    assert not proposal_is_acceptable(ours, missing)
    good = parse_proposal("aes256gcm16-prfsha384-ecp256", IKE)
    assert proposal_is_acceptable(ours, good)
    assert not proposal_is_acceptable(props(ESP, "aes256gcm16"), good)


def test_format_names_transforms_we_lack() -> None:
    """Peer offers are logged with strongSwan-like names even when we cannot parse them back."""
    p = Proposal(
        IKE,
        (
            Transform(ENCR, EncrId.DES3),
            Transform(ENCR, EncrId.AES_CTR, 256),
            Transform(ENCR, 77),
            Transform(PRF, PrfId.HMAC_MD5),
            Transform(INTEG, IntegId.HMAC_MD5_96),
            Transform(KE, KeId.MODP1024),
        ),
    )
    assert format_proposal(p) == "3des-aes256ctr-encr77-md5-prfmd5-modp1024"
