"""Which Child SAs and traps hold each XFRM interface: it exists while any of them does.

The first holder of a connection's interface (a Child SA being installed, or a trap) sets it
up, with its addresses and routes; the last one to go takes it down again (removing it, if
xfrmctl created it). The kernel calls block (pyroute2's IPRoute), so they run in a thread;
the daemon's kernel queue runs one job at a time, so holders never race.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Hashable

from xfrmctl.ike.spec import InterfaceOptions
from xfrmctl.kernel import interfaces as kif

log = logging.getLogger("xfrmctl.daemon")


def kernel_interface(options: InterfaceOptions, owner: str) -> kif.XfrmInterface:
    return kif.XfrmInterface(
        name=options.name,
        if_id=options.if_id,
        owner=owner,
        mtu=options.mtu,
        addresses=tuple(ipaddress.ip_interface(a) for a in options.addresses),
        routes=tuple(ipaddress.ip_network(r) for r in options.routes),
    )


class InterfaceHolders:
    def __init__(self, netns: str | None = None) -> None:
        self._netns = netns
        self._holders: dict[str, set[Hashable]] = {}  # interface name -> who holds it
        self._held: dict[Hashable, str] = {}

    @property
    def in_use(self) -> frozenset[str]:
        return frozenset(self._holders)

    async def hold(self, holder: Hashable, options: InterfaceOptions | None, owner: str) -> None:
        """Set the interface up for `holder` (InterfaceError if it cannot be, as configured)."""
        if options is None or holder in self._held:
            return
        if options.name not in self._holders:
            iface = kernel_interface(options, owner)
            await asyncio.to_thread(kif.ensure, iface, self._netns)
            log.info("%s: interface %s up (if_id %d)", owner, options.name, options.if_id)
        self._holders.setdefault(options.name, set()).add(holder)
        self._held[holder] = options.name

    async def release(self, holder: Hashable) -> None:
        name = self._held.pop(holder, None)
        if name is None:
            return
        holders = self._holders[name]
        holders.discard(holder)
        if not holders:
            del self._holders[name]
            await self._take_down(name)

    async def _take_down(self, name: str) -> None:
        try:
            await asyncio.to_thread(kif.release, name, self._netns)
            log.info("interface %s released", name)
        except kif.InterfaceError as exc:
            log.error("%s", exc)

    async def release_all(self) -> None:
        names = list(self._holders)
        self._holders.clear()
        self._held.clear()
        for name in names:
            await self._take_down(name)

    async def remove_stale(self) -> list[str]:
        """Interfaces and routes an earlier instance left, sparing those held now."""
        try:
            return await asyncio.to_thread(kif.remove_stale, self._netns, self.in_use)
        except kif.InterfaceError as exc:
            log.error("%s", exc)
            return []
