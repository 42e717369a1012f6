"""Facts for failure events: each side's offer as the engine saw it (events.Offer).

Contract: pure functions of a spec, an IKE SA and received payloads; nothing here decides
anything, it only records what `xfrmctl explain` later compares (see `diagnosis`). What the
protocol withholds is marked `hidden`: an initiator refused with NO_PROPOSAL_CHOSEN or
TS_UNACCEPTABLE never sees the responder's configuration (RFC 7296 §2.7, §2.9).
"""

from __future__ import annotations

from dataclasses import replace

from xfrmctl.ike.events import Offer
from xfrmctl.ike.iana import ProtocolId, TransformType
from xfrmctl.ike.payloads import TrafficSelector
from xfrmctl.ike.proposals import format_proposal
from xfrmctl.ike.sa import IkeSa
from xfrmctl.ike.spec import ChildSpec, ConnectionSpec, PeerAuth, PskAuth
from xfrmctl.ike.transforms import Proposal, Transform

TsTuple = tuple[TrafficSelector, ...]


def auth_word(auth: PeerAuth | None) -> str:
    """swanctl's name for an auth method: `psk` or `pubkey`."""
    if auth is None:
        return ""
    return "psk" if isinstance(auth, PskAuth) else "pubkey"


def _texts(proposals: tuple[Proposal, ...]) -> tuple[str, ...]:
    return tuple(format_proposal(p) for p in proposals)


def _nat(sa: IkeSa | None, ours: bool) -> bool | None:
    """Who is behind a NAT, once IKE_SA_INIT has told (its NAT-D notifies)."""
    if sa is None or sa.crypto is None:
        return None
    return sa.nat_local if ours else sa.nat_remote


def agreed_ike(sa: IkeSa | None) -> str:
    return format_proposal(sa.proposal) if sa is not None and sa.proposal else ""


def our_ike(spec: ConnectionSpec | None, sa: IkeSa | None = None) -> Offer:
    """Our IKE proposals, identities and auth method, from the connection's configuration."""
    if spec is None:
        return Offer()
    return Offer(
        proposals=spec.ike_proposals,
        proposal_text=_texts(spec.ike_proposals),
        identity=str(spec.local_id),
        auth_method=auth_word(spec.auth),
        peer_id=str(spec.remote_id) if spec.remote_id is not None else "%any",
        peer_auth=auth_word(spec.peer_auth),
        nat=_nat(sa, True),
        ike_proposal=agreed_ike(sa),
    )


def our_child(spec: ConnectionSpec | None, child: ChildSpec | None, sa: IkeSa | None) -> Offer:
    """Our ESP/AH proposals and traffic selectors for one child, with the IKE facts."""
    base = our_ike(spec, sa)
    if child is None:
        return base
    return replace(
        base,
        proposals=child.proposals,
        proposal_text=_texts(child.proposals),
        local_ts=tuple(t.to_selector() for t in child.local_ts),
        remote_ts=tuple(t.to_selector() for t in child.remote_ts),
    )


def peer_seen(
    sa: IkeSa | None,
    proposals: tuple[Proposal, ...] = (),
    local_ts: TsTuple = (),
    remote_ts: TsTuple = (),
    hidden: tuple[str, ...] = (),
) -> Offer:
    """The peer's side: what it sent us, plus what its IKE SA already showed."""
    return Offer(
        proposals=proposals,
        proposal_text=_texts(proposals),
        local_ts=local_ts,
        remote_ts=remote_ts,
        identity=sa.peer_id if sa is not None else "",
        nat=_nat(sa, False),
        ike_proposal=agreed_ike(sa),
        hidden=hidden,
    )


def ke_keyword(group: int) -> str:
    """strongSwan's keyword for a key exchange method (`modp2048`, `x25519`)."""
    return format_proposal(Proposal(ProtocolId.IKE, (Transform(TransformType.KE, group),)))


def hidden_by(reason: str) -> tuple[str, ...]:
    """What an initiator cannot see after the responder refused with `reason`."""
    if reason in ("NO_PROPOSAL_CHOSEN", "INVALID_KE_PAYLOAD"):
        return ("proposals",)
    if reason == "TS_UNACCEPTABLE":
        return ("traffic selectors",)
    return ("reason",)
