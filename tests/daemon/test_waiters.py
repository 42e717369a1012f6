"""Waiters: an `up`'s progress messages go to the `up`s of that connection only, and are made
only when one waits (a fleet's `start_action: start` setups have no one to tell)."""

from __future__ import annotations

import asyncio
from typing import Any

from xfrmctl.daemon.waiters import Waiter, Waiters


def test_progress_reaches_the_ups_of_the_connection_and_is_made_once() -> None:
    async def scenario() -> None:
        waiters = Waiters()
        heard: list[tuple[str, dict[str, Any]]] = []
        made: list[int] = []

        def listener(name: str) -> Any:
            async def progress(message: dict[str, Any]) -> None:
                heard.append((name, message))

            return progress

        loop = asyncio.get_running_loop()
        for name, conn, kind in (("a1", "a", "up"), ("a2", "a", "up"), ("b", "b", "up")):
            waiters.add(Waiter(conn, kind, {1}, set(), loop.create_future(), listener(name)))
        waiters.add(Waiter("a", "down", {1}, set(), loop.create_future(), listener("down")))

        def message() -> dict[str, Any]:
            made.append(1)
            return {"event": "ike_established"}

        waiters.progress("a", message)
        await asyncio.sleep(0)
        assert sorted(name for name, _ in heard) == ["a1", "a2"] and made == [1]

        def unwanted() -> dict[str, Any]:
            raise AssertionError("made with no one waiting")

        waiters.progress("c", unwanted)
        Waiters().progress("a", unwanted)

    asyncio.run(scenario())
