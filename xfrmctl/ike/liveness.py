"""Dead peer detection (RFC 7296 §2.4): empty INFORMATIONAL requests when the peer is quiet."""

from __future__ import annotations

from xfrmctl.ike.events import PeerDead
from xfrmctl.ike.iana import ExchangeType
from xfrmctl.ike.payloads import Payload
from xfrmctl.ike.sa import IkeSa, Task


class DpdTask(Task):
    exchange = ExchangeType.INFORMATIONAL

    def __init__(self, give_up_after: float | None = None) -> None:
        self.give_up_after = give_up_after  # dpd_timeout, when shorter than retransmitting

    def build(self, sa: IkeSa, now: float) -> list[Payload] | None:
        return []


def on_dpd_timer(sa: IkeSa, now: float) -> None:
    """Probe only when nothing came from the peer for dpd_delay and nothing is in flight."""
    delay = sa.spec.dpd_delay if sa.spec else 0.0
    if delay <= 0:
        sa.dpd_at = None
        return
    quiet_since = sa.last_inbound
    if now - quiet_since >= delay and sa.outstanding is None and not sa.tasks:
        timeout = sa.spec.dpd_timeout if sa.spec and sa.spec.dpd_timeout > 0 else None
        sa.queue(DpdTask(timeout), now)
        sa.dpd_at = now + delay
    else:
        sa.dpd_at = max(quiet_since + delay, now + 1.0)


def peer_dead(sa: IkeSa, now: float, reason: str) -> None:
    sa.emit(
        PeerDead(sa.conn_name, sa.id, sa.remote, reason, tuple(c.spec.name for c in sa.children))
    )
    sa.delete(now, f"peer dead: {reason}", notify_peer=False)
