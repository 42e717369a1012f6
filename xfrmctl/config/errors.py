"""Configuration problems placed at a file, line and key, and their translation from pydantic."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from xfrmctl.config.yamlnodes import Loc, Position


def dotted(loc: Loc) -> str:
    """`connections.site-b.local_ts[1]` from a location tuple."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass(frozen=True)
class ConfigIssue:
    """One problem; `warning` ones do not stop the configuration from loading."""

    position: Position
    loc: Loc
    message: str
    warning: bool = False

    def __str__(self) -> str:
        key = f"{dotted(self.loc)}: " if self.loc else ""
        level = "warning: " if self.warning else ""
        return f"{self.position}: {level}{key}{self.message}"


# The same problem (one message text) is shown this many times in a ConfigError's text, then
# counted: one secrets file shared by a fleet of 1000 connections is one problem, and the
# daemon and `reload` are not where to list it 1000 times (`xfrmctl check` lists every one).
SHOWN_PER_PROBLEM = 3


def summary(errors: list[ConfigIssue]) -> str:
    """Each error on a line, a problem repeated past SHOWN_PER_PROBLEM counted instead."""
    seen: dict[str, int] = {}
    lines = []
    for issue in errors:
        seen[issue.message] = seen.get(issue.message, 0) + 1
        if seen[issue.message] <= SHOWN_PER_PROBLEM:
            lines.append(str(issue))
    for message, count in seen.items():
        if count > SHOWN_PER_PROBLEM:
            lines.append(
                f"... and {count - SHOWN_PER_PROBLEM} more places with the same problem "
                f"({message.split(';')[0]}): `xfrmctl check` lists every one"
            )
    return "\n".join(lines)


class ConfigError(ValueError):
    """The configuration is invalid; `issues` holds every error found (and the warnings)."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__(summary([i for i in issues if not i.warning]))

    @property
    def errors(self) -> list[ConfigIssue]:
        return [i for i in self.issues if not i.warning]


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated/Optional/list/dict down to a model class, or None."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _unwrap(arg)
            if found is not None:
                return found
        return None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def allowed_keys(root: type[BaseModel], loc: Loc) -> list[str]:
    """Field names valid at `loc` (the mapping holding the unknown key)."""
    current: Any = root
    skip_next = False
    for part in loc:
        if skip_next:  # a dict key: the user's name for a connection or child
            skip_next = False
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(str(part))
        if field is None:
            return []
        annotation = field.annotation
        inner = annotation
        while typing.get_origin(inner) is typing.Annotated:
            inner = typing.get_args(inner)[0]
        if typing.get_origin(inner) is dict:
            skip_next = True
            current = _unwrap(typing.get_args(inner)[1])
        else:
            current = _unwrap(annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _describe(value: Any) -> str:
    kinds = {dict: "a mapping", list: "a list", bool: "a boolean", int: "a number", str: "text"}
    kind = kinds.get(type(value), type(value).__name__)
    if isinstance(value, dict | list):
        return kind
    return f"{kind} ({value!r})"


def pydantic_message(root: type[BaseModel], error: Any) -> tuple[Loc, str]:
    """Location and plain-words message for one pydantic error."""
    loc: Loc = tuple(error["loc"])
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if loc and loc[-1] == "[key]":
        loc = loc[:-1]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        known = allowed_keys(root, loc[:-1])
        import difflib  # start-up cost: only for a configuration with an unknown key

        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        valid = f" (valid keys: {', '.join(known)})" if known and not close else ""
        return loc, f"unknown key {key!r}{hint}{valid}"
    if kind == "missing":
        return loc, "required key is missing"
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return loc, f"{value!r} is not one of {expected}"
    if kind in ("value_error", "assertion_error"):
        return loc, str(ctx.get("error", error["msg"]))
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return loc, f"expected a mapping of keys, got {_describe(value)}"
    if kind == "list_type":
        return loc, f"expected a list (e.g. [a, b]), got {_describe(value)}"
    if kind in ("string_type",):
        return loc, f"expected text, got {_describe(value)}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return loc, f"expected a whole number, got {_describe(value)}"
    if kind in ("bool_type", "bool_parsing"):
        return loc, f"expected yes or no, got {_describe(value)}"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        words = {"ge": "at least", "le": "at most", "gt": "more than", "lt": "less than"}
        bounds = ", ".join(f"{words.get(k, k)} {v}" for k, v in ctx.items())
        return loc, f"{value!r} is out of range: must be {bounds or error['msg']}"
    return loc, f"{error['msg']} (got {_describe(value)})"
