"""`MultiMap`: key -> members (each with a value), in the order they were filed, for the
indexes the engine and the daemon keep per SA.

Contract: as a `dict[key, dict[member, value]]` (re-filing a member keeps its place; a key
without members is gone), but a key with one member, the usual case (one IKE SA per
connection, one pair per outbound SPI), holds a (member, value) tuple of 56 bytes instead of
a dict of about 200: thousands of SAs, several indexes each. `MemberMap` is the same without
values, a single member held bare.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
M = TypeVar("M", bound=Hashable)
V = TypeVar("V")
S = TypeVar("S")


class _Keys(Generic[K, S]):
    """What both maps answer of their keys alone (`S`: what a key holds)."""

    _map: dict[K, S]

    def __iter__(self) -> Iterator[K]:
        return iter(self._map)

    def __contains__(self, key: object) -> bool:
        return key in self._map

    def clear(self) -> None:
        self._map.clear()


class MultiMap(_Keys[K, tuple[M, V] | dict[M, V]], Generic[K, M, V]):
    def __init__(self) -> None:
        self._map = {}

    def put(self, key: K, member: M, value: V) -> None:
        cur = self._map.get(key)
        if cur is None or (isinstance(cur, tuple) and cur[0] == member):
            self._map[key] = (member, value)
        elif isinstance(cur, tuple):
            self._map[key] = {cur[0]: cur[1], member: value}
        else:
            cur[member] = value

    def remove(self, key: K, member: M) -> None:
        cur = self._map.get(key)
        if cur is None:
            return
        if isinstance(cur, tuple):
            if cur[0] == member:
                del self._map[key]
            return
        cur.pop(member, None)
        if len(cur) == 1:
            self._map[key] = next(iter(cur.items()))
        elif not cur:
            del self._map[key]

    def items(self, key: K) -> list[tuple[M, V]]:
        """The key's members and values, first filed first."""
        cur = self._map.get(key)
        if cur is None:
            return []
        return [cur] if isinstance(cur, tuple) else list(cur.items())

    def members(self, key: K) -> list[M]:
        return [m for m, _ in self.items(key)]

    def last(self, key: K) -> V | None:
        """The value of the member filed last, if any."""
        cur = self._map.get(key)
        if cur is None:
            return None
        return cur[1] if isinstance(cur, tuple) else next(reversed(cur.values()))

    def lasts(self) -> Iterator[tuple[K, V]]:
        """Every key with the value of its member filed last, in one pass (no lookups)."""
        for key, cur in self._map.items():
            yield key, (cur[1] if isinstance(cur, tuple) else next(reversed(cur.values())))


class MemberMap(_Keys[K, M | dict[M, None]], Generic[K, M]):
    """`MultiMap` without values (key -> members, in the order filed): a key with one member
    holds the member itself, not a (member, None) tuple of 56 bytes. Members must not be
    dicts (that is how several members are told from one)."""

    def __init__(self) -> None:
        self._map = {}

    def put(self, key: K, member: M) -> None:
        if key not in self._map:
            self._map[key] = member
            return
        cur = self._map[key]
        if isinstance(cur, dict):
            cur[member] = None
        elif cur != member:
            self._map[key] = {cur: None, member: None}

    def remove(self, key: K, member: M) -> None:
        if key not in self._map:
            return
        cur = self._map[key]
        if not isinstance(cur, dict):
            if cur == member:
                del self._map[key]
            return
        cur.pop(member, None)
        if len(cur) == 1:
            self._map[key] = next(iter(cur))
        elif not cur:
            del self._map[key]

    def members(self, key: K) -> list[M]:
        """The key's members, first filed first."""
        if key not in self._map:
            return []
        cur = self._map[key]
        return list(cur) if isinstance(cur, dict) else [cur]

    def last(self, key: K) -> M | None:
        """The member filed last, if any."""
        if key not in self._map:
            return None
        cur = self._map[key]
        return next(reversed(cur)) if isinstance(cur, dict) else cur

    def lasts(self) -> Iterator[tuple[K, M]]:
        """Every key with its member filed last, in one pass (no lookups)."""
        for key, cur in self._map.items():
            yield key, (next(reversed(cur)) if isinstance(cur, dict) else cur)
