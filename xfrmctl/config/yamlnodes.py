"""YAML loading that remembers where every key and item was written.

PyYAML's events and nodes carry source marks; building plain values ourselves lets validation
errors say `xfrmctl.yaml:12: connections.site-b.children.lan.mode: ...`.

Two ways, one result: a plain document (no anchors, aliases, merge keys, tagged collections or
complex keys: every generated configuration) is built straight from the parser's events, one
pass and no node tree (a tree of 1000 connections holds ~16 MB that RSS never gives back, issue
15). Anything else, and every error, goes through `compose` and the nodes as before, so
messages and their lines do not depend on the way taken.

Positions are worked out when first asked for: `load_yaml` builds the values alone and leaves
the text with the SourceMap, which parses it again, recording, on its first `find` (a valid
file only asks when it has a warning). Recorded up front, the positions of 1000 connections
held ~5 KiB per connection through the whole reload, and the reload's peak is what the
daemon's RSS keeps (issue 15).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import (
    AliasEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

Loc = tuple[str | int, ...]

# Keys whose scalar values stay text exactly as written: YAML would read `psk: 0x1234` as 4660.
RAW_TEXT_KEYS = frozenset({"psk", "id"})

# Bounds for hostile or broken files: nesting (the parser and the builder recurse), and how far
# aliases may multiply the document ("billion laughs": nine levels of nine aliases are 9^9 nodes).
MAX_DEPTH = 64
MIN_NODE_BUDGET = 100_000
EXPANSION = 10  # values built per YAML event, at most, once past MIN_NODE_BUDGET

# libyaml's parser when PyYAML was built with it (PyPI's wheels are): the pure-Python one costs
# about 2 ms per connection, most of a `reload` of hundreds of connections (issue 15).
LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True)
class Position:
    """One per key and item of the configuration: thousands on a large reload, no __dict__."""

    file: Path
    line: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else str(self.file)


@dataclass(frozen=True)
class _Document:
    """A parsed document whose positions are still to be recorded."""

    text: str
    file: Path
    base: Loc
    names: frozenset[str] | None = None  # an include's: only these connections' positions


class SourceMap:
    """Where each value came from, keyed by its path in the merged document; positions are
    recorded from the documents' texts on first use (see the module's docstring)."""

    def __init__(self) -> None:
        self._positions: dict[Loc, Position] = {}
        self._pending: list[_Document] = []
        self._files: dict[str, Path] = {}  # included connections' files, by name

    def defer(self, text: str, file: Path, base: Loc) -> None:
        """Record `text`'s positions (a valid document, as `file`, under `base`) when asked."""
        self._pending.append(_Document(text, file, base))

    def include(self, other: SourceMap, file: Path, names: frozenset[str]) -> None:
        """Take the positions of connections `names` from `other`, an include file's map."""
        self._files.update(dict.fromkeys(names, file))
        self._pending += [_Document(d.text, d.file, d.base, names) for d in other._pending]
        self._positions.update(
            (loc, p) for loc, p in other._positions.items() if _named(loc, names)
        )

    @property
    def positions(self) -> dict[Loc, Position]:
        while self._pending:
            doc = self._pending.pop(0)
            found: dict[Loc, Position] = {}
            _load(doc.text, doc.file, found, doc.base)
            if doc.names is None:
                self._positions.update(found)
            else:
                self._positions.update((k, p) for k, p in found.items() if _named(k, doc.names))
        return self._positions

    def find(self, loc: Loc, default: Path) -> Position:
        """The position of `loc`, else of its nearest written ancestor."""
        positions = self.positions
        for cut in range(len(loc), -1, -1):
            found = positions.get(loc[:cut])
            if found is not None:
                return found
        return Position(default, 0)

    def file_of(self, loc: Loc, default: Path) -> Path:
        """The file that wrote `loc` (`find(loc).file`, without recording any position)."""
        name = _connection(loc)
        return default if name is None else self._files.get(name, default)


