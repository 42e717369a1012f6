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


def _add(index: dict[int | str, dict[int, None]], key: int | str, spi_in: int) -> None:
    index.setdefault(key, {})[spi_in] = None


def _drop(index: dict[int | str, dict[int, None]], key: int | str | None, spi_in: int) -> None:
    bucket = index.get(key) if key is not None else None
    if bucket is not None:
        bucket.pop(spi_in, None)
        if not bucket:
            del index[key]  # type: ignore[arg-type]


class InstalledTable(IndexedDict[int, Installed]):
    def __init__(self) -> None:
        super().__init__()
        self._by_conn: dict[int | str, dict[int, None]] = {}  # conn -> spi_in (ordered set)
        self._by_ike: dict[int | str, dict[int, None]] = {}  # ready.ike_sa_id -> spi_in
        self._by_replaced: dict[int | str, dict[int, None]] = {}  # replaces_spi_in -> spi_in
        self._by_out: dict[int | str, dict[int, None]] = {}  # spi_out -> spi_in

    def _filed(self, spi_in: int, entry: Installed) -> None:
        r = entry.ready
        _add(self._by_conn, r.conn, spi_in)
        _add(self._by_ike, r.ike_sa_id, spi_in)
        if r.replaces_spi_in is not None:
            _add(self._by_replaced, r.replaces_spi_in, spi_in)
        _add(self._by_out, r.spi_out, spi_in)

    def _unfiled(self, spi_in: int, entry: Installed, replaced: bool) -> None:
        r = entry.ready
        _drop(self._by_conn, r.conn, spi_in)
        _drop(self._by_ike, r.ike_sa_id, spi_in)
        _drop(self._by_replaced, r.replaces_spi_in, spi_in)
        _drop(self._by_out, r.spi_out, spi_in)

    def _cleared(self) -> None:
        for index in (self._by_conn, self._by_ike, self._by_replaced, self._by_out):
            index.clear()

    # ------------------------------------------------------------------ the questions

    def of_conn(self, conn: str) -> list[Installed]:
        """The connection's pairs, in the order they were installed."""
        return [self._items[s] for s in self._by_conn.get(conn, ())]

    def of_ike(self, ike_sa_id: int) -> list[int]:
        """Inbound SPIs of the pairs made by IKE SA `ike_sa_id` (not those an IKE rekey
        moved to it: their `ready` names the IKE SA that made them)."""
        return list(self._by_ike.get(ike_sa_id, ()))

    def replaced(self, spi_in: int) -> bool:
        """Whether an installed pair is a rekey's successor of pair `spi_in`."""
        return spi_in in self._by_replaced

    def spi_in_for(self, spi: int) -> int | None:
        """Our inbound SPI for either SPI of an installed pair (kernel expiries name either)."""
        if spi in self._items:
            return spi
        return next(iter(self._by_out.get(spi, ())), None)
