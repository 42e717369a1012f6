"""JSON for the CLI's control-socket client without importing the `json` package.

Contract: `dumps(value)` returns exactly what `json.dumps(value)` returns, and `loads(text)`
exactly what `json.loads(text)` returns for a `str`, raising ValueError (json.JSONDecodeError
or another ValueError) where json.loads raises one; RecursionError alike (RFC 8259 documents;
tests/cli/test_lightjson.py compares both on generated values).

Why: `import json` imports `re` (and with it `enum`, `functools`, `collections`) and compiles
its regular expressions at every start: ~31 M instructions, more than the bare interpreter's
own 39 M, paid by every `xfrmctl up` (about 12 times slower under the lab's emulation). Both
directions are done by CPython's `_json` accelerator, the very code `json` uses; where it is
missing (another Python implementation), this module falls back on `json`.
"""

TYPE_CHECKING = False  # typing costs a few ms per start; mypy still reads the block below
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_SPACE = " \t\n\r"  # what json's decoder skips around a document (RFC 8259 section 2)


class _Defaults:
    """What `_json`'s scanner reads from a JSONDecoder: json.loads' defaults."""

    def __init__(self) -> None:
        self.strict = True
        self.object_hook = None
        self.object_pairs_hook = None
        self.parse_float = float
        self.parse_int = int
        constants = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": -float("inf")}
        self.parse_constant = constants.__getitem__


def _not_serialisable(value: object) -> "Any":
    """json.JSONEncoder.default: the same TypeError."""
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


def _accelerated() -> "tuple[Callable[[str, int], tuple[Any, int]], Callable[[Any], str]] | None":
    """The scanner and encoder json.loads/json.dumps build from `_json` with their defaults."""
    try:
        import _json
    except ImportError:  # pragma: no cover - CPython always has it
        return None
    # typeshed types the context as a scanner; json passes its JSONDecoder, we its defaults.
    scan = _json.make_scanner(_Defaults())  # type: ignore[arg-type]
    encode_str = _json.encode_basestring_ascii

    def dumps(value: "Any") -> str:
        if isinstance(value, str):
            return encode_str(value)
        # JSONEncoder.iterencode's arguments for json.dumps' defaults; a fresh circularity
        # memo each time, as json's (a failed call may leave entries in its own).
        encoder = _json.make_encoder(
            {}, _not_serialisable, encode_str, None, ": ", ", ", False, False, True
        )
        return "".join(encoder(value, 0))

    return scan, dumps


def _loads(scan: "Callable[[str, int], tuple[Any, int]]", text: str) -> "Any":
    start = len(text) - len(text.lstrip(_SPACE))
    try:
        value, end = scan(text, start)
    except StopIteration as exc:
        raise ValueError(f"Expecting value: char {exc.value}") from None
    if text[end:].strip(_SPACE):
        raise ValueError(f"Extra data: char {end}")
    return value


_FAST = _accelerated()


def loads(text: str) -> "Any":
    """json.loads(text) for a str."""
    if _FAST is None:  # pragma: no cover
        import json

        return json.loads(text)
    return _loads(_FAST[0], text)


def dumps(value: "Any") -> str:
    """json.dumps(value) with its defaults."""
    if _FAST is None:  # pragma: no cover
        import json

        return json.dumps(value)
    return _FAST[1](value)
