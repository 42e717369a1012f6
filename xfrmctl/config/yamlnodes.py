"""YAML loading that remembers where every key and item was written.

PyYAML's `compose` keeps source marks on nodes; building plain values from the nodes ourselves
lets validation errors say `xfrmctl.yaml:12: connections.site-b.children.lan.mode: ...`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

Loc = tuple[str | int, ...]

# Keys whose scalar values stay text exactly as written: YAML would read `psk: 0x1234` as 4660.
RAW_TEXT_KEYS = frozenset({"psk", "id"})


@dataclass(frozen=True)
class Position:
    file: Path
    line: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else str(self.file)


@dataclass
class SourceMap:
    """Where each value came from, keyed by its path in the merged document."""

    positions: dict[Loc, Position] = field(default_factory=dict)

    def find(self, loc: Loc, default: Path) -> Position:
        """The position of `loc`, else of its nearest written ancestor."""
        for cut in range(len(loc), -1, -1):
            found = self.positions.get(loc[:cut])
            if found is not None:
                return found
        return Position(default, 0)


class YamlError(ValueError):
    """Unparseable YAML or a duplicate key, already placed at a file and line."""

    def __init__(self, position: Position, loc: Loc, message: str) -> None:
        super().__init__(message)
        self.position = position
        self.loc = loc
        self.message = message


def _mark_line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _build(node: Node, file: Path, loc: Loc, out: SourceMap, ctor: SafeConstructor) -> Any:
    if isinstance(node, MappingNode):
        ctor.flatten_mapping(node)  # resolves `<<: *anchor` merge keys
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = ctor.construct_object(key_node, deep=True)
            if not isinstance(key, str | int) or isinstance(key, bool):
                raise YamlError(
                    Position(file, _mark_line(key_node)),
                    loc,
                    f"mapping key {key!r} must be a name",
                )
            key = str(key)
            position = Position(file, _mark_line(key_node))
            if key in result:
                first = out.positions.get((*loc, key))
                where = f" (first given on line {first.line})" if first else ""
                raise YamlError(position, (*loc, key), f"duplicate key {key!r}{where}")
            out.positions[(*loc, key)] = position
            if key in RAW_TEXT_KEYS and isinstance(value_node, ScalarNode):
                result[key] = str(value_node.value)
            else:
                result[key] = _build(value_node, file, (*loc, key), out, ctor)
        return result
    if isinstance(node, SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            out.positions[(*loc, index)] = Position(file, _mark_line(item))
            items.append(_build(item, file, (*loc, index), out, ctor))
        return items
    if isinstance(node, ScalarNode):
        return ctor.construct_object(node, deep=True)
    raise YamlError(Position(file, _mark_line(node)), loc, "unsupported YAML node")


def load_yaml(text: str, file: Path, out: SourceMap, base: Loc = ()) -> Any:
    """Parse one document, recording positions under `base`; raises YamlError."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = int(mark.line) + 1 if mark is not None else 0
        problem = exc.problem or exc.context or "invalid YAML"
        raise YamlError(Position(file, line), base, f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise YamlError(Position(file, 0), base, f"YAML syntax error: {exc}") from None
    if node is None:
        return None
    out.positions.setdefault(base, Position(file, _mark_line(node)))
    try:
        return _build(node, file, base, out, SafeConstructor())
    except ConstructorError as exc:
        mark = exc.problem_mark
        line = int(mark.line) + 1 if mark is not None else 0
        raise YamlError(Position(file, line), base, f"YAML error: {exc.problem}") from None
