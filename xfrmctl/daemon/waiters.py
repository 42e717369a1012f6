"""`up` and `down` requests waiting for the engine and the kernel, and their progress messages.

An `up` resolves when every requested Child SA is in the kernel and fails with the engine's
reason (proposals, identities, traffic selectors) so the CLI can say what to fix; a `down`
resolves when the children are gone and no IKE SA of the connection is left.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from xfrmctl.ike import events as ev


@dataclass
class Waiter:
    """An `up`/`down` request waiting for the engine and the kernel to finish."""

    conn: str
    kind: str  # "up" | "down"
    ike_sa_ids: set[int]
    children: set[str]  # child names still to be installed (up) or removed (down)
    future: asyncio.Future[dict[str, Any]]
    progress: Callable[[dict[str, Any]], Awaitable[None]] | None = None
    done_children: list[ev.ChildSaReady] = field(default_factory=list)


class UpFailed(Exception):
    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.details = details or {}


LiveIkeIds = Callable[[str], set[int]]


class Waiters:
    def __init__(self) -> None:
        self.pending: list[Waiter] = []
        self._background: set[asyncio.Future[None]] = set()

    def add(self, waiter: Waiter) -> None:
        self.pending.append(waiter)

    def progress(self, conn: str, message: Callable[[], dict[str, Any]]) -> None:
        """Tell each `up` of `conn` what happened; `message` is made only when one waits
        (thousands of `start_action: start` setups have no one to tell)."""
        made: dict[str, Any] | None = None
        for w in self.pending:
            if w.conn == conn and w.kind == "up" and w.progress is not None:
                made = made if made is not None else message()
                task = asyncio.ensure_future(w.progress(made))
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    def fail(
        self, conn: str, ike_sa_id: int | None, code: str, message: str, details: dict[str, Any]
    ) -> None:
        for w in list(self.pending):
            if (
                w.kind == "up"
                and w.conn == conn
                and (ike_sa_id is None or ike_sa_id in w.ike_sa_ids)
            ):
                self.reject(w, UpFailed(code, message, details))

    def ike_rekeyed(self, old: int, new: int) -> None:
        for w in self.pending:
            if old in w.ike_sa_ids:
                w.ike_sa_ids.add(new)

    def child_installed(self, ready: ev.ChildSaReady) -> None:
        for w in list(self.pending):
            if w.kind == "up" and w.conn == ready.conn and ready.ike_sa_id in w.ike_sa_ids:
                w.children.discard(ready.child)
                w.done_children.append(ready)
                if not w.children:
                    self.resolve(w, {"ike_sa_id": ready.ike_sa_id})

    def child_removed(self, gone: ev.ChildSaDeleted, live: LiveIkeIds) -> None:
        for w in list(self.pending):
            if w.kind == "down" and w.conn == gone.conn:
                w.children.discard(gone.child)
                if not w.children and not (w.ike_sa_ids & live(w.conn)):
                    self.resolve(w, {})

    def ike_gone(self, event: ev.IkeSaDeleted, live: LiveIkeIds) -> None:
        for w in list(self.pending):
            if event.ike_sa_id not in w.ike_sa_ids:
                continue
            if w.kind == "down":
                if not (w.ike_sa_ids & live(w.conn)):
                    self.resolve(w, {})
            elif w.children:
                self.reject(
                    w, UpFailed("IKE_SA_DELETED", f"the IKE SA was deleted: {event.reason}")
                )

    def resolve(self, w: Waiter, result: dict[str, Any]) -> None:
        if w in self.pending:
            self.pending.remove(w)
        if not w.future.done():
            w.future.set_result(result)

    def reject(self, w: Waiter, exc: Exception) -> None:
        if w in self.pending:
            self.pending.remove(w)
        if not w.future.done():
            w.future.set_exception(exc)


def offer_details(offer: ev.Offer) -> dict[str, Any]:
    return {
        "proposals": list(offer.proposal_text),
        "local_ts": [str(t) for t in offer.local_ts],
        "remote_ts": [str(t) for t in offer.remote_ts],
        "identity": offer.identity,
        "auth": offer.auth_method,
    }


def failure_text(event: ev.NegotiationFailed) -> str:
    what = f"child {event.child}" if event.child else "IKE SA"
    if event.reason == "NO_PROPOSAL_CHOSEN":
        return (
            f"{what}: no proposal chosen: we offered {', '.join(event.ours.proposal_text)}"
            f"; the peer offered {', '.join(event.theirs.proposal_text) or 'none we saw'}"
        )
    if event.reason == "TS_UNACCEPTABLE":
        return (
            f"{what}: traffic selectors unacceptable: ours "
            f"{[str(t) for t in event.ours.local_ts]} <-> "
            f"{[str(t) for t in event.ours.remote_ts]}, theirs "
            f"{[str(t) for t in event.theirs.local_ts]} <-> "
            f"{[str(t) for t in event.theirs.remote_ts]}"
        )
    return f"{what}: {event.reason}"
