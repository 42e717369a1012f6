"""XfrmGlue's bookkeeping with the indexes each removal and notification asks: which policy a
trap or live Child SA holds for a kernel policy identity, whether a reqid is still in use,
whether an SA (by destination, SPI, protocol) is ours, which traps a connection has.

Contract: `PolicyHolders`, `ChildTable` and `TrapTable` answer what the full rebuilds or scans
they replace would (every trap's and child's policies in a dict, a child's over a trap's, the
later-filed owner over the earlier; a connection's traps) in O(1), so a teardown or rekey
storm of N Child SAs costs O(N), not O(N^2). Every change goes through them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Iterator

from xfrmctl.daemon.indexed import IndexedDict
from xfrmctl.ike.multimap import MemberMap
from xfrmctl.kernel import reconcile as drift
from xfrmctl.kernel.transaction import ChildSA
from xfrmctl.kernel.types import SA, Policy, PolicyId


class TrapTable(IndexedDict[int, tuple[str, str]]):
    """Trap reqid -> (connection, child), indexed by connection: a reload that changes N
    trap connections removes each one's traps without walking all of them."""

    def __init__(self) -> None:
        super().__init__()
        self._by_conn: MemberMap[str, int] = MemberMap()

    def of_conn(self, conn: str) -> list[tuple[int, tuple[str, str]]]:
        """The connection's traps (reqid, (connection, child)), in the order filed (a reqid
        filed again counts from then: a scan of the dict would keep its first place)."""
        return [(reqid, self[reqid]) for reqid in self._by_conn.members(conn)]

    def _filed(self, key: int, value: tuple[str, str]) -> None:
        self._by_conn.put(value[0], key)

    def _unfiled(self, key: int, value: tuple[str, str], replaced: bool) -> None:
        self._by_conn.remove(value[0], key)

    def _cleared(self) -> None:
        self._by_conn.clear()


class PolicyHolders:
    """Policies by kernel identity, each held by one or more owners (a trap's reqid, a Child
    SA's inbound SPI); the policy of the owner filed last stands.

    The index names owners only: an owner's policy of an identity is found in its own tuple
    (a Child SA holds three), not kept beside it in a (owner, policy) tuple per policy."""

    def __init__(self) -> None:
        self._by_id: MemberMap[PolicyId, Hashable] = MemberMap()
        # Each owner's policies as it filed them (a Child SA's own tuple: no copy of its ids).
        self._of: dict[Hashable, tuple[Policy, ...]] = {}

    def put(self, owner: Hashable, policies: Iterable[Policy]) -> None:
        """File `owner`'s policies (replacing what it held; a kept owner keeps its rank)."""
        filed = policies if isinstance(policies, tuple) else tuple(policies)
        ids = {p.id for p in filed}  # one PolicyId each: the policies keep theirs
        for pid in {p.id for p in self._of.get(owner, ())} - ids:
            self._by_id.remove(pid, owner)
        for pid in ids:
            self._by_id.put(pid, owner)
        self._of[owner] = filed

    def drop(self, owner: Hashable) -> None:
        for pid in {p.id for p in self._of.pop(owner, ())}:
            self._by_id.remove(pid, owner)

    def get(self, pid: PolicyId) -> Policy | None:
        owner = self._by_id.last(pid)
        return None if owner is None else self._held(owner, pid)

    def all(self) -> dict[PolicyId, Policy]:
        return {pid: self._held(owner, pid) for pid, owner in self._by_id.lasts()}

    def clear(self) -> None:
        self._by_id.clear()
        self._of.clear()

    def _held(self, owner: Hashable, pid: PolicyId) -> Policy:
        """`owner`'s policy of identity `pid` (the last it filed, should it file two)."""
        return next(p for p in reversed(self._of[owner]) if p.id == pid)


def _sas(child: ChildSA) -> Iterator[tuple[SA, bool]]:
    """The child's SAs, and whether each is on the inbound side."""
    for sa, inbound in (
        (child.inbound, True),
        (child.comp_in, True),
        (child.outbound, False),
        (child.comp_out, False),
    ):
        if sa is not None:
            yield sa, inbound


class ChildTable(IndexedDict[int, ChildSA]):
    """The Child SAs XfrmGlue installed, by inbound SPI, with their policies, reqids and SA
    keys indexed."""

    def __init__(self) -> None:
        super().__init__()
        self.policies = PolicyHolders()
        self._reqids: Counter[int] = Counter()
        # By SPI alone, the SA's own int (a (dst, SPI, protocol) key per SA cost 64 bytes, two
        # per pair); the rare pairs that share an SPI are told apart by their SAs.
        self._by_spi: MemberMap[int, int] = MemberMap()  # the pairs' spi_in

    def _filed(self, spi_in: int, child: ChildSA) -> None:
        self.policies.put(spi_in, child.policies)
        self._reqids[child.inbound.reqid] += 1
        for sa, _ in _sas(child):
            self._by_spi.put(sa.spi, spi_in)

    def _cleared(self) -> None:
        self.policies.clear()
        self._reqids.clear()
        self._by_spi.clear()

    def reqid_in_use(self, kreqid: int) -> bool:
        return self._reqids[kreqid] > 0

    def owner_of_sa(self, key: drift.SaKey, no_outbound: set[int]) -> int | None:
        """The inbound SPI of the child that owns the SA `key`; an outbound SA not installed
        yet (`no_outbound`, a rekey's deferred one) is not owned."""
        for spi_in in self._by_spi.members(key[1]):
            for sa, inbound in _sas(self[spi_in]):
                if drift.sa_key(sa) == key and (inbound or spi_in not in no_outbound):
                    return spi_in
        return None

    def _unfiled(self, spi_in: int, child: ChildSA, replaced: bool) -> None:
        if not replaced:  # a replacement re-files them in place, keeping the owner's rank
            self.policies.drop(spi_in)
        self._reqids[child.inbound.reqid] -= 1
        if self._reqids[child.inbound.reqid] <= 0:
            del self._reqids[child.inbound.reqid]
        for sa, _ in _sas(child):
            self._by_spi.remove(sa.spi, spi_in)
