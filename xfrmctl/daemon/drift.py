"""Kernel drift: notice when others remove or alter our SAs and policies, and repair it.

Contract: the daemon owns the XFRM objects it installed. A reconcile (one SA dump and one
policy dump, on the kernel queue so it never races our own installs) runs every
`settings.reconcile_interval` seconds (0: only on kernel notifications) and at once when a
notification says something of ours went (DELSA, DELPOLICY, FLUSHSA, FLUSHPOLICY not caused by
us, or lost notifications). Repairs:

- a missing or altered policy is put back as it should be (no keys needed);
- a missing SA cannot be put back: its outbound sequence number would restart below the peer's
  replay window (RFC 4303 §3.3.3), so the Child SA is rekeyed (CREATE_CHILD_SA, RFC 7296
  §1.3.3: new keys, new SPIs), or re-initiated when its IKE SA cannot rekey it;
- a foreign policy with the same selector at a better priority (shadowing ours) is logged and
  counted, never overridden: it may be an admin's deliberate bypass.

Loops are bounded: notification-driven reconciles are limited to `BURST` per window (the
interval, at least `MIN_WINDOW`), and a Child SA is rekeyed for drift at most once per window.

The periodic reconcile is a safety net behind the notifications, and its dumps grow with the
number of SAs: the interval is its shortest period, stretched so that it takes at most `BUDGET`
of the daemon's time (a reconcile that took 0.5 s waits 50 s), never beyond `LONGEST` (or the
interval, if longer). Notification-driven reconciles are not spaced out.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xfrmctl.daemon import heap
from xfrmctl.daemon.kernel_glue import KernelDrift, KernelEvent, MissingPair
from xfrmctl.ike.errors import LocalProtocolError

if TYPE_CHECKING:
    from xfrmctl.daemon.core import Daemon

log = logging.getLogger("xfrmctl.daemon")

DEFAULT_INTERVAL = 10.0
MIN_WINDOW = 5.0
BURST = 10  # notification-driven reconciles per window
BUDGET = 0.01  # share of the daemon's time the periodic reconcile may take
LONGEST = 600.0  # s: the periodic reconcile's longest stretched period
GIVE_UP = 120.0  # a repair rekey not done by then is forgotten (the engine reports why)
KINDS = ("sa_missing", "policy_missing", "policy_altered", "policy_shadowed")


@dataclass
class _Rekey:
    """A Child SA rekeyed because its SAs went missing, until its successor is installed."""

    conn: str
    child: str
    reqid: int
    at: float


class DriftWatch:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.interval = DEFAULT_INTERVAL
        self.found: collections.Counter[str] = collections.Counter()
        self.repaired: collections.Counter[str] = collections.Counter()
        self._known: set[Hashable] = set()  # drift already counted, still there
        self._rekeys: dict[int, _Rekey] = {}  # by the old spi_in
        self._expired: set[int] = set()  # spi_in whose SAs the kernel expired (not drift)
        self._queued = False
        self._burst: collections.deque[float] = collections.deque()
        self._deferred: asyncio.TimerHandle | None = None
        self.cost = 0.0  # s: the last reconcile's dumps and comparison, wall time

    @property
    def window(self) -> float:
        return max(self.interval, MIN_WINDOW)

    @property
    def period(self) -> float:
        """Seconds between periodic reconciles: the interval, stretched to the budget."""
        if self.interval <= 0:
            return 0.0
        return max(self.interval, min(self.cost / BUDGET, LONGEST))

    def counts(self) -> dict[str, dict[str, int]]:
        self.settle()
        return {
            "found": {k: self.found[k] for k in KINDS if self.found[k]},
            "repaired": {k: self.repaired[k] for k in KINDS if self.repaired[k]},
        }

    # ------------------------------------------------------------------------ triggers

    def on_kernel_event(self, kev: KernelEvent) -> bool:
        """True when the event was drift's (the daemon does nothing else with it)."""
        if kev.kind == "drift":
            log.debug("kernel notification: %s; reconciling", kev.detail)
            self.request()
            return True
        if kev.kind == "hard":
            spi_in = self.daemon.handover.spi_in_for(kev.spi)
            if spi_in is not None:
                self._expired.add(spi_in)
        # A trap child whose SAs were flushed raises ACQUIREs: its repair rekey is on its way.
        return kev.kind == "acquire" and any(r.reqid == kev.reqid for r in self._rekeys.values())

    def request(self) -> None:
        """A reconcile soon, at once unless notifications asked for too many this window."""
        if self.daemon._stopping or self._queued:
            return  # one reconcile waiting in the queue sees this change too
        now = self.daemon.now()
        while self._burst and self._burst[0] <= now - self.window:
            self._burst.popleft()
        if len(self._burst) >= BURST:
            if self._deferred is None:
                log.warning("kernel drift keeps coming; next repair in %.0f s", self.window)
                delay = self._burst[0] + self.window - now
                self._deferred = self.daemon.loop.call_later(delay, self._after_burst)
            return
        self._burst.append(now)
        self._enqueue()

    def _after_burst(self) -> None:
        self._deferred = None
        self.request()

    def _enqueue(self) -> None:
        if not self._queued:
            self._queued = True
            self.daemon.queue.put(self.reconcile)

    async def run(self) -> None:
        """The periodic reconcile (the task the daemon cancels on stop); wakes at least once a
        second, so a reload's new interval applies at once."""
        last = self.daemon.now()
        while True:
            await asyncio.sleep(min(self.interval, 1.0) if self.interval > 0 else 1.0)
            now = self.daemon.now()
            if 0 < self.period <= now - last and not self.daemon._stopping:
                last = now
                self._enqueue()

    # ------------------------------------------------------------------------ reconcile

    async def reconcile(self) -> None:
        """One dump each, then repairs; a kernel-queue job, so no install runs meanwhile."""
        self._queued = False  # a notification from now on needs another look
        start = self.daemon.now()
        drift = await self.daemon.kernel.reconcile()
        self.cost = self.daemon.now() - start
        heap.release_free_memory()  # the dumps' and the index's pages, freed by now
        log.debug("reconcile took %.3f s; next periodic one in %.0f s", self.cost, self.period)
        if drift is None or self.daemon._stopping:
            return
        self.settle()
        seen: set[Hashable] = set()
        await self._policies(drift, seen)
        for pair in drift.pairs:
            if pair.spi_in in self.daemon.installed and pair.spi_in not in self._expired:
                seen.add(("sa", pair.spi_in))
                self._sa_pair(pair)
        for text in drift.shadowed:
            seen.add(("shadow", text))
            if ("shadow", text) not in self._known:
                self.found["policy_shadowed"] += 1
                log.warning("DRIFT: %s: our traffic bypasses IPsec; not overridden", text)
        self._known = seen

    def _note(self, key: Hashable, kind: str) -> bool:
        """Count `key` once while it lasts; True when it is new."""
        if key in self._known:
            return False
        self.found[kind] += 1
        return True

    async def _policies(self, drift: KernelDrift, seen: set[Hashable]) -> None:
        todo = drift.missing_policies + drift.altered_policies
        if not todo:
            return
        kinds = ["policy_missing"] * len(drift.missing_policies)
        kinds += ["policy_altered"] * len(drift.altered_policies)
        for policy, kind in zip(todo, kinds, strict=True):
            if self._note(("policy", policy.id), kind):
                log.warning("DRIFT: %s: %s, reinstalling", kind.replace("_", " "), policy)
        try:
            await self.daemon.kernel.repair_policies(todo)
        except Exception as exc:
            log.error("DRIFT: reinstalling %d policies failed: %s", len(todo), exc)
            seen.update(("policy", p.id) for p in todo)
            return
        self.repaired.update(kinds)
        log.info("DRIFT repaired: %d policies reinstalled", len(todo))

    def _sa_pair(self, pair: MissingPair) -> None:
        entry = self.daemon.installed[pair.spi_in]
        conn, child = entry.ready.conn, entry.ready.child
        if self.daemon.installed.replaced(pair.spi_in):
            return  # already replaced (a rekey): the old pair goes with its DELETE
        if self._note(("sa", pair.spi_in), "sa_missing"):
            log.warning(
                "DRIFT: %s/%s (spi in %08x out %08x): missing %s; keys gone, rekeying",
                conn,
                child,
                entry.ready.spi_in,
                entry.ready.spi_out,
                ", ".join(pair.missing),
            )
        now = self.daemon.now()
        last = self._rekeys.get(pair.spi_in)
        if last is not None and now - last.at < self.window:
            return
        self._rekeys[pair.spi_in] = _Rekey(conn, child, pair.reqid, now)
        try:
            self.daemon.call(self.daemon.engine.rekey_child, pair.spi_in)
        except LocalProtocolError as exc:
            log.warning("DRIFT: %s/%s cannot be rekeyed (%s); re-initiating", conn, child, exc)
            with contextlib.suppress(LocalProtocolError):
                self.daemon.call(self.daemon.engine.initiate_child, conn, child)

    def settle(self) -> None:
        """Count a drift rekey as repaired once a newer pair of its child is installed."""
        if not self._rekeys:
            return
        now = self.daemon.now()
        installed = self.daemon.installed
        for old, rekey in list(self._rekeys.items()):
            done = any(
                e.ready.child == rekey.child
                and e.installed_at >= rekey.at
                and e.ready.spi_in != old
                for e in installed.of_conn(rekey.conn)
            )
            if done:
                del self._rekeys[old]
                self.repaired["sa_missing"] += 1
                log.info("DRIFT repaired: %s/%s has new SAs", rekey.conn, rekey.child)
            elif now - rekey.at > GIVE_UP and old not in installed:
                del self._rekeys[old]
                log.warning("DRIFT: %s/%s was not repaired", rekey.conn, rekey.child)
        self._expired &= set(installed)
