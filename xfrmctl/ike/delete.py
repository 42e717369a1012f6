"""INFORMATIONAL exchanges (RFC 7296 §1.4): Child SA deletes, closing notifies, and answers.

Our own delete of an IKE SA is the IKE SA's (`sa.IkeDeleteTask`).

Deleting a Child SA both ways at once: each side answers the other's request without the
SA it is already deleting, so both end up removing it exactly once.
"""

from __future__ import annotations

from xfrmctl.ike import offers
from xfrmctl.ike.childsa import spi_bytes
from xfrmctl.ike.events import DELETED_BY_PEER, AuthenticationFailed
from xfrmctl.ike.iana import ExchangeType, NotifyType, ProtocolId, name_of
from xfrmctl.ike.message import Message
from xfrmctl.ike.payloads import DeletePayload, NotifyPayload, Payload
from xfrmctl.ike.sa import ChildSa, ChildState, IkeSa, Task


class DeleteChildTask(Task):
    exchange = ExchangeType.INFORMATIONAL
    follows_rekey = True

    def __init__(self, child: ChildSa, reason: str) -> None:
        self.child = child
        self.reason = reason

    def build(self, sa: IkeSa, now: float) -> list[Payload] | None:
        if self.child not in sa.lookup_children():
            return None
        return [DeletePayload(self.child.protocol, (spi_bytes(self.child.spi_in),), 4)]

    def on_response(self, sa: IkeSa, payloads: list[Payload], now: float) -> None:
        sa.ep.remove_child(sa, self.child, now, self.reason, notify_peer=False)

    def on_give_up(self, sa: IkeSa, now: float) -> None:
        sa.ep.remove_child(sa, self.child, now, self.reason, notify_peer=False)


class NotifyThenCloseTask(Task):
    """An INFORMATIONAL carrying an error notify, after which the IKE SA is dropped."""

    exchange = ExchangeType.INFORMATIONAL

    def __init__(self, notify: NotifyType, reason: str) -> None:
        self.notify = notify
        self.reason = reason

    def build(self, sa: IkeSa, now: float) -> list[Payload] | None:
        return [NotifyPayload(self.notify)]

    def on_response(self, sa: IkeSa, payloads: list[Payload], now: float) -> None:
        sa.delete(now, self.reason, notify_peer=False)

    def on_give_up(self, sa: IkeSa, now: float) -> None:
        sa.delete(now, self.reason, notify_peer=False)


def handle_informational(
    sa: IkeSa, msg: Message, payloads: list[Payload], now: float
) -> list[Payload]:
    """Deletes, liveness checks (empty requests) and status notifies."""
    response: list[Payload] = []
    for p in payloads:
        if isinstance(p, DeletePayload):
            if p.protocol == ProtocolId.IKE:
                sa.close_after_response = DELETED_BY_PEER
                return []
            ours: list[bytes] = []
            for raw in p.spis:
                spi = int.from_bytes(raw, "big")
                child = next(
                    (
                        c
                        for c in sa.lookup_children()
                        if c.spi_out == spi and c.protocol == p.protocol
                    ),
                    None,
                )
                if child is None:
                    continue
                if child.state != ChildState.DELETING:
                    ours.append(spi_bytes(child.spi_in))
                sa.ep.remove_child(sa, child, now, DELETED_BY_PEER, notify_peer=False)
            if ours:
                response.append(DeletePayload(p.protocol, tuple(ours), 4))
        elif isinstance(p, NotifyPayload) and p.notify_type == NotifyType.AUTHENTICATION_FAILED:
            # The initiator rejected our AUTH after we had answered IKE_AUTH (§2.21.2).
            sa.emit(
                AuthenticationFailed(
                    sa.conn_name,
                    sa.id,
                    sa.remote,
                    "peer rejected our authentication",
                    remote_id=sa.peer_id,
                    kind="peer_rejected",
                    initiator=sa.initiator,
                    ours=offers.our_ike(sa.spec, sa),
                    theirs=offers.peer_seen(sa),
                )
            )
            sa.close_after_response = "peer reported AUTHENTICATION_FAILED"
        elif isinstance(p, NotifyPayload) and p.notify_type < 16384:
            sa.violation(f"peer reported {name_of(NotifyType, p.notify_type)}")
    return response
