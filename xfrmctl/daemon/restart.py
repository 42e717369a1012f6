"""Back-off for `dpd_action: restart`, so a peer that stays dead is not hammered.

Without it an unanswered IKE_SA_INIT ends in PeerDead, which restarts at once, forever. Each
further attempt waits twice as long as the one before (1 s, 2 s, 4 s ... up to `cap`); an
established IKE SA resets the connection's count.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

FIRST_DELAY = 1.0
MAX_DELAY = 60.0


@dataclass
class RestartBackoff:
    first: float = FIRST_DELAY
    cap: float = MAX_DELAY
    attempts: dict[str, int] = field(default_factory=dict)
    _pending: dict[str, asyncio.TimerHandle] = field(default_factory=dict)

    def delay(self, conn: str) -> float:
        """The wait before the next attempt for `conn` (without counting it)."""
        n = self.attempts.get(conn, 0)
        return min(self.first * 2.0 ** min(n, 64), self.cap)

    def schedule(
        self, conn: str, loop: asyncio.AbstractEventLoop, restart: Callable[[], None]
    ) -> tuple[float, int] | None:
        """Arm one restart of `conn`; returns (delay, attempt), or None if one is armed."""
        if conn in self._pending:
            return None
        delay = self.delay(conn)
        attempt = self.attempts.get(conn, 0) + 1
        self.attempts[conn] = attempt

        def fire() -> None:
            self._pending.pop(conn, None)
            restart()

        self._pending[conn] = loop.call_later(delay, fire)
        return delay, attempt

    def succeeded(self, conn: str) -> None:
        self.attempts.pop(conn, None)

    def cancel_all(self) -> None:
        for handle in self._pending.values():
            handle.cancel()
        self._pending.clear()
