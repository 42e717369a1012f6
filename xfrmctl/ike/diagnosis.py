"""Why a negotiation failed and what to change: a failure event in, a `Diagnosis` out.

Contract: pure (no clock, no I/O); the input is a `NegotiationFailed` or `AuthenticationFailed`
event, whose offers hold only what the engine saw. The output lays both sides side by side,
marks the rows that disagree, says what the protocol hid (RFC 7296 §2.7: a refused initiator
learns nothing of the responder's proposals; §2.9 the same for traffic selectors; §2.21.2 an
AUTHENTICATION_FAILED notify gives no reason) and suggests configuration changes in
strongSwan's proposal syntax with xfrmctl's key names. Key material never reaches it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from xfrmctl.ike import diagnosis_auth
from xfrmctl.ike.diagnosis_text import (
    Diagnosis,
    Row,
    identity_rows,
    nat_row,
    no_peer_view,
    ts_text,
)
from xfrmctl.ike.events import AuthenticationFailed, NegotiationFailed
from xfrmctl.ike.iana import ProtocolId, TransformType
from xfrmctl.ike.proposals import ProposalSyntaxError, format_proposal, parse_proposal
from xfrmctl.ike.transforms import Proposal, Transform
from xfrmctl.ike.ts import narrow

__all__ = ["Diagnosis", "Row", "diagnose"]

_TYPE_WORDS = {
    TransformType.ENCR: "encryption",
    TransformType.INTEG: "integrity",
    TransformType.PRF: "PRF",
    TransformType.KE: "key exchange",
    TransformType.ESN: "ESN",
}
DEFAULTS_NOTE = (
    "xfrmctl's default proposals (leave the key out) cover AES-GCM/AES-CBC with SHA-2 and "
    "x25519, ecp256, ecp384, x448, modp3072, modp4096"
)


def diagnose(event: NegotiationFailed | AuthenticationFailed) -> Diagnosis:
    """The report for one failure event."""
    if isinstance(event, AuthenticationFailed):
        return diagnosis_auth.diagnose_auth(event)
    if event.reason in ("NO_PROPOSAL_CHOSEN", "INVALID_KE_PAYLOAD"):
        return _proposals(event)
    if event.reason == "TS_UNACCEPTABLE":
        return _selectors(event)
    return _other(event)


@dataclass
class _Draft:
    """A diagnosis being built: the finding, rows, suggestions."""

    event: NegotiationFailed
    summary: str = ""
    rows: list[Row] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)

    def done(self) -> Diagnosis:
        e = self.event
        ours, theirs = e.ours, e.theirs
        rows = [*self.rows, *identity_rows(ours, theirs), nat_row(ours, theirs)]
        if e.child is not None and (ours.ike_proposal or theirs.ike_proposal):
            rows.insert(len(self.rows), Row("IKE SA", ours.ike_proposal, "(agreed)", False))
        return Diagnosis(
            conn=e.conn,
            child=e.child,
            code=e.reason,
            reason=e.reason,
            role=_role(e.initiator),
            summary=self.summary,
            rows=tuple(r for r in rows if r.ours or r.theirs),
            hidden=tuple(self.hidden),
            suggestions=tuple(self.suggestions),
        )


def _role(initiator: bool | None) -> str:
    return "" if initiator is None else ("initiator" if initiator else "responder")


def _what(e: NegotiationFailed) -> tuple[str, str, ProtocolId]:
    """(name of the proposals, their configuration key, protocol) for this failure."""
    if e.child is None:
        return "IKE proposals", f"connections.{e.conn}.proposals", ProtocolId.IKE
    protocol = next((p.protocol for p in e.ours.proposals), ProtocolId.ESP)
    word = "ah" if protocol == ProtocolId.AH else "esp"
    key = f"connections.{e.conn}.children.{e.child}.{word}_proposals"
    return f"{word.upper()} proposals", key, protocol


def _by_type(proposals: Sequence[Proposal]) -> dict[TransformType, list[Transform]]:
    out: dict[TransformType, list[Transform]] = {}
    for p in proposals:
        for t in p.transforms:
            if t not in out.setdefault(t.type, []):
                out[t.type].append(t)
    return out


def _keyword(t: Transform) -> str:
    if t.type == TransformType.ESN:  # format_proposal leaves the default noesn out
        return "esn" if t.id else "noesn"
    return format_proposal(Proposal(ProtocolId.IKE, (t,)))


def _keywords(transforms: Sequence[Transform]) -> str:
    return ", ".join(_keyword(t) for t in transforms) or "none"


def _differences(
    ours: Sequence[Proposal], theirs: Sequence[Proposal], ignore_ke: bool
) -> list[str]:
    """Per transform type with nothing in common: what each side offers."""
    a, b = _by_type(ours), _by_type(theirs)
    out = []
    for ttype, word in _TYPE_WORDS.items():
        if ignore_ke and ttype == TransformType.KE:
            continue
        mine, peer = a.get(ttype, []), b.get(ttype, [])
        if (mine or peer) and not set(mine) & set(peer):
            if not peer and ttype in (TransformType.KE, TransformType.ESN):
                continue
            out.append(f"{word}: we offer {_keywords(mine)}, the peer {_keywords(peer)}")
    return out


def usable(text: str, protocol: ProtocolId) -> bool:
    """Whether xfrmctl's configuration accepts this proposal as written."""
    try:
        parse_proposal(text, protocol)
    except (ProposalSyntaxError, ValueError):
        return False
    return True


