"""One equality, hash and repr for the engine's many frozen dataclasses (payloads, events).

Contract: a dataclass declared `@dataclass(frozen=True, eq=False, repr=False)` that inherits
`Value` compares, hashes and prints as the dataclass would have generated it: equal only to an
instance of the very same class with equal `compare` fields, hashed over the fields a frozen
dataclass hashes, shown as `Name(field=value!r, ...)` without the `repr=False` fields (so keys
stay out of logs). Why: Python 3.11 compiles each generated method of each dataclass at import,
and the daemon pays that at every start (15 times over under the lab's emulation); these
methods are not on a hot path, so one shared version serves them all. Classes that are hashed
or sorted per packet (TrafficSelector) keep their generated methods.
"""

from __future__ import annotations

from dataclasses import fields


class Value:
    __slots__ = ()

    def _compared(self) -> tuple[object, ...]:
        return tuple(getattr(self, f.name) for f in fields(self) if f.compare)  # type: ignore[arg-type]

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__ or not isinstance(other, Value):
            return NotImplemented
        return self._compared() == other._compared()

    def __hash__(self) -> int:
        hashed = (f for f in fields(self) if (f.compare if f.hash is None else f.hash))  # type: ignore[arg-type]
        return hash(tuple(getattr(self, f.name) for f in hashed))

    def __repr__(self) -> str:
        shown = (f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr)  # type: ignore[arg-type]
        return f"{self.__class__.__qualname__}({', '.join(shown)})"
