"""`start_action: start` at scale: a window of IKE SAs set up at once, the rest in turn.

Contract: the IKE SAs the daemon initiates on its own for `start_action: start` (at start and
on `reload`) go through `StartQueue`. At most `window` of them are connecting (IKE_SA_INIT or
IKE_AUTH in flight, RFC 7296 §1.2) at any time; the others wait in the order they were asked
for and start as earlier ones are established or fail, or have gone unanswered for the
engine's first retransmission timeout (a peer that has not answered by then is down or
swamped, and must not hold the connections behind it through ~165 s of retransmissions). The
host tells the queue of each IKE SA established or deleted (`settled`): no scan of the window
per event, which cost O(window) engine lookups after every datagram. A queued
connection that has an IKE SA by the time its turn comes (an `xfrmctl up`, the peer's
initiation) is not started again; one removed by a reload meanwhile is dropped. `window` 0: no
limit, every start at once.

Why: a daemon starting thousands of connections would send every IKE_SA_INIT at once. The peer
answers them in turn, most after the 4 s retransmission timeout (RFC 7296 §2.1), so they are
sent again, which costs both ends, and each half-open SA holds its key exchange meanwhile
(issue 15: 1.4 retransmissions per setup at N=1000 in the lab). `xfrmctl up`, ACQUIREs and
rekeys are not queued: someone or something is waiting for each of them.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable

from xfrmctl.ike.engine import IkeEndpoint
from xfrmctl.ike.errors import LocalProtocolError
from xfrmctl.ike.exchanges import IkeState

log = logging.getLogger("xfrmctl.daemon")

DEFAULT_WINDOW = 64
_CONNECTING = (IkeState.INIT_SENT, IkeState.AUTH_SENT)

Start = tuple[str, list[str]]  # connection, children to start with it
Initiate = Callable[[str, list[str]], int]  # starts one; returns the IKE SA id


class StartQueue:
    def __init__(self, engine: IkeEndpoint, initiate: Initiate) -> None:
        self.engine = engine
        self.initiate = initiate
        self.window = DEFAULT_WINDOW
        self._waiting: collections.deque[Start] = collections.deque()
        self._connecting: dict[int, float] = {}  # IKE SA id started from here: when

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def add(self, conn: str, children: list[str]) -> None:
        self._waiting.append((conn, children))

    def clear(self) -> None:
        self._waiting.clear()
        self._connecting.clear()

    def settled(self, ike_sa_id: int) -> None:
        """The IKE SA is established or gone (the engine's events): its place is free."""
        self._connecting.pop(ike_sa_id, None)

    def fill(self, now: float) -> None:
        """Start waiting connections while the window has room (after every engine event)."""
        if not self._waiting:
            return
        since = now - self.engine.config.retransmit_timeout
        while self._connecting:  # in start order: the oldest first
            oldest = next(iter(self._connecting))
            if self._connecting[oldest] > since:
                break
            del self._connecting[oldest]  # unanswered for a retransmission timeout
        while self._waiting and (not self.window or len(self._connecting) < self.window):
            conn, children = self._waiting.popleft()
            if any(self.engine.ike_ids(conn, s) for s in (IkeState.ESTABLISHED, *_CONNECTING)):
                continue  # up meanwhile (`xfrmctl up`, the peer): not a second IKE SA
            try:
                self._connecting[self.initiate(conn, children)] = now
            except LocalProtocolError as exc:
                log.info("%s: not started: %s", conn, exc)  # e.g. removed by a reload
