"""Compare what an owner installed with what the kernel holds: one SA dump, one policy dump.

Contract: `reconcile` reads the SAD and SPD once each and reports, for the objects the caller
says it installed, which SAs are missing, which policies are missing or altered (other
templates, action or priority under the same selector), and which foreign policies with the
same selector and direction sit at a better (lower) priority and so shadow ours. It changes
nothing. `compare` is the pure part, for tests. Only the fields that decide what the kernel
does with a packet are compared (RFC 4301 §4.4.1: selector, action, the SA templates), not
counters, lifetimes or the kernel-assigned index. SAs are matched by (dst, SPI, protocol),
how the kernel itself finds them (RFC 4301 §4.1).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from xfrmctl.kernel import policy as policy_ops
from xfrmctl.kernel import sa as sa_ops
from xfrmctl.kernel.messages import PolicyPrint, policy_print
from xfrmctl.kernel.sa import SaKey as SaKey  # the reconcile speaks of it too
from xfrmctl.kernel.socket import Connection
from xfrmctl.kernel.transaction import DEFAULT_OWNERSHIP, Ownership
from xfrmctl.kernel.types import SA, Policy, PolicyId


def sa_key(sa: SA) -> SaKey:
    return (sa.dst, sa.spi, sa.proto)


def _templates(policy: Policy) -> tuple[tuple[object, ...], ...]:
    return tuple((t.proto, t.mode, t.reqid, t.src, t.dst) for t in policy.templates)


def same_policy(a: Policy, b: Policy) -> bool:
    """Whether the kernel treats packets of `a` and `b` the same (ids assumed equal)."""
    return (a.action, a.priority, _templates(a)) == (b.action, b.priority, _templates(b))


@dataclass(frozen=True)
class Shadow:
    """`theirs` (not ours) matches the same traffic as `ours` and wins on priority."""

    ours: Policy
    theirs: Policy


@dataclass
class Drift:
    missing_sas: list[SA] = field(default_factory=list)
    missing_policies: list[Policy] = field(default_factory=list)
    altered_policies: list[Policy] = field(default_factory=list)  # ours, as they should be
    shadows: list[Shadow] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.missing_sas or self.missing_policies or self.altered_policies or self.shadows
        )


def compare(
    expected_sas: Iterable[SA],
    expected_policies: Iterable[Policy],
    sas: Iterable[SA],
    policies: Iterable[Policy],
    ownership: Ownership = DEFAULT_OWNERSHIP,
) -> Drift:
    present = {sa_key(sa) for sa in sas}
    return compare_keys(expected_sas, expected_policies, present, policies, ownership)


def compare_keys(
    expected_sas: Iterable[SA],
    expected_policies: Iterable[Policy],
    present: set[SaKey],
    policies: Iterable[Policy],
    ownership: Ownership = DEFAULT_OWNERSHIP,
) -> Drift:
    """`compare` with the SAs present given by their keys (all that matches an SA)."""
    scan = PolicyScan(expected_policies, ownership)
    for p in policies:
        scan.add(p)
    return scan.drift(expected_sas, present)


_PRIORITY = struct.Struct("=I")

# What a print key leads to: our policy and its effect (None: not ours to own, decode), or
# a list of them when several of ours share a slot.
_Slot = tuple[Policy, bytes | None]


class PolicyScan:
    """What the comparison needs of the dumped policies, taken as they stream by: whether
    each of ours is there and the same, and the foreign ones under our selectors. The rest
    is dropped at once, so a dump of thousands of policies is never held (issue 15).

    The index of ours is the reconcile's memory peak, a few hundred bytes per policy: one
    bytes key each (identity and priority), the policy bare unless its slot is shared; the
    index by PolicyId that decoding needs is built only once a dumped policy needs it."""

    def __init__(self, expected: Iterable[Policy], ownership: Ownership) -> None:
        self.ownership = ownership
        self.expected = tuple(expected)
        self._prints: dict[bytes, _Slot | list[_Slot]] = {}
        for ours in self.expected:
            raw = policy_ops.request_message(ours)
            mine = policy_print(raw, 0, len(raw))
            if mine is not None:
                effect = mine.effect if ownership.owns_policy(ours) else None
                key = mine.identity + _PRIORITY.pack(mine.priority)
                cur = self._prints.get(key)
                if cur is None:
                    self._prints[key] = (ours, effect)
                elif isinstance(cur, list):
                    cur.append((ours, effect))
                else:
                    self._prints[key] = [cur, (ours, effect)]
        self._same: dict[int, bool] = {}  # id(ours): the last dumped in its slot is the same
        self._foreign: dict[PolicyId, list[Policy]] = {}  # not ours, under one of our ids
        self._ours: dict[tuple[PolicyId, int], list[Policy]] | None = None  # see _decoding
        self._ids: set[PolicyId] = set()

    def add_message(self, raw: bytes) -> None:
        """A dumped NEWPOLICY message: compared as bytes when it prints as ours at the same
        priority (at scale nearly all are), else decoded and compared field by field."""
        dumped = policy_print(raw, 0, len(raw))
        if dumped is None or not self._settled(dumped):
            self.add(policy_ops.decode_policy_message(raw))

    def _settled(self, dumped: PolicyPrint) -> bool:
        slot = self._prints.get(dumped.identity + _PRIORITY.pack(dumped.priority))
        if slot is None:
            return False
        slots = slot if isinstance(slot, list) else (slot,)
        if any(effect != dumped.effect for _, effect in slots):
            return False  # another effect, or not owned (effect None): decode
        for ours, _ in slots:
            self._same[id(ours)] = True
        return True

    def _decoding(self) -> tuple[dict[tuple[PolicyId, int], list[Policy]], set[PolicyId]]:
        """Ours by (id, priority), and our ids, for policies compared decoded."""
        if self._ours is None:
            self._ours, self._ids = {}, set()
            for ours in self.expected:
                pid = ours.id
                self._ours.setdefault((pid, ours.priority), []).append(ours)
                self._ids.add(pid)
        return self._ours, self._ids

    def add(self, p: Policy) -> None:
        ours_by_slot, ids = self._decoding()
        pid = p.id
        for ours in ours_by_slot.get((pid, p.priority), ()):
            self._same[id(ours)] = same_policy(p, ours)
        if pid in ids and not self.ownership.owns_policy(p):
            self._foreign.setdefault(pid, []).append(p)

    def drift(self, expected_sas: Iterable[SA], present: set[SaKey]) -> Drift:
        drift = Drift()
        drift.missing_sas = [sa for sa in expected_sas if sa_key(sa) not in present]
        for ours in self.expected:
            same = self._same.get(id(ours))
            if same is None:
                drift.missing_policies.append(ours)
            elif not same:
                drift.altered_policies.append(ours)
            if self._foreign and (theirs := self._foreign.get(ours.id)):
                drift.shadows += [Shadow(ours, p) for p in theirs if p.priority < ours.priority]
        return drift


async def reconcile(
    conn: Connection,
    expected_sas: Iterable[SA],
    expected_policies: Iterable[Policy],
    ownership: Ownership = DEFAULT_OWNERSHIP,
) -> Drift:
    """Dump the SAD and the SPD once each and compare them with what we installed."""
    present = {key async for key in sa_ops.dump_sa_keys(conn)}
    scan = PolicyScan(expected_policies, ownership)
    async for raw in policy_ops.dump_policy_messages(conn):
        scan.add_message(raw)
    return scan.drift(expected_sas, present)
