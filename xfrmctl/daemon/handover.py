"""The Child SAs the kernel holds for us, and the make-before-break handover on a rekey.

A rekey loses no packets: the new inbound SA goes in at once; the rekey initiator's new
outbound SA too (the responder installed its inbound SA before answering), the responder's
only when the old pair is deleted (so it never sends on an SA the initiator may not have
yet); and the old inbound SA lingers for `grace` seconds for packets in flight. Every step runs
as a job on the daemon's `KernelQueue`, in the order the engine's events asked for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable

from xfrmctl.daemon.installed import Installed, InstalledTable
from xfrmctl.daemon.kernel_glue import KernelGlue
from xfrmctl.daemon.kernel_queue import KernelQueue
from xfrmctl.ike import events as ev

log = logging.getLogger("xfrmctl.daemon")

REKEYED_INBOUND_GRACE = 5.0  # strongSwan's delete_rekeyed_delay
OUTBOUND_FALLBACK = 30.0  # install a deferred outbound SA even if the old one never goes


class ChildHandover:
    def __init__(
        self, kernel: KernelGlue, queue: KernelQueue, delete_child: Callable[[int], None]
    ) -> None:
        self.kernel = kernel
        self.queue = queue
        self._delete_child = delete_child  # ask the engine to delete a pair we could not finish
        self.installed = InstalledTable()  # by spi_in
        # old spi_in -> new Child SAs whose outbound SA waits for the old pair to go
        self.pending_out: dict[int, list[ev.ChildSaReady]] = {}
        self.grace = REKEYED_INBOUND_GRACE
        self.fallback = OUTBOUND_FALLBACK
        self.stopping = False  # shutting down: no deferrals, no lingering

    async def install(self, ready: ev.ChildSaReady) -> None:
        """Raises what the kernel said; nothing of this pair is installed then."""
        old = ready.replaces_spi_in
        defer_out = (
            old is not None
            and old in self.installed
            and not ready.outbound_now
            and not self.stopping
        )
        await self.kernel.install_child(ready, outbound=not defer_out)
        loop = asyncio.get_running_loop()
        self.installed[ready.spi_in] = Installed(ready, loop.time())
        if defer_out and old is not None:
            self.pending_out.setdefault(old, []).append(ready)
            loop.call_later(
                self.fallback,
                lambda: self.queue.put(functools.partial(self.install_outbound, old, ready)),
            )

    async def install_outbound(self, old: int, ready: ev.ChildSaReady) -> None:
        """The deferred outbound SA of a rekey, once (or if) the pair it replaces is gone."""
        pending = self.pending_out.get(old, [])
        if ready not in pending:
            return
        pending.remove(ready)
        if not pending:
            self.pending_out.pop(old, None)
        if ready.spi_in in self.installed and not self.stopping:
            try:
                await self.kernel.install_outbound(ready)
            except Exception as exc:
                log.error(
                    "%s/%s: installing the outbound SA failed: %s", ready.conn, ready.child, exc
                )
                with contextlib.suppress(Exception):
                    self._delete_child(ready.spi_in)

    async def remove(self, gone: ev.ChildSaDeleted) -> None:
        for ready in list(self.pending_out.get(gone.spi_in, [])):
            await self.install_outbound(gone.spi_in, ready)
        for old, waiting in list(self.pending_out.items()):
            self.pending_out[old] = [r for r in waiting if r.spi_in != gone.spi_in]
            if not self.pending_out[old]:
                del self.pending_out[old]
        entry = self.installed.pop(gone.spi_in, None)
        if entry is None:
            return
        if self.installed.replaced(gone.spi_in) and self.grace > 0 and not self.stopping:
            # Keep the old inbound SA a moment: the peer may still have packets on it.
            await self.kernel.remove_child(entry.ready, inbound=False)
            asyncio.get_running_loop().call_later(
                self.grace,
                lambda: self.queue.put(functools.partial(self.kernel.remove_inbound, entry.ready)),
            )
        else:
            await self.kernel.remove_child(entry.ready)

    async def ike_gone(self, ike_sa_id: int, live: Callable[[int], bool]) -> None:
        """Children of a vanished IKE SA cannot be rekeyed or deleted any more: remove them.
        Children an IKE rekey moved to the new IKE SA (`live(spi_in)`) stay."""
        for spi_in in self.installed.of_ike(ike_sa_id):
            entry = self.installed.get(spi_in)
            if entry is not None and not live(spi_in):
                self.installed.pop(spi_in, None)
                await self.kernel.remove_child(entry.ready)

    def spi_in_for(self, spi: int) -> int | None:
        """Our inbound SPI for either SPI of an installed pair (kernel expiries name either)."""
        return self.installed.spi_in_for(spi)
