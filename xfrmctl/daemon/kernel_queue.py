"""Kernel work in one ordered queue.

Netlink calls are awaited one at a time in the order the engine's events asked for them, so a
rekeyed Child SA is always installed before the SA it replaces is removed, and `busy` tells the
pump whether an answer must wait for the kernel work it announces.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from xfrmctl.kernel.errors import XfrmError

log = logging.getLogger("xfrmctl.daemon")

Job = Callable[[], Awaitable[None]]


class KernelQueue:
    def __init__(self) -> None:
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self.busy = 0  # jobs queued or running

    def put(self, job: Job) -> None:
        self.busy += 1
        self._queue.put_nowait(job)

    async def run(self) -> None:
        """The worker: a failed job is logged and the next one runs."""
        while True:
            job = await self._queue.get()
            try:
                await job()
            except (XfrmError, OSError) as exc:
                log.error("kernel operation failed: %s", exc)
            except Exception:
                log.exception("kernel operation failed")
            finally:
                self.busy -= 1
                self._queue.task_done()
