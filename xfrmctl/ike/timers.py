"""An IKE SA's timers as one table: when each falls due, and what happens then.

Retransmission (RFC 7296 §2.1), the half-open limit, TEMPORARY_FAILURE back-off, the hard
lifetime (over_time), reauthentication (§2.8.3), IKE and Child SA rekeying (§2.8), dead peer
detection (§2.4), an IKE_AUTH parked for revocation status, NAT-T keepalives (RFC 3948 §4)
and Child SA hard expiry. The endpoint asks
`next_deadline` for its own timer and calls `fire` when it is reached; the rows run in table
order and stop as soon as one drops the IKE SA, as the rows below it no longer apply.

`TimerIndex` keeps every IKE SA's next deadline in a heap, so that the endpoint's next timer
costs O(log N) instead of asking all N SAs after each event. Its contract: the endpoint calls
`update` for every SA whose deadline may have moved EARLIER (or appeared); a deadline that
moved later, or vanished, is found lazily when its stale entry reaches the top.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from xfrmctl.ike import child_rekey, ike_rekey, liveness, reauth, revocation_wait
from xfrmctl.ike.exchanges import IkeState
from xfrmctl.ike.sa import IkeSa


@dataclass(frozen=True)
class Timer:
    name: str
    due: Callable[[IkeSa], float | None]
    fire: Callable[[IkeSa, float], None]
    established_only: bool = False  # lifetimes run only while the IKE SA is up


def _retransmit_due(sa: IkeSa) -> float | None:
    if sa.outstanding is None:
        return None
    give_up = sa.give_up_at()
    return sa.outstanding.next_at if give_up is None else min(sa.outstanding.next_at, give_up)


def _retransmit(sa: IkeSa, now: float) -> None:
    o = sa.outstanding
    if o is not None and not sa.retransmit(now) and sa.state != IkeState.DEAD:
        liveness.peer_dead(sa, now, f"no response to {o.exchange.name} request")


def _expire(sa: IkeSa, now: float) -> None:
    sa.delete(now, "redundant IKE SA left by a rekey collision", notify_peer=False)


def _half_open_due(sa: IkeSa) -> float | None:
    if sa.state != IkeState.INIT_RESPONDED:
        return None
    return sa.created + sa.ep.config.half_open_timeout


def _half_open_expired(sa: IkeSa, now: float) -> None:
    sa.delete(now, "half-open IKE SA timed out", notify_peer=False)


def _retry(sa: IkeSa, now: float) -> None:
    sa.retry_at = None
    sa.kick(now)


def _hard_limit(sa: IkeSa, now: float) -> None:
    sa.hard_at = None
    # A hard limit: if an exchange is stuck in flight, do not wait behind it to say so.
    quiet = sa.outstanding is not None
    sa.delete(now, "IKE SA lifetime expired (over_time)", notify_peer=not quiet)


def _reauthenticate(sa: IkeSa, now: float) -> None:
    sa.reauth_at = None
    reauth.start(sa, now)


def _rekey(sa: IkeSa, now: float) -> None:
    sa.rekey_at = None
    ike_rekey.start(sa, now)


def _keepalive(sa: IkeSa, now: float) -> None:
    sa.keepalive_sent = now
    sa.ep.send_keepalive(sa.local, sa.remote)


def _children_due(sa: IkeSa) -> float | None:
    times = [t for c in sa.children for t in (c.rekey_at, c.expire_at) if t is not None]
    return min(times) if times else None


def _children(sa: IkeSa, now: float) -> None:
    for c in list(sa.children):
        if now >= c.expire_at:
            sa.ep.remove_child(sa, c, now, "hard lifetime expired", notify_peer=True)
        elif c.rekey_at is not None and now >= c.rekey_at:
            c.rekey_at = None
            child_rekey.start(sa, c, now)


TIMERS: tuple[Timer, ...] = (
    Timer("expire", lambda sa: sa.expire_at, _expire),
    Timer("retransmit", _retransmit_due, _retransmit),
    Timer("half-open", _half_open_due, _half_open_expired),
    Timer("retry", lambda sa: sa.retry_at, _retry),
    Timer("revocation", revocation_wait.deadline, revocation_wait.timed_out),
    Timer("hard", lambda sa: sa.hard_at, _hard_limit, established_only=True),
    Timer("reauth", lambda sa: sa.reauth_at, _reauthenticate, established_only=True),
    Timer("rekey", lambda sa: sa.rekey_at, _rekey, established_only=True),
    Timer("dpd", lambda sa: sa.dpd_at, liveness.on_dpd_timer, established_only=True),
    Timer("keepalive", IkeSa.keepalive_due, _keepalive, established_only=True),
    Timer("children", _children_due, _children, established_only=True),
)


def _applies(timer: Timer, sa: IkeSa) -> bool:
    return not timer.established_only or sa.state == IkeState.ESTABLISHED


# The rows that run before the IKE SA is up: asked after every event, so chosen once.
_ALWAYS = tuple(t for t in TIMERS if not t.established_only)


def next_deadline(sa: IkeSa) -> float | None:
    best: float | None = None
    for timer in TIMERS if sa.state == IkeState.ESTABLISHED else _ALWAYS:
        t = timer.due(sa)
        if t is not None and (best is None or t < best):
            best = t
    return best


def fire(sa: IkeSa, now: float) -> None:
    """Run every row that is due, in table order, until one drops the IKE SA."""
    for timer in TIMERS:
        if sa.state == IkeState.DEAD:
            return
        if not _applies(timer, sa):
            continue
        due = timer.due(sa)
        if due is not None and now >= due:
            timer.fire(sa, now)


class TimerIndex:
    """Next deadline of each IKE SA in a heap of (deadline, seq, sa), lazily invalidated:
    an entry counts only while it equals the deadline last recorded for its SA."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, IkeSa]] = []
        self._due: dict[int, float] = {}  # by IkeSa.id: the deadline recorded last
        self._seq = itertools.count()  # ties never compare two IkeSa objects

    def __len__(self) -> int:
        return len(self._due)

    def update(self, sa: IkeSa) -> None:
        """Record `sa`'s deadline as it is now (dead SAs have none)."""
        deadline = _live_deadline(sa)
        if deadline is None:
            self._due.pop(sa.id, None)
        elif self._due.get(sa.id) != deadline:
            self._due[sa.id] = deadline
            heapq.heappush(self._heap, (deadline, next(self._seq), sa))
            if len(self._heap) > 2 * len(self._due) + 64:
                self._compact()

    def remove(self, sa: IkeSa) -> None:
        self._due.pop(sa.id, None)

    def rebuild(self, sas: Iterable[IkeSa]) -> None:
        """Every SA again: after changes the endpoint cannot attribute to a few SAs."""
        self._heap, self._due = [], {}
        for sa in sas:
            self.update(sa)

    def earliest(self) -> float | None:
        """The first recorded deadline, checked against its SA (O(log N) amortised)."""
        while self._heap:
            deadline, _, sa = self._heap[0]
            if self._due.get(sa.id) != deadline:
                heapq.heappop(self._heap)  # superseded or removed
            elif _live_deadline(sa) == deadline:
                return deadline
            else:  # moved later or vanished since recorded: file it where it is now
                heapq.heappop(self._heap)
                del self._due[sa.id]
                self.update(sa)
        return None

    def pop_due(self, now: float) -> list[IkeSa]:
        """The SAs whose recorded deadline has come, in deadline order, taken out of the
        index (the caller fires them, then calls `update` for each)."""
        out: list[IkeSa] = []
        while (first := self.earliest()) is not None and first <= now:
            sa = heapq.heappop(self._heap)[2]
            del self._due[sa.id]
            out.append(sa)
        return out

    def recorded(self, sa: IkeSa) -> float | None:
        return self._due.get(sa.id)

    def _compact(self) -> None:
        self._heap = [e for e in self._heap if self._due.get(e[2].id) == e[0]]
        heapq.heapify(self._heap)


def _live_deadline(sa: IkeSa) -> float | None:
    return None if sa.state == IkeState.DEAD else next_deadline(sa)
