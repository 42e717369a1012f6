"""Setting up an IKE SA as initiator: IKE_SA_INIT, IKE_AUTH with the first Child SA, the rest.

RFC 7296 §1.2: both exchanges are queued at once, IKE_AUTH behind IKE_SA_INIT (which requeues
itself ahead of it after COOKIE or INVALID_KE_PAYLOAD); IKE_AUTH carries the first wanted
child and queues CREATE_CHILD_SA for the others when it succeeds. Used by the endpoint's
`initiate` and by reauthentication, which builds the successor of an IKE SA the same way.
"""

from __future__ import annotations

from xfrmctl.ike.ike_auth import AuthTask
from xfrmctl.ike.ike_init import InitTask
from xfrmctl.ike.payloads import TrafficSelector
from xfrmctl.ike.sa import Address, Host, IkeSa
from xfrmctl.ike.spec import ConnectionSpec

Wanted = list[tuple[str, tuple[TrafficSelector, ...] | None]]  # child name, packet's selectors


def initiate(
    ep: Host, spec: ConnectionSpec, local: Address, remote: Address, children: Wanted, now: float
) -> IkeSa:
    sa = IkeSa(ep, spec, True, ep.new_spi(), bytes(8), local, remote, now)
    sa.pending_children = list(children)
    ep.register(sa)
    sa.tasks.extend((InitTask(spec), AuthTask(spec)))
    sa.kick(now)
    return sa
