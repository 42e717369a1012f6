"""Reqids: one per child config and agreed selector set, reused only after a quarantine.

Contract. Linux ties a policy's template to the SAs it may use by reqid alone (RFC 4301 §4.4.1's
SPD-SAD linkage as XFRM implements it): two Child SAs live at once must never share one, or the
kernel may send one pair's traffic through the other's SA. `ReqidTable.get(key, now)` gives the
key's reqid, the same across rekeys, and a new one for a new key. A reqid no Child SA holds and
no configured trap keeps (`in_use`, asked of the engine) is released by a sweep, waits
`QUARANTINE` seconds (the daemon is still removing the kernel state that carries it), and is
handed out again only once every number up to `limit` has been used: so the table's memory
follows the live Child SAs, not every selector set a daemon ever agreed (a responder narrowing
road warriors' /32s), and a daemon running for months neither leaks nor wraps around onto a
reqid in use. When every reqid is in use or quarantined, `get` raises `ReqidsExhausted` and that
one Child SA fails.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable

from xfrmctl.ike.errors import LocalProtocolError
from xfrmctl.ike.payloads import TrafficSelector

SelectorSet = frozenset[TrafficSelector] | TrafficSelector
ReqidKey = tuple[str, str, SelectorSet, SelectorSet]
InUse = Callable[[], tuple[set[int], set[ReqidKey]]]  # reqids of live Child SAs, keys kept

LIMIT = 0xFFFF  # the daemon's ownership span of kernel reqids has 65,536 numbers
QUARANTINE = 120.0  # s; the kernel state of a released reqid is gone well before
SWEEP_AT_LEAST = 1024  # keys before the first sweep; then twice what the last one left


class ReqidsExhausted(LocalProtocolError):
    """Every reqid is held by a live Child SA or quarantined."""


def selector_set(selectors: Iterable[TrafficSelector]) -> SelectorSet:
    """An order-free key for a set of selectors: one selector, the usual case, as itself
    (a frozenset is 216 bytes, a 1-tuple 48) since the table keeps two per Child SA."""
    unique = frozenset(selectors)
    if len(unique) == 1:
        (only,) = unique
        return only
    return unique


def selectors_of(key: SelectorSet) -> frozenset[TrafficSelector]:
    """The selectors a `selector_set` key stands for."""
    return frozenset((key,)) if isinstance(key, TrafficSelector) else key


class ReqidTable:
    def __init__(self, in_use: InUse, limit: int = LIMIT, quarantine: float = QUARANTINE) -> None:
        self.in_use = in_use
        self.limit = limit
        self.quarantine = quarantine
        self._by_key: dict[ReqidKey, int] = {}
        self._last = 0  # the largest handed out or adopted
        self._released: collections.deque[tuple[float, int]] = collections.deque()
        self._sweep_at = SWEEP_AT_LEAST
        self._now = 0.0
        self._exhausted_sweep = -1.0  # a flood at exhaustion sweeps at most once a second
        self._reclaimed = False

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, key: ReqidKey, now: float | None = None) -> int:
        if now is not None:
            self._now = max(self._now, now)
        reqid = self._by_key.get(key)
        if reqid is None:
            if len(self._by_key) >= self._sweep_at:
                self.sweep()
            reqid = self._by_key[key] = self._allocate()
        return reqid

    def items(self) -> dict[ReqidKey, int]:
        return dict(self._by_key)

    def adopt(self, reqids: dict[ReqidKey, int]) -> None:
        """Keep a previous daemon's reqids, as its kernel policies and states carry them."""
        merged = {**self._by_key, **reqids}
        if len(set(merged.values())) != len(merged) or any(
            self._by_key[k] != v for k, v in reqids.items() if k in self._by_key
        ):
            raise ValueError("the snapshot's reqids collide with ones already handed out")
        self._by_key = merged
        self._last = max(self._last, *merged.values(), 0)
        taken = set(reqids.values())
        self._released = collections.deque(r for r in self._released if r[1] not in taken)

    def sweep(self) -> int:
        """Release the reqids nothing uses any more; how many."""
        live, kept = self.in_use()
        gone = [k for k, r in self._by_key.items() if r not in live and k not in kept]
        for key in gone:
            self._released.append((self._now, self._by_key.pop(key)))
        self._sweep_at = max(SWEEP_AT_LEAST, 2 * len(self._by_key))
        return len(gone)

    def _allocate(self) -> int:
        if self._last < self.limit:
            self._last += 1
            return self._last
        if self._now >= self._exhausted_sweep:
            self._exhausted_sweep = self._now + 1.0
            self.sweep()
        if not self._reclaimed:
            self._reclaim()
        if self._released and self._released[0][0] + self.quarantine <= self._now:
            return self._released.popleft()[1]
        raise ReqidsExhausted(
            f"no reqid free: {len(self._by_key)} of {self.limit} in use, "
            f"{len(self._released)} released less than {self.quarantine:g} s ago"
        )

    def _reclaim(self) -> None:
        """Numbers neither held nor released (a previous daemon's, lost with its table):
        quarantined from now, as that daemon's kernel state may still carry them."""
        self._reclaimed = True  # from here on every number is held or released
        known = set(self._by_key.values()) | {r for _, r in self._released}
        self._released.extend((self._now, r) for r in range(1, self.limit + 1) if r not in known)