def _proposals(e: NegotiationFailed) -> Diagnosis:
    what, key, protocol = _what(e)
    d = _Draft(e)
    theirs = e.theirs.proposal_text
    hidden = "proposals" in e.theirs.hidden
    d.rows.append(
        Row(what, "\n".join(e.ours.proposal_text), "\n".join(theirs) or no_peer_view(hidden), True)
    )
    if e.reason == "INVALID_KE_PAYLOAD":
        _invalid_ke(d, key)
    elif theirs:
        _peer_offer_seen(d, what, key, protocol)
    elif e.child is not None:
        _child_refused(d, what, key)
    else:
        d.summary = f"the peer accepted none of our {what}"
        d.hidden.append(
            "IKEv2 does not tell an initiator what the responder would accept (RFC 7296 §2.7): "
            "the peer's IKE proposals are not known here"
        )
        d.suggestions += [
            f"add the peer's IKE proposal to `{key}` (strongSwan: `swanctl --list-conns` on "
            "the peer shows it; an xfrmctl peer's `xfrmctl explain` shows our offer)",
            DEFAULTS_NOTE,
        ]
    return d.done()


def _peer_offer_seen(d: _Draft, what: str, key: str, protocol: ProtocolId) -> None:
    e = d.event
    diffs = _differences(e.ours.proposals, e.theirs.proposals, ignore_ke=e.child is not None)
    theirs = e.theirs.proposal_text
    only = "only " if len(theirs) == 1 else ""
    d.summary = f"no proposal in common: the peer offers {only}{', '.join(theirs)}"
    if diffs:
        d.summary += " (" + "; ".join(diffs) + ")"
    fit = next((t for t in theirs if usable(t, protocol)), None)
    if fit is not None:
        d.suggestions.append(f"add `{fit}` to `{key}`")
    else:
        ours = e.ours.proposal_text[0] if e.ours.proposal_text else ""
        d.suggestions.append(
            f"xfrmctl supports none of the peer's {what}: change the peer's to include `{ours}`"
        )


def _invalid_ke(d: _Draft, key: str) -> None:
    e = d.event
    group = e.theirs.ke_group
    d.summary = f"the peer wants key exchange {group}, which none of our {key.split('.')[-1]} offer"
    d.rows.append(Row("key exchange", _keywords(_groups(e.ours.proposals)), group, True))
    fix = _with_group(e.ours.proposals, group)
    if fix:
        d.suggestions.append(f"add `{fix}` to `{key}`")
    else:
        d.suggestions.append(f"xfrmctl does not support {group}: change the peer's proposals")


def _groups(proposals: Sequence[Proposal]) -> list[Transform]:
    return _by_type(proposals).get(TransformType.KE, [])


def _with_group(ours: Sequence[Proposal], group: str) -> str:
    """Our first proposal with the peer's key exchange instead of ours, if xfrmctl has it."""
    if not ours or not usable(f"aes128-sha256-{group}", ProtocolId.IKE):
        return ""
    first = ours[0]
    head = format_proposal(
        Proposal(first.protocol, tuple(t for t in first.transforms if t.type != TransformType.KE))
    )
    return f"{head}-{group}"


