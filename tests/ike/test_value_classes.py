"""Payloads, events, specs and revocation data share one equality, hash and repr
(`xfrmctl.ike.values.Value`) instead of the ones @dataclass generates per class: each must
behave exactly as the generated ones would. The reference is a subclass of each class on which
@dataclass does generate them."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from xfrmctl.ike import events, payloads, spec
from xfrmctl.ike.crypto import revocation_data
from xfrmctl.ike.values import Value

CLASSES = sorted(
    (
        cls
        for module in (payloads, events, spec, revocation_data)
        for cls in vars(module).values()
        if isinstance(cls, type) and issubclass(cls, Value) and dataclasses.is_dataclass(cls)
    ),
    key=lambda cls: cls.__qualname__,
)


def _generated(cls: type) -> type:
    """`cls` with the methods @dataclass generates for a frozen class (same fields)."""
    return dataclasses.dataclass(frozen=True)(type(cls.__name__, (cls,), {}))


def _args(cls: type, salt: str) -> dict[str, Any]:
    return {
        f.name: (f"{salt}{i}".encode() if i % 2 else f"{salt}{i}")
        for i, f in enumerate(dataclasses.fields(cls))
        if f.init
    }


def test_the_classes_are_found() -> None:
    names = {cls.__name__ for cls in CLASSES}
    assert {"NotifyPayload", "ChildSaReady", "Lifetimes", "Offer"} <= names
    assert "TrafficSelector" not in names  # hashed per packet: keeps its generated methods


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__qualname__)
def test_equality_hash_and_repr_are_the_generated_ones(cls: type) -> None:
    reference = _generated(cls)
    one, same, other = cls(**_args(cls, "a")), cls(**_args(cls, "a")), cls(**_args(cls, "b"))
    ref_one, ref_other = reference(**_args(cls, "a")), reference(**_args(cls, "b"))
    assert repr(one) == repr(ref_one)
    assert hash(one) == hash(same) == hash(ref_one)
    assert (one == same, one == other, one != same) == (True, ref_one == ref_other, False)
    assert one != ref_one  # another class, however equal its fields
    # A field: CPython 3.11's frozen slots classes (ChildSaReady...) raise TypeError, not
    # FrozenInstanceError, for a name that is no field (their __setattr__ names the class
    # before slots); neither changes the value.
    fields = dataclasses.fields(cls)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(one, fields[0].name if fields else "critical", True)


def test_keys_stay_out_of_repr() -> None:
    ready = events.ChildSaReady  # key fields are repr=False
    shown = repr(ready(**_args(ready, "k")))
    for f in dataclasses.fields(ready):
        if f.name.endswith(("_key_in", "_key_out")):
            assert f"{f.name}=" not in shown
