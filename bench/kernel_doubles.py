"""Kernel doubles for host benchmarks of the daemon (no root, no kernel ESP).

- `MemoryKernel`: a KernelGlue that keeps installed Child SAs in a dict; it measures the
  engine and the daemon, not the kernel glue.
- `RecordedGlue`: the real `XfrmGlue` (its SA/policy building, transactions and bookkeeping)
  over `RecordingNetlink`, which answers every netlink request with success, keeps what was
  installed and counts batches and requests; our own installs and deletes come back as the
  notifications the kernel would multicast (NEWPOLICY, DELSA, DELPOLICY), through the glue's
  drift filter.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, cast

from xfrmctl.daemon.kernel_glue import ChildCounters, KernelEvent, KernelGlue
from xfrmctl.daemon.xfrm_glue import XfrmGlue
from xfrmctl.ike.events import ChildSaReady
from xfrmctl.ike.spec import ChildSpec, ConnectionSpec
from xfrmctl.kernel import events as kev
from xfrmctl.kernel.messages import Msg
from xfrmctl.kernel.request import Request
from xfrmctl.kernel.types import SA, Address, Policy, PolicyId, SaId
from xfrmctl.kernel.wire import NLMSG_HDR


class MemoryKernel(KernelGlue):
    """Holds installed Child SAs by inbound SPI; never fails, never blocks."""

    def __init__(self) -> None:
        self.sas: dict[int, ChildSaReady] = {}
        self._idle: asyncio.Event = asyncio.Event()

    def prepare_socket(self, sock: Any, family: int) -> None:
        pass

    async def cleanup_stale(self) -> int:
        return 0

    async def install_trap(self, spec: ConnectionSpec, child: ChildSpec, reqid: int) -> None:
        pass

    async def remove_traps(self, conn: str) -> None:
        pass

    def trap_for_reqid(self, reqid: int) -> tuple[str, str] | None:
        return None

    async def install_child(self, ready: ChildSaReady, outbound: bool = True) -> None:
        self.sas[ready.spi_in] = ready

    async def install_outbound(self, ready: ChildSaReady) -> None:
        pass

    async def remove_child(self, ready: ChildSaReady, inbound: bool = True) -> None:
        if inbound:
            self.sas.pop(ready.spi_in, None)

    async def remove_inbound(self, ready: ChildSaReady) -> None:
        self.sas.pop(ready.spi_in, None)

    async def update_encap(self, ready: ChildSaReady) -> None:
        pass

    async def counters(self, ready: ChildSaReady) -> ChildCounters:
        return ChildCounters()

    async def remove_all(self) -> None:
        self.sas.clear()

    async def events(self) -> AsyncIterator[KernelEvent]:
        await self._idle.wait()  # no upcalls in memory
        yield KernelEvent("none")


DUMP_MESSAGES = 32  # per dump datagram: about what the kernel packs into 16 KiB


class RecordingNetlink:
    """Stands in for `kernel.socket.Connection`: every request succeeds; it keeps the SAs and
    policies installed, counts batches and requests, and hands each change to `notify` soon
    after, as the kernel multicasts it (NEWPOLICY, DELSA, DELPOLICY). A dump (the drift
    reconcile's GETSA, GETPOLICY) answers with what was installed, as NEWSA/NEWPOLICY messages
    made of the bodies we sent, decoded as the kernel's would be (with `dumps` only: else it
    answers a dump with nothing, and keeps no body)."""

    def __init__(self, notify: Callable[[Any], None], dumps: bool = False) -> None:
        self.keep_bodies = dumps  # off: the bodies (~2 KiB per pair) would count as ours
        self.batches = 0
        self.requests = 0
        self.dumps = 0
        # What a DELSA's notification names of an SA (its id, source, reqid), not the SA
        # itself: the kernel keeps its keys outside our process, and so must the double.
        self.sas: dict[SaId, tuple[Address, int]] = {}
        self.policies: dict[PolicyId, Policy] = {}
        self._bodies: dict[Any, bytes] = {}  # SaId / PolicyId -> the body installing it
        self._notify = notify

    async def dump_raw(
        self, msg_type: int, body: bytes, ctx: Any = None
    ) -> AsyncIterator[list[bytes]]:
        self.dumps += 1
        await asyncio.sleep(0)
        reply, ids = (
            (Msg.NEWSA, list(self.sas))
            if msg_type == Msg.GETSA
            else (Msg.NEWPOLICY, list(self.policies))
        )
        raw = [
            NLMSG_HDR.pack(16 + len(b), reply, 0, 0, 0) + b for b in map(self._bodies.get, ids) if b
        ]
        for start in range(0, len(raw), DUMP_MESSAGES):  # one datagram's worth at a time
            yield raw[start : start + DUMP_MESSAGES]

    def _keep(self, key: Any, body: bytes) -> None:
        if self.keep_bodies:
            self._bodies[key] = body

    async def request(self, req: Request) -> list[Any]:
        await self.batch([req])
        return []

    async def batch(self, requests: Sequence[Request]) -> Sequence[Request]:
        self.batches += 1
        self.requests += len(requests)
        events: list[Any] = []
        for req in requests:
            source: Any = req._source
            if req.msg_type in (Msg.NEWSA, Msg.UPDSA):
                self.sas[source.id] = (source.src, source.reqid)
                self._keep(source.id, req.body)
            elif req.msg_type == Msg.DELSA and (sa := self.sas.pop(source, None)) is not None:
                self._bodies.pop(source, None)
                src, reqid = sa
                gone = SA(src, source.dst, source.spi, source.proto, reqid=reqid, mark=source.mark)
                events.append(kev.SaDeleted(gone))
            elif req.msg_type in (Msg.NEWPOLICY, Msg.UPDPOLICY):
                self.policies[source.id] = source
                self._keep(source.id, req.body)
                events.append(kev.PolicyAdded(source, req.msg_type == Msg.UPDPOLICY))
            elif req.msg_type == Msg.DELPOLICY and (p := self.policies.pop(source, None)):
                self._bodies.pop(source, None)
                events.append(kev.PolicyDeleted(p))
        if events:
            asyncio.get_running_loop().call_soon(lambda: [self._notify(e) for e in events])
        return requests


class RecordedGlue(XfrmGlue):
    """XfrmGlue over RecordingNetlink; the notifications of our own changes go through its
    drift filter as the event stream's would (none is drift: counted in `drift`, expect 0)."""

    def __init__(self, dumps: bool = False) -> None:
        super().__init__()
        self.netlink = RecordingNetlink(self._notified, dumps)
        self.conn = cast(Any, self.netlink)
        self._opened = True
        self.notifications = 0
        self.drift = 0
        self._idle = asyncio.Event()

    def prepare_socket(self, sock: Any, family: int) -> None:
        pass

    async def cleanup_stale(self) -> int:
        return 0

    async def open_events(self) -> None:
        pass

    async def events(self) -> AsyncIterator[KernelEvent]:
        await self._idle.wait()
        yield KernelEvent("none")

    async def counters(self, ready: ChildSaReady) -> ChildCounters:
        """Two GETAE requests in the real glue; their answers are not recorded here."""
        self.netlink.batches += 2
        self.netlink.requests += 2
        return ChildCounters()

    def _notified(self, event: Any) -> None:
        self.notifications += 1
        if self._drift_detail(event) is not None:
            self.drift += 1