def _child_refused(d: _Draft, what: str, key: str) -> None:
    """Initiator, child refused: guess the ESP side from the IKE SA the peer did agree to."""
    e = d.event
    d.summary = f"the peer accepted none of our {what} for child {e.child}"
    d.hidden.append(
        "IKEv2 does not tell an initiator what the responder would accept (RFC 7296 §2.7): "
        f"the peer's {what} are not known here"
    )
    agreed = e.theirs.ike_proposal or e.ours.ike_proposal
    guess = _esp_like(agreed)
    if guess and guess not in e.ours.proposal_text:
        d.suggestions.append(
            f"the peer agreed to `{agreed}` for the IKE SA; it likely accepts the same "
            f"algorithms for the child: add `{guess}` to `{key}`"
        )
    d.suggestions.append(
        f"compare `{key}` with the peer's child proposals (strongSwan: `esp_proposals` of the "
        "child in swanctl.conf); if the peer wants PFS, add its group, e.g. "
        f"`{(guess or 'aes256gcm16')}-modp2048`"
    )


def _esp_like(ike_text: str) -> str:
    """The cipher and integrity of an IKE proposal, as an ESP proposal."""
    if not ike_text:
        return ""
    try:
        ike = parse_proposal(ike_text, ProtocolId.IKE)
    except (ProposalSyntaxError, ValueError):
        return ""
    keep = (TransformType.ENCR, TransformType.INTEG)
    text = format_proposal(
        Proposal(ProtocolId.ESP, tuple(t for t in ike.transforms if t.type in keep))
    )
    return text if usable(text, ProtocolId.ESP) else ""


def _selectors(e: NegotiationFailed) -> Diagnosis:
    d = _Draft(e)
    child = f"connections.{e.conn}.children.{e.child}"
    hidden = "traffic selectors" in e.theirs.hidden
    ours, theirs = e.ours, e.theirs
    local_bad = bool(theirs.local_ts) and not narrow(theirs.local_ts, ours.local_ts)
    remote_bad = bool(theirs.remote_ts) and not narrow(theirs.remote_ts, ours.remote_ts)
    d.rows += [
        Row(
            "local traffic",
            ts_text(ours.local_ts),
            ts_text(theirs.local_ts) or no_peer_view(hidden),
            local_bad or hidden,
        ),
        Row(
            "remote traffic",
            ts_text(ours.remote_ts),
            ts_text(theirs.remote_ts) or no_peer_view(hidden),
            remote_bad or hidden,
        ),
    ]
    if hidden:
        d.summary = f"the peer refused the traffic selectors of child {e.child}"
        d.hidden.append(
            "IKEv2 does not tell an initiator which traffic the responder would accept "
            "(RFC 7296 §2.9): the peer's traffic selectors are not known here"
        )
        d.suggestions.append(
            f"the peer's child must allow local_ts {ts_text(ours.remote_ts)} and remote_ts "
            f"{ts_text(ours.local_ts)} (the mirror of ours), or narrow `{child}.local_ts` / "
            f"`{child}.remote_ts` to what the peer has"
        )
        return d.done()
    d.summary = f"the peer's traffic selectors fit none of our children (we compared {e.child})"
    if local_bad:
        d.suggestions.append(f"set `{child}.local_ts: [{ts_text(theirs.local_ts)}]`")
    if remote_bad:
        d.suggestions.append(f"set `{child}.remote_ts: [{ts_text(theirs.remote_ts)}]`")
    if not (local_bad or remote_bad):
        d.summary = (
            f"the traffic selectors overlap but child {e.child} was refused: the modes "
            "probably differ (tunnel vs transport)"
        )
        d.suggestions.append(f"make `{child}.mode` the same as the peer's")
    return d.done()


def _other(e: NegotiationFailed) -> Diagnosis:
    d = _Draft(e)
    what = f"child {e.child}" if e.child else "the IKE SA"
    d.summary = f"{what} failed: {e.reason}"
    if e.ours.proposal_text:
        d.rows.append(
            Row(
                _what(e)[0],
                "\n".join(e.ours.proposal_text),
                "\n".join(e.theirs.proposal_text),
                False,
            )
        )
    return d.done()