def _connection(loc: Loc) -> str | None:
    """The connection `loc` lies in, if any."""
    if len(loc) > 1 and loc[0] == "connections" and isinstance(loc[1], str):
        return loc[1]
    return None


def _named(loc: Loc, names: frozenset[str]) -> bool:
    return _connection(loc) in names


class YamlError(ValueError):
    """Unparseable YAML or a duplicate key, already placed at a file and line."""

    def __init__(self, position: Position, loc: Loc, message: str) -> None:
        super().__init__(message)
        self.position = position
        self.loc = loc
        self.message = message


def _mark_line(node: Node) -> int:
    return int(node.start_mark.line) + 1


@dataclass
class _Builder:
    """Plain values from composed nodes, within a budget of values built."""

    file: Path
    positions: dict[Loc, Position]
    budget: int
    ctor: SafeConstructor = field(default_factory=SafeConstructor)

    def scalar(self, node: Node, loc: Loc) -> Any:
        try:
            return self.ctor.construct_object(node, deep=True)
        except ConstructorError as exc:
            where = Position(self.file, _mark_line(node))
            raise YamlError(where, loc, f"YAML error: {exc.problem}") from None
        # PyYAML's constructors fail on tagged junk in these ways (`!!int info`: ValueError,
        # `!!timestamp yesterday`: AttributeError): each is the file's error, not ours.
        except (ValueError, TypeError, OverflowError, AttributeError, IndexError) as exc:
            tag = node.tag.rsplit(":", 1)[-1]
            raise YamlError(
                Position(self.file, _mark_line(node)),
                loc,
                f"{node.value!r} cannot be read as a YAML {tag}: {exc}",
            ) from None

    def build(self, node: Node, loc: Loc) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise YamlError(
                Position(self.file, _mark_line(node)),
                loc,
                "aliases expand the document beyond any configuration's size (an alias bomb?)",
            )
        return _build(self, node, loc)


