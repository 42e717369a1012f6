"""IKE SA lifetimes: rekey, reauthentication (RFC 7296 §2.8.3) and the hard limit (over_time).

Reauthentication is make-before-break: a new IKE SA with a full IKE_SA_INIT/IKE_AUTH and new
Child SAs for the same children is set up next to the old one, and only once all of those
exchanges are done is the old IKE SA deleted (with its Child SAs). Traffic keeps flowing on
the old Child SAs meanwhile. If the new IKE SA fails, the old one lives on until its hard
lifetime, as in strongSwan: min(rekey, reauth time) + over_time after it was set up.

Set `reauth_time` on one peer only (or with enough `rand_time`): if both reauthenticate at
the same moment, each builds its own new IKE SA and both stay.
"""

from __future__ import annotations

from xfrmctl.ike import connect
from xfrmctl.ike.events import IkeSaReauthenticated
from xfrmctl.ike.exchanges import IkeState
from xfrmctl.ike.iana import ExchangeType
from xfrmctl.ike.payloads import Payload, TrafficSelector
from xfrmctl.ike.sa import Address, ChildState, IkeSa, Task
from xfrmctl.ike.spec import ConnectionSpec

REASON = "reauthenticated"
RETRY_AFTER = 60.0  # when the new IKE SA failed and the old one still has time left


def _addresses(sa: IkeSa, spec: ConnectionSpec) -> tuple[Address, Address]:
    """Where to start the new IKE SA: the peer's current address, on port 500 unless NATed."""
    if sa.nat:
        return sa.local, sa.remote  # the NAT mapping exists for the floated ports only
    port = spec.remote_port if sa.initiator else sa.remote[1]
    return (sa.local[0], sa.ep.config.ike_port), (sa.remote[0], port)


def start(old: IkeSa, now: float) -> None:
    """Build the successor of `old` with the same children; `old` stays up until it is done."""
    spec = old.spec
    if spec is None or old.state != IkeState.ESTABLISHED or old.reauth_by is not None:
        return
    wanted: list[tuple[str, tuple[TrafficSelector, ...] | None]] = []
    for child in old.children:
        if child.state not in (ChildState.INSTALLED, ChildState.REKEYING):
            continue
        configured = (
            tuple(t.to_selector() for t in child.spec.local_ts),
            tuple(t.to_selector() for t in child.spec.remote_ts),
        )
        narrowed = (child.local_ts, child.remote_ts)
        hint: tuple[TrafficSelector, ...] | None = None
        if narrowed != configured and child.local_ts and child.remote_ts:
            # Proposed first again, as the packet's selectors were (a trap child).
            hint = (child.local_ts[0], child.remote_ts[0])
        if (child.spec.name, hint) not in wanted:
            wanted.append((child.spec.name, hint))
    current = old.ep.specs.get(spec.name)
    if current is None:
        return  # the connection was removed from the configuration: let this SA run out
    wanted = [(n, h) for n, h in wanted if any(c.name == n for c in current.children)]
    local, remote = _addresses(old, spec)
    new = connect.initiate(old.ep, current, local, remote, wanted, now)
    new.tasks.append(FinishTask(old))  # after IKE_AUTH and the CREATE_CHILD_SAs it queues
    new.reauth_of = old
    new.on_abandoned = abandoned
    old.reauth_by = new


def abandoned(new: IkeSa, now: float) -> None:
    """The new IKE SA died before taking over: the old one tries again later."""
    old = new.reauth_of
    new.reauth_of = None
    if old is None or old.reauth_by is not new:
        return
    old.reauth_by = None
    if old.state == IkeState.ESTABLISHED and (
        old.hard_at is None or now + RETRY_AFTER < old.hard_at
    ):
        old.reauth_at = now + RETRY_AFTER
        old.ep.touch(old)  # an earlier deadline, on an SA the caller may not have touched


class FinishTask(Task):
    """Queued on the new IKE SA behind its CREATE_CHILD_SAs: when reached, all are done."""

    exchange = ExchangeType.INFORMATIONAL

    def __init__(self, old: IkeSa) -> None:
        self.old = old

    def build(self, sa: IkeSa, now: float) -> list[Payload] | None:
        if sa.state != IkeState.ESTABLISHED:
            return None
        old = self.old
        while old.replaced_by is not None:  # the old IKE SA may have been rekeyed meanwhile
            old = old.replaced_by
        sa.reauth_of = None
        if old.state == IkeState.ESTABLISHED:
            sa.emit(IkeSaReauthenticated(sa.conn_name, old.id, sa.id))
            old.delete(now, REASON, notify_peer=True)
        return None  # no message of its own
