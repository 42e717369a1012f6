"""What the daemon needs from the kernel, as one small interface.

`KernelGlue` is the seam between the asyncio daemon and `xfrmctl.kernel`: the real
implementation (`xfrm_glue.XfrmGlue`) installs SAs and policies over netlink; tests use a
recording double so the whole daemon runs without root.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

from xfrmctl.ike.events import Address, ChildSaReady
from xfrmctl.ike.payloads import TrafficSelector
from xfrmctl.ike.spec import ChildSpec, ConnectionSpec
from xfrmctl.kernel.types import Policy


@dataclass(frozen=True)
class NatMapping:
    """XFRM_MSG_MAPPING: ESP from the peer now arrives from `new` instead of `old`."""

    old: Address
    new: Address


@dataclass(frozen=True)
class KernelEvent:
    """A kernel upcall the daemon acts on."""

    kind: str  # "acquire" | "soft" | "hard" | "mapping" | "drift" (ours changed by others)
    reqid: int = 0
    spi: int = 0
    traffic_selectors: tuple[TrafficSelector, ...] | None = None
    detail: str = ""
    mapping: NatMapping | None = None


@dataclass(frozen=True)
class MissingPair:
    """An installed Child SA pair some of whose SAs the kernel no longer holds."""

    spi_in: int
    reqid: int  # the kernel reqid (as in ACQUIREs)
    missing: tuple[str, ...]  # e.g. "inbound esp spi 0xc1a0...": never keys


@dataclass(frozen=True)
class KernelDrift:
    """What `reconcile` found changed under us; policies are ours, as they should be."""

    pairs: tuple[MissingPair, ...] = ()
    missing_policies: tuple[Policy, ...] = ()
    altered_policies: tuple[Policy, ...] = ()
    shadowed: tuple[str, ...] = ()  # "ours ... shadowed by foreign ..."


@dataclass(frozen=True)
class ChildCounters:
    bytes_in: int = 0
    packets_in: int = 0
    bytes_out: int = 0
    packets_out: int = 0
    replay_errors: int = 0  # inbound SA's xfrm_stats
    integrity_failures: int = 0


class KernelGlue:
    """Interface; every method must leave the kernel unchanged when it raises."""

    def prepare_socket(self, sock: socket.socket, family: int) -> None:
        """Exempt an IKE socket from IPsec policies (per-socket bypass)."""
        raise NotImplementedError

    async def cleanup_stale(self) -> int:
        """Remove SAs and policies an earlier instance of ours left; returns how many."""
        raise NotImplementedError

    async def adopt(self, readies: list[ChildSaReady]) -> set[int]:
        """Restart: take over the pairs an earlier instance left, if both SAs are still in the
        kernel (then `cleanup_stale` spares them); returns the spi_in of those adopted."""
        return set()

    async def install_trap(self, spec: ConnectionSpec, child: ChildSpec, reqid: int) -> None:
        """Policies without SAs, so the first packet raises an ACQUIRE instead of leaking."""
        raise NotImplementedError

    async def remove_traps(self, conn: str) -> None:
        """Drop a connection's traps; policies a live Child SA still uses go with that SA."""
        raise NotImplementedError

    def trap_for_reqid(self, reqid: int) -> tuple[str, str] | None:
        raise NotImplementedError

    async def install_child(self, ready: ChildSaReady, outbound: bool = True) -> None:
        """Both SAs and the policies; without `outbound` the outbound SA waits (rekeys)."""
        raise NotImplementedError

    async def install_outbound(self, ready: ChildSaReady) -> None:
        """The outbound SA that `install_child(outbound=False)` left out."""
        raise NotImplementedError

    async def remove_child(self, ready: ChildSaReady, inbound: bool = True) -> None:
        """The pair and its policies (unless still used); without `inbound` the inbound SA stays."""
        raise NotImplementedError

    async def remove_inbound(self, ready: ChildSaReady) -> None:
        """The inbound SA that `remove_child(inbound=False)` left behind."""
        raise NotImplementedError

    async def update_encap(self, ready: ChildSaReady) -> None:
        """Re-program both SAs' UDP encapsulation ports from `ready.encap` (NAT mapping)."""
        raise NotImplementedError

    async def counters(self, ready: ChildSaReady) -> ChildCounters:
        raise NotImplementedError

    async def counters_all(self, readies: list[ChildSaReady]) -> dict[int, ChildCounters]:
        """Every pair's counters by spi_in (metrics); a real kernel answers with one dump."""
        return {r.spi_in: await self.counters(r) for r in readies}

    def offload_of(self, spi_in: int) -> str:
        """The device a Child SA's crypto was offloaded to; "" in software."""
        return ""

    async def reconcile(self) -> KernelDrift | None:
        """Compare what we installed with the kernel (one dump each); None: not supported."""
        return None

    async def repair_policies(self, policies: tuple[Policy, ...]) -> None:
        """Put back our policies (from `reconcile`) as they should be."""

    async def remove_all(self) -> None:
        """Shutdown: remove every SA and policy this instance installed, traps included."""
        raise NotImplementedError

    async def open_events(self) -> None:
        """Subscribe to upcalls now, so none raised before `events()` is first read is lost."""

    def events(self) -> AsyncIterator[KernelEvent]:
        raise NotImplementedError