def _build(b: _Builder, node: Node, loc: Loc) -> Any:
    file, positions, ctor = b.file, b.positions, b.ctor
    if isinstance(node, MappingNode):
        try:
            ctor.flatten_mapping(node)  # resolves `<<: *anchor` merge keys
        except ConstructorError as exc:
            at = Position(file, _mark_line(node))
            raise YamlError(at, loc, f"YAML error: {exc.problem}") from None
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = b.scalar(key_node, loc) if isinstance(key_node, ScalarNode) else None
            if not isinstance(key, str | int) or isinstance(key, bool):
                raise YamlError(
                    Position(file, _mark_line(key_node)),
                    loc,
                    f"mapping key {key!r} must be a name",
                )
            key = str(key)
            position = Position(file, _mark_line(key_node))
            if key in result:
                first = positions.get((*loc, key))
                where = f" (first given on line {first.line})" if first else ""
                raise YamlError(position, (*loc, key), f"duplicate key {key!r}{where}")
            positions[(*loc, key)] = position
            if key in RAW_TEXT_KEYS and isinstance(value_node, ScalarNode):
                result[key] = str(value_node.value)
            else:
                result[key] = b.build(value_node, (*loc, key))
        return result
    if isinstance(node, SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            positions[(*loc, index)] = Position(file, _mark_line(item))
            items.append(b.build(item, (*loc, index)))
        return items
    if isinstance(node, ScalarNode):
        return b.scalar(node, loc)
    raise YamlError(Position(file, _mark_line(node)), loc, "unsupported YAML node")


def _events(text: str, file: Path, base: Loc, loader: type[yaml.SafeLoader]) -> int:
    """Walk the event stream (no recursion) to refuse deep nesting before composing; returns
    the number of events, the measure of how large a document may become."""
    depth = count = 0
    for event in yaml.parse(text, Loader=loader):
        count += 1
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                line = int(event.start_mark.line) + 1 if event.start_mark else 0
                raise YamlError(
                    Position(file, line), base, f"nesting deeper than {MAX_DEPTH} levels"
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return count


def _parse(
    text: str, file: Path, base: Loc, loader: type[yaml.SafeLoader]
) -> tuple[int, Node | None]:
    events = _events(text, file, base, loader)
    return events, yaml.compose(text, Loader=loader)


class _NotPlain(Exception):
    """The document needs `compose` (or holds an error): the event builder gives up."""


_RESOLVER = Resolver()
_SPECIAL_KEY_TAGS = ("tag:yaml.org,2002:merge", "tag:yaml.org,2002:value")


def _scalar_node(event: yaml.ScalarEvent) -> ScalarNode:
    """The node `compose` would make of the event (the same tag resolution)."""
    tag = event.tag
    if tag is None or tag == "!":
        tag = _RESOLVER.resolve(ScalarNode, event.value, event.implicit)  # type: ignore[no-untyped-call]
    start: Any = event.start_mark  # libyaml's Mark or PyYAML's: the same fields
    end: Any = event.end_mark
    return ScalarNode(tag, event.value, start, end, style=event.style)


def _event_line(event: yaml.Event) -> int:
    return int(event.start_mark.line) + 1 if event.start_mark is not None else 0


# What an untagged or tagged scalar event constructs to, by (tag, implicit, style, text): a
# fleet's configuration repeats its keys and most values thousands of times, and resolving and
# constructing each again was most of a large reload's YAML time (issue 15). Only immutable
# results are kept, and errors never are.
_CACHED_TYPES = (str, int, float, bool, type(None), datetime.date, datetime.datetime, bytes)
_SCALARS_KEPT = 4096


@dataclass
class _EventBuilder:
    """Plain values straight from the event stream, as `_build` makes them from nodes."""

    b: _Builder
    next_event: Callable[[], Any]  # the parser's get_event: the next event, None past the end
    record: bool  # positions too (else every loc is the base's: errors go the compose way)
    known: dict[tuple[Any, ...], Any] = field(default_factory=dict)

    def tagged(self, event: Any, loc: Loc) -> tuple[str, Any]:
        """The event's resolved tag and value, as `_build` makes them from its node."""
        key = (event.tag, event.implicit, event.style, event.value)
        got = self.known.get(key)
        if got is not None:
            return got  # type: ignore[no-any-return]
        node = _scalar_node(event)
        try:
            got = node.tag, self.b.scalar(node, loc)
        finally:
            self.b.ctor.constructed_objects.clear()  # it would keep every node alive
        if type(got[1]) in _CACHED_TYPES and len(self.known) < _SCALARS_KEPT:
            self.known[key] = got
        return got

    def value(self, event: Any, loc: Loc, depth: int) -> Any:
        kind = type(event)
        if kind is AliasEvent or event.anchor is not None:
            raise _NotPlain
        if kind is ScalarEvent:
            return self.tagged(event, loc)[1]
        if event.tag not in (None, "!") or depth > MAX_DEPTH:
            raise _NotPlain
        if kind is MappingStartEvent:
            return self.mapping(loc, depth)
        if kind is SequenceStartEvent:
            return self.sequence(loc, depth)
        raise _NotPlain

    def mapping(self, loc: Loc, depth: int) -> dict[str, Any]:
        positions, file, next_event, result = self.b.positions, self.b.file, self.next_event, {}
        while type(event := next_event()) is not MappingEndEvent:
            if type(event) is not ScalarEvent or event.anchor is not None:
                raise _NotPlain
            tag, key = self.tagged(event, loc)
            if tag in _SPECIAL_KEY_TAGS:
                raise _NotPlain
            if type(key) is not str:
                if not isinstance(key, int) or isinstance(key, bool):
                    raise _NotPlain
                key = str(key)
            if key in result:
                raise _NotPlain
            here = loc
            if self.record:
                here = (*loc, key)
                positions[here] = Position(file, _event_line(event))
            event = next_event()
            if key in RAW_TEXT_KEYS and type(event) is ScalarEvent:
                if event.anchor is not None:
                    raise _NotPlain
                result[key] = str(event.value)
            else:
                result[key] = self.value(event, here, depth + 1)
        return result

    def sequence(self, loc: Loc, depth: int) -> list[Any]:
        positions, file, record = self.b.positions, self.b.file, self.record
        next_event = self.next_event
        items: list[Any] = []
        while type(event := next_event()) is not SequenceEndEvent:
            here = loc
            if record:
                here = (*loc, len(items))
                positions[here] = Position(file, _event_line(event))
            items.append(self.value(event, here, depth + 1))
        return items


def _from_events(text: str, file: Path, out: dict[Loc, Position] | None, base: Loc) -> Any:
    """The plain document's value, its positions added to `out` unless None; _NotPlain
    otherwise (and on any error, which the compose path then reports)."""
    positions: dict[Loc, Position] = {}
    # The parser's own get_event, not yaml.parse's generator around check_event/get_event: a
    # fleet's file is tens of thousands of events, each a generator resume and two calls more
    # (issue 15: YAML time -5% on the host, -15% profiled in the lab guest). Past the end it
    # returns None, which no step below accepts (AttributeError, TypeError: the compose path
    # then says why).
    parser = LOADER(text)
    next_event: Callable[[], Any] = parser.get_event
    try:
        next_event()  # StreamStartEvent
        event = next_event()
        if isinstance(event, yaml.StreamEndEvent):
            return None
        root = next_event()
        builder = _EventBuilder(
            _Builder(file, positions, MIN_NODE_BUDGET), next_event, record=out is not None
        )
        value = builder.value(root, base, 1)
        if not isinstance(next_event(), yaml.DocumentEndEvent) or not isinstance(
            next_event(), yaml.StreamEndEvent
        ):
            raise _NotPlain  # a second document: compose says so
    except (yaml.YAMLError, YamlError, AttributeError, TypeError) as exc:
        raise _NotPlain from exc
    finally:
        parser.dispose()
    if out is not None:
        out.setdefault(base, Position(file, _event_line(root)))
        out.update(positions)
    return value


def load_yaml(text: str, file: Path, out: SourceMap, base: Loc = ()) -> Any:
    """Parse one document, its positions under `base` left to `out`; raises YamlError."""
    value = _load(text, file, None, base)
    out.defer(text, file, base)
    return value


def _load(text: str, file: Path, out: dict[Loc, Position] | None, base: Loc) -> Any:
    try:
        return _from_events(text, file, out, base)
    except _NotPlain:
        return _from_nodes(text, file, {} if out is None else out, base)


def _from_nodes(text: str, file: Path, out: dict[Loc, Position], base: Loc) -> Any:
    """`compose`, then values from the nodes: any document, and every error placed."""
    try:
        try:
            events, node = _parse(text, file, base, LOADER)
        except yaml.YAMLError:
            if LOADER is yaml.SafeLoader:
                raise
            # libyaml counts columns in bytes and words problems its own way: errors are rare,
            # so the pure-Python parser says where, in characters, as it always has.
            events, node = _parse(text, file, base, yaml.SafeLoader)
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        line = text.count("\n", 0, exc.position) + 1
        col = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        what = (
            f"control character #x{exc.character:02x}"
            if isinstance(exc.character, int)
            else (f"character {exc.character!r}")
        )
        raise YamlError(
            Position(file, line), base, f"{what} at column {col} is not allowed"
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = int(mark.line) + 1 if mark is not None else 0
        problem = exc.problem or exc.context or "invalid YAML"
        raise YamlError(Position(file, line), base, f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise YamlError(Position(file, 0), base, f"YAML syntax error: {exc}") from None
    if node is None:
        return None
    out.setdefault(base, Position(file, _mark_line(node)))
    builder = _Builder(file, out, max(MIN_NODE_BUDGET, EXPANSION * events))
    return builder.build(node, base)
