"""The Child SA pairs the kernel holds for us, by inbound SPI, with the indexes the daemon asks
per event: by connection, by IKE SA, by outbound SPI and by the pair a rekey replaced.

Contract: `InstalledTable` is a mutable mapping spi_in -> `Installed`; every change goes
through it (set, delete, pop, clear), so its indexes always say what a scan would. A query
costs O(answer), not O(pairs): a teardown or rekey storm of N pairs stays O(N).
"""

from __future__ import annotations

from dataclasses import dataclass

from xfrmctl.daemon.indexed import IndexedDict
from xfrmctl.ike import events as ev
from xfrmctl.ike.multimap import MemberMap


@dataclass(slots=True)
class Installed:
    """A Child SA pair the kernel holds for us (times on the daemon's monotonic clock)."""

    ready: ev.ChildSaReady
    installed_at: float

    def rekey_at(self) -> float | None:
        """When the kernel's soft lifetime fires (and the engine rekeys), if it has one."""
        soft = self.ready.lifetimes.soft_seconds
        return self.installed_at + soft if soft else None

    def expire_at(self) -> float | None:
        hard = self.ready.lifetimes.hard_seconds
        return self.installed_at + hard if hard else None


class InstalledTable(IndexedDict[int, Installed]):
    def __init__(self) -> None:
        super().__init__()
        self._by_conn: MemberMap[str, int] = MemberMap()  # conn -> spi_in
        self._by_ike: MemberMap[int, int] = MemberMap()  # ready.ike_sa_id -> spi_in
        self._by_replaced: MemberMap[int, int] = MemberMap()  # replaces_spi_in -> spi_in
        self._by_out: MemberMap[int, int] = MemberMap()  # spi_out -> spi_in

    def _filed(self, spi_in: int, entry: Installed) -> None:
        r = entry.ready
        self._by_conn.put(r.conn, spi_in)
        self._by_ike.put(r.ike_sa_id, spi_in)
        if r.replaces_spi_in is not None:
            self._by_replaced.put(r.replaces_spi_in, spi_in)
        self._by_out.put(r.spi_out, spi_in)

    def _unfiled(self, spi_in: int, entry: Installed, replaced: bool) -> None:
        r = entry.ready
        self._by_conn.remove(r.conn, spi_in)
        self._by_ike.remove(r.ike_sa_id, spi_in)
        if r.replaces_spi_in is not None:
            self._by_replaced.remove(r.replaces_spi_in, spi_in)
        self._by_out.remove(r.spi_out, spi_in)

    def _cleared(self) -> None:
        for index in (self._by_conn, self._by_ike, self._by_replaced, self._by_out):
            index.clear()

    # ------------------------------------------------------------------ the questions

    def of_conn(self, conn: str) -> list[Installed]:
        """The connection's pairs, in the order they were installed."""
        return [self._items[s] for s in self._by_conn.members(conn)]

    def of_ike(self, ike_sa_id: int) -> list[int]:
        """Inbound SPIs of the pairs made by IKE SA `ike_sa_id` (not those an IKE rekey
        moved to it: their `ready` names the IKE SA that made them)."""
        return self._by_ike.members(ike_sa_id)

    def replaced(self, spi_in: int) -> bool:
        """Whether an installed pair is a rekey's successor of pair `spi_in`."""
        return spi_in in self._by_replaced

    def spi_in_for(self, spi: int) -> int | None:
        """Our inbound SPI for either SPI of an installed pair (kernel expiries name either)."""
        if spi in self._items:
            return spi
        return next(iter(self._by_out.members(spi)), None)
