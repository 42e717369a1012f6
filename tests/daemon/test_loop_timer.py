"""The daemon's one loop timer follows the engine's next deadline (issue 15: it is kept, not
replaced, when an event leaves the deadline where it was)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from daemon_helpers import BASE_PORT, make_daemon
from daemon_helpers import write_config as _write


def test_the_loop_timer_moves_only_with_the_engine_deadline(tmp_path: Path) -> None:
    port = BASE_PORT + 230
    cfg = _write(tmp_path, "a", "127.0.0.1", "127.0.0.2", port, port + 2, "a.x", "b.x")

    async def scenario() -> None:
        daemon, _, _ = await make_daemon(cfg)
        fired: list[float] = []
        try:
            now = daemon.now()
            deadline: list[float | None] = [now + 30]
            daemon.engine.next_timer = lambda: deadline[0]  # type: ignore[method-assign]
            daemon.engine.handle_timer = fired.append  # type: ignore[method-assign]
            daemon._pump()
            first = daemon._timer
            assert first is not None and first.when() == now + 30
            daemon._pump()
            assert daemon._timer is first and not first.cancelled()  # same deadline: kept
            deadline[0] = now + 10
            daemon._pump()
            assert first.cancelled() and daemon._timer is not None
            assert daemon._timer.when() == now + 10
            deadline[0] = None
            daemon._pump()
            assert daemon._timer is None
            deadline[0] = daemon.now() + 0.05
            daemon._pump()
            deadline[0] = None  # what the engine says once the timer has fired
            await asyncio.sleep(0.2)
            assert len(fired) == 1 and daemon._timer is None
        finally:
            await daemon.stop()

    asyncio.run(scenario())
