"""Child SA rekeying (RFC 7296 §1.3.3, §2.8) and its collisions (§2.8.1, §2.25.1).

Simultaneous rekeys of one Child SA both complete; the exchange holding the lowest of the four
nonces made a redundant SA, which its initiator deletes, and the other initiator deletes the
old SA. A rekey meeting a delete gets TEMPORARY_FAILURE or CHILD_SA_NOT_FOUND and gives up.
"""

from __future__ import annotations

from xfrmctl.ike import child_create
from xfrmctl.ike.childsa import spi_bytes
from xfrmctl.ike.errors import RemoteProtocolError
from xfrmctl.ike.iana import NotifyType
from xfrmctl.ike.payloads import NotifyPayload, Payload
from xfrmctl.ike.sa import ChildSa, ChildState, IkeSa


class ChildRekeyTask(child_create.CreateChildTask):
    def __init__(self, old: ChildSa) -> None:
        super().__init__(old.spec.name)
        self.old = old
        self.spec = old.spec
        self.collision: ChildSa | None = None  # the peer's new SA for the same old one

    def prefix(self, sa: IkeSa) -> list[Payload]:
        return [
            NotifyPayload(NotifyType.REKEY_SA, b"", self.old.protocol, spi_bytes(self.old.spi_in))
        ]

    def replaces(self) -> ChildSa | None:
        return self.old

    def outbound_now(self) -> bool:
        """Our rekey's answer is in: the peer holds the new inbound SA. Unless the peer
        rekeyed the same SA meanwhile: then ours may turn out redundant (§2.8.1)."""
        return self.collision is None

    def build(self, sa: IkeSa, now: float) -> list[Payload] | None:
        if self.old not in sa.lookup_children() or self.old.state not in (
            ChildState.INSTALLED,
            ChildState.REKEYING,
        ):
            return None
        self.old.state = ChildState.REKEYING
        self.acquired = None
        return super().build(sa, now)

    def retry_later(self, sa: IkeSa, now: float) -> bool:
        if self.old.replaced_by is not None or self.old not in sa.lookup_children():
            return False  # the peer's rekey (or delete) of the same SA went through
        return super().retry_later(sa, now)

    def done(self, sa: IkeSa, child: ChildSa | None, now: float) -> None:
        old = self.old
        if child is None:
            if old.state == ChildState.REKEYING and old.replaced_by is None:
                old.state = ChildState.INSTALLED
                old.rekey_at = now + sa.ep.config.temporary_failure_delay * 5
            return
        peer_new = self.collision
        if (
            peer_new is not None
            and peer_new in sa.lookup_children()
            and child.lowest_nonce
            and peer_new.lowest_nonce
            and child.lowest_nonce < peer_new.lowest_nonce
        ):
            # Our exchange holds the lowest nonce: our new SA is the redundant one.
            sa.ep.remove_child(sa, child, now, "redundant after rekey collision", True)
            old.state = ChildState.REKEYED
            old.replaced_by = peer_new
            return
        old.state = ChildState.REKEYED
        old.replaced_by = child
        if old in sa.lookup_children():
            sa.ep.remove_child(sa, old, now, "rekeyed", notify_peer=True)


def start(sa: IkeSa, child: ChildSa, now: float) -> None:
    if child.state != ChildState.INSTALLED:
        return
    child.state = ChildState.REKEYING
    sa.queue(ChildRekeyTask(child), now)


def handle_request(
    sa: IkeSa, payloads: list[Payload], rekey: NotifyPayload, now: float
) -> list[Payload]:
    """Responder: replace the Child SA named by REKEY_SA, minding our own rekey of it."""
    spi = int.from_bytes(rekey.spi, "big") if len(rekey.spi) == 4 else -1
    old = next((c for c in sa.children if c.spi_out == spi and c.protocol == rekey.protocol), None)
    if old is None:
        raise RemoteProtocolError(
            f"rekey of unknown Child SA {spi:#x}",
            NotifyType.CHILD_SA_NOT_FOUND,
        )
    if old.state in (ChildState.DELETING, ChildState.REKEYED):
        return [NotifyPayload(NotifyType.TEMPORARY_FAILURE)]
    response, new = child_create.respond_child(sa, payloads, now, wanted=old.spec, replaces=old)
    ours = sa.outstanding.task if sa.outstanding else None
    if old.state == ChildState.REKEYING and isinstance(ours, ChildRekeyTask) and ours.old is old:
        ours.collision = new
        return response
    if old.state == ChildState.REKEYING:
        # Our rekey is queued but not sent: the peer's wins, drop ours.
        sa.tasks = type(sa.tasks)(
            t for t in sa.tasks if not (isinstance(t, ChildRekeyTask) and t.old is old)
        )
    old.state = ChildState.REKEYED
    old.replaced_by = new
    old.rekey_at = None
    return response
