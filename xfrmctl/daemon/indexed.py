"""`IndexedDict`: a dict whose subclass keeps indexes of its entries.

Contract: every entry that goes in or out (set, replace, delete, pop, clear) is reported to
the subclass (`_filed`, `_unfiled`, `_cleared`) before any other call can see the dict, so an
index the subclass keeps from these hooks always says what a scan of the entries would.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class IndexedDict(MutableMapping[K, V]):
    def __init__(self) -> None:
        self._items: dict[K, V] = {}

    def _filed(self, key: K, value: V) -> None:
        """`value` went in under `key`."""

    def _unfiled(self, key: K, value: V, replaced: bool) -> None:
        """`value` left `key` (`replaced`: a new value is filed under it next)."""

    def _cleared(self) -> None:
        """Every entry went at once."""

    def __getitem__(self, key: K) -> V:
        return self._items[key]

    def __setitem__(self, key: K, value: V) -> None:
        if key in self._items:
            self._unfiled(key, self._items[key], replaced=True)
        self._items[key] = value
        self._filed(key, value)

    def __delitem__(self, key: K) -> None:
        value = self._items.pop(key)
        self._unfiled(key, value, replaced=False)

    def __iter__(self) -> Iterator[K]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def clear(self) -> None:
        self._items.clear()
        self._cleared()
