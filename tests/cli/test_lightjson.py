"""`xfrmctl.lightjson` gives what `json` gives (the CLI client's encoder and decoder without
importing json): the same text for any JSON-able value, the same value or a ValueError for
any text."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xfrmctl import lightjson

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN included (json reads NaN back as a float that equals nothing)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@given(values)
def test_dumps_writes_what_json_writes(value: Any) -> None:
    assert lightjson.dumps(value) == json.dumps(value)


@given(values, st.sampled_from(["", " ", "\n", " \t\r\n "]))
def test_loads_reads_back_what_json_reads(value: Any, space: str) -> None:
    text = space + json.dumps(value) + space
    assert _same(lightjson.loads(text), json.loads(text))


@given(st.text(max_size=30))
def test_loads_accepts_and_rejects_what_json_does(text: str) -> None:
    try:
        expected: Any = json.loads(text)
    except ValueError:
        with pytest.raises(ValueError):
            lightjson.loads(text)
        return
    assert _same(lightjson.loads(text), expected)


@pytest.mark.parametrize(
    "text", ["", " ", "{", "[1,]", "1 2", '{"a": 1}x', "\ufeff1", "nul", '"\\x"', "[1] [2]"]
)
def test_malformed_documents_are_value_errors(text: str) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        lightjson.loads(text)


def test_unserialisable_values_raise_json_s_type_error_and_leave_no_trace() -> None:
    shared: list[Any] = [1]
    with pytest.raises(TypeError, match="Object of type set is not JSON serializable"):
        lightjson.dumps([shared, {1, 2}])
    # A failed call must not leave `shared` marked as being encoded (a false "circular").
    assert lightjson.dumps([shared, shared]) == "[[1], [1]]"


def test_circular_values_are_refused_as_json_refuses_them() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference"):
        json.dumps(loop)
    with pytest.raises(ValueError, match="Circular reference"):
        lightjson.dumps(loop)
