"""The event builder (plain documents, no node tree) and the compose path give the same values
and the same positions; anything else goes the compose way, whose errors are the contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from xfrmctl.config import yamlnodes
from xfrmctl.config.yamlnodes import SourceMap, YamlError, load_yaml

FILE = Path("/etc/xfrmctl/xfrmctl.yaml")

PLAIN = [
    "",
    "---\n",
    "settings:\n  port: 500\n  log_level: info\n",
    "connections:\n  a:\n    local_addrs: [192.0.2.1, '2001:db8::1']\n    psk: 0x1234\n"
    "    local: {id: 007, auth: psk}\n    children:\n      net:\n        local_ts:\n"
    "          - 10.0.0.0/8\n          - {network: 10.1.0.0/16, port: 53}\n",
    "a: [[1, [2, [3]]], {b: null, c: ~, d: yes, e: 1.5, f: 2026-12-06}]\n",
    "1: one\n2: two\n",
    "k: !!str 500\nid: !!int 5\n",
    "x: |\n  literal\n  text\ny: >\n  folded\n",
    # the same text in every style and tag, twice: what one constructs to is not another's
    "a: '1'\nb: 1\nc: \"1\"\nd: !!str 1\ne: 1\nf: '1'\ng: !!float 1\nh: [1, '1', yes, 'yes']\n",
]
NOT_PLAIN = [
    "a: &x [1]\nb: *x\n",
    "base: &b {p: 1}\nc:\n  <<: *b\n  q: 2\n",
    "a: !!map {b: 1}\n",
    "? [a, b]\n: 1\n",
    "yes: 1\n",
    "a: 1\na: 2\n",
    "=: 1\n",
    "a: 1\n---\nb: 2\n",
    "a: !!int info\n",
    "a: [\n",
    "a: " + "[" * 70 + "]" * 70 + "\n",
]


def _by_nodes(text: str) -> tuple[Any, dict[Any, Any]] | str:
    out: dict[Any, Any] = {}
    try:
        return yamlnodes._from_nodes(text, FILE, out, ("base",)), out
    except YamlError as exc:
        return f"{exc.position}: {exc.message}"


def _by_events(text: str) -> tuple[Any, dict[Any, Any]]:
    out: dict[Any, Any] = {}
    return yamlnodes._from_events(text, FILE, out, ("base",)), out


@pytest.mark.parametrize("text", PLAIN)
def test_plain_documents_build_the_same_from_events(text: str) -> None:
    assert _by_events(text) == _by_nodes(text)


@pytest.mark.parametrize("text", NOT_PLAIN)
def test_the_rest_is_left_to_compose_and_comes_out_the_same(text: str) -> None:
    with pytest.raises(yamlnodes._NotPlain):
        _by_events(text)
    out = SourceMap()
    try:
        got: Any = load_yaml(text, FILE, out, ("base",)), out.positions
    except YamlError as exc:
        got = f"{exc.position}: {exc.message}"
    assert got == _by_nodes(text)


def test_a_plain_configuration_never_composes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The way a large reload takes: no node tree at all."""

    def compose(*_: Any, **__: Any) -> None:
        raise AssertionError("composed")

    monkeypatch.setattr(yaml, "compose", compose)
    out = SourceMap()
    assert load_yaml(PLAIN[3], FILE, out)["connections"]["a"]["psk"] == "0x1234"
    assert out.positions[("connections", "a", "children", "net", "local_ts", 1)].line == 10


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=8), st.floats(allow_nan=False)
)
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(documents, st.sampled_from(["block", "flow"]))
def test_any_dumped_document_builds_the_same_both_ways(doc: Any, style: str) -> None:
    text = yaml.safe_dump(doc, default_flow_style=style == "flow", allow_unicode=True)
    try:
        assert _by_events(text) == _by_nodes(text)
    except yamlnodes._NotPlain:  # e.g. a key YAML reads back as a bool: compose's error
        assert isinstance(_by_nodes(text), str)


def test_positions_are_recorded_only_when_first_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """A valid file never needs them; a large reload held ~5 KiB per connection of them."""
    made: list[Any] = []
    real = yamlnodes.Position

    def counted(*args: Any) -> Any:
        made.append(args)
        return real(*args)

    monkeypatch.setattr(yamlnodes, "Position", counted)
    out = SourceMap()
    value = load_yaml(PLAIN[3], FILE, out)
    assert value["connections"]["a"]["children"]["net"]["local_ts"][0] == "10.0.0.0/8"
    assert made == []
    assert out.find(("connections", "a", "children", "net", "local_ts", 1), FILE).line == 10
    assert out.find(("connections", "a", "nowhere"), FILE).line == 2  # nearest written
    recorded: dict[Any, Any] = {}
    yamlnodes._from_events(PLAIN[3], FILE, recorded, ())
    assert made and out.positions == recorded


def test_an_include_lends_only_its_merged_connections_positions() -> None:
    main, inc = SourceMap(), SourceMap()
    load_yaml("connections:\n  a: {x: 1}\n", FILE, main)
    other = Path("/etc/xfrmctl/conf.d/b.yaml")
    load_yaml("connections:\n\n  a: {x: 2}\n  b:\n    x: 3\n", other, inc)
    main.include(inc, other, frozenset({"b"}))
    assert main.file_of(("connections", "b", "x"), FILE) == other
    assert main.file_of(("connections", "a", "x"), FILE) == FILE
    assert str(main.find(("connections", "b", "x"), FILE)) == f"{other}:5"
    assert str(main.find(("connections", "a", "x"), FILE)) == f"{FILE}:2"
