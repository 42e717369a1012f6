"""INITIAL_CONTACT (RFC 7296 §2.4): "this is the only IKE SA between our two identities".

We send it only when we hold no other IKE SA with the same peer, so a second IKE SA (a
reauthentication, or a second `initiate`) does not make the peer drop the first one. On
receipt the engine, which owns every IKE SA, deletes the older ones itself: their Child SAs
go with them through the usual ChildSaDeleted/IkeSaDeleted events, so the host needs no
separate notice.
"""

from __future__ import annotations

from xfrmctl.ike.exchanges import IkeState
from xfrmctl.ike.sa import IkeSa
from xfrmctl.ike.spec import ConnectionSpec

_LIVE = (
    IkeState.INIT_SENT,
    IkeState.AUTH_SENT,
    IkeState.ESTABLISHED,
    IkeState.REKEYED,
    IkeState.DELETING,
)
REASON = "peer sent INITIAL_CONTACT"


def _same_peer(sa: IkeSa, other: IkeSa, spec: ConnectionSpec) -> bool:
    if other.spec is None or other.spec.local_id != spec.local_id:
        return False
    if spec.remote_id is None:
        # Peer identity not configured: until it authenticates, its address stands for it.
        return other.remote[0] == sa.remote[0]
    if other.peer_id:
        return other.peer_id == str(spec.remote_id)
    return other.spec.remote_id == spec.remote_id


def should_send(sa: IkeSa, spec: ConnectionSpec) -> bool:
    """Initiator: True when no other IKE SA of ours talks to the same peer identity."""
    return not any(
        other is not sa and other.state in _LIVE and _same_peer(sa, other, spec)
        for other in sa.ep.sas.values()
    )


def on_received(sa: IkeSa, now: float) -> None:
    """Responder, after AUTH checked out: the peer restarted, its older IKE SAs are stale."""
    spec = sa.spec
    if spec is None:
        return
    for other in list(sa.ep.sas.values()):
        if (
            other is not sa
            and other.state in (IkeState.ESTABLISHED, IkeState.REKEYED, IkeState.DELETING)
            and other.peer_id == sa.peer_id
            and other.spec is not None
            and other.spec.local_id == spec.local_id
        ):
            other.delete(now, REASON, notify_peer=False)
