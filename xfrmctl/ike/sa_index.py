"""An endpoint's IKE SAs by ID, by connection and by Child SA (inbound SPI), so that a control
request, a kernel event or a Child SA deletion costs O(1) instead of a scan of every SA.

Contract: the endpoint calls `add` when it registers an SA and `remove` when it forgets one,
`touch` for every SA an entry point may change (a responder learns its connection in
IKE_AUTH), and `child_ready` for every ChildSaReady it emits. A lookup re-files the touched SAs
first and checks its answer against the SAs themselves, so a stale entry costs a fallback
scan, never a wrong answer. `check` (strict mode) compares the index with a full scan.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import TYPE_CHECKING

from xfrmctl.ike.multimap import MultiMap

if TYPE_CHECKING:
    from xfrmctl.ike.sa import ChildSa, IkeSa


class SaIndex:
    def __init__(self) -> None:
        self.by_id: dict[int, IkeSa] = {}
        self._order: dict[int, int] = {}  # by id: registration order (the endpoint's dict's)
        self._seq = itertools.count()
        self._by_conn: MultiMap[str, int, IkeSa] = MultiMap()
        self._conn_of: dict[int, str] = {}  # by id: the bucket the SA is filed in
        self._dirty: dict[int, IkeSa] = {}
        self._child_owner: dict[int, int] = {}  # spi_in -> IKE SA id when it was made

    def add(self, sa: IkeSa) -> None:
        self.remove(sa)
        self.by_id[sa.id] = sa
        self._order[sa.id] = next(self._seq)
        self._file(sa)

    def remove(self, sa: IkeSa) -> None:
        if self.by_id.get(sa.id) is not sa:
            return
        del self.by_id[sa.id]
        del self._order[sa.id]
        self._dirty.pop(sa.id, None)
        self._unfile(sa.id)

    def touch(self, sa: IkeSa) -> None:
        if self.by_id.get(sa.id) is sa:
            self._dirty[sa.id] = sa

    def child_ready(self, spi_in: int, ike_sa_id: int) -> None:
        self._child_owner[spi_in] = ike_sa_id

    def child_gone(self, spi_in: int) -> None:
        self._child_owner.pop(spi_in, None)

    def of_conn(self, conn: str) -> list[IkeSa]:
        """The connection's IKE SAs in registration order."""
        self._refile()
        filed = self._by_conn.items(conn)
        if len(filed) == 1:
            return [filed[0][1]]
        return sorted((sa for _, sa in filed), key=lambda s: self._order[s.id])

    def owner(self, spi_in: int, live: Iterable[IkeSa]) -> tuple[IkeSa, ChildSa] | None:
        """The IKE SA holding the Child SA with inbound SPI `spi_in` now (an IKE rekey moves
        children to the successor), and the child; a scan of `live` when the hint is stale."""
        sa = self.by_id.get(self._child_owner.get(spi_in, -1))
        while sa is not None and self.by_id.get(sa.id) is sa:
            for c in sa.children:
                if c.spi_in == spi_in:
                    return sa, c
            sa = sa.replaced_by
        for sa in live:
            for c in sa.children:
                if c.spi_in == spi_in:
                    self._child_owner[spi_in] = sa.id
                    return sa, c
        self._child_owner.pop(spi_in, None)
        return None

    def check(self, live: Iterable[IkeSa]) -> None:
        """Strict mode: the index must say what a scan of `live` says."""
        self._refile()
        live = list(live)
        assert {s.id for s in live} == set(self.by_id), "SA index: IDs differ"
        for sa in live:
            assert self._conn_of.get(sa.id) == sa.conn_name, f"SA index: #{sa.id} misfiled"

    def _refile(self) -> None:
        dirty, self._dirty = self._dirty, {}
        for sa in dirty.values():
            if self._conn_of.get(sa.id) != sa.conn_name and self.by_id.get(sa.id) is sa:
                self._unfile(sa.id)
                self._file(sa)

    def _file(self, sa: IkeSa) -> None:
        self._conn_of[sa.id] = sa.conn_name
        self._by_conn.put(sa.conn_name, sa.id, sa)

    def _unfile(self, sa_id: int) -> None:
        conn = self._conn_of.pop(sa_id, None)
        if conn is not None:
            self._by_conn.remove(conn, sa_id)
