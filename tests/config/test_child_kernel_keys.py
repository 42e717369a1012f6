"""Child keys for the kernel objects: `mark_in`/`mark_out` (swanctl VALUE[/MASK]) and
`ipcomp`; good values reach the spec, bad ones are errors naming the key."""

from __future__ import annotations

import pytest
from config_helpers import PSK_CONN, Write, errors_of

from xfrmctl.config import load_config
from xfrmctl.config.model import parse_mark
from xfrmctl.daemon.specs import build_specs
from xfrmctl.ike.spec import MarkSpec


def _conn(write: Write, child_extra: str) -> str:
    write("site-b.psk", "s3cret-s3cret\n", 0o600)
    anchor = "        remote_ts: [10.2.0.0/16]\n"
    return PSK_CONN.replace(anchor, anchor + child_extra, 1)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("42", (42, 0xFFFFFFFF)),
        ("0x2a", (42, 0xFFFFFFFF)),
        ("0x100/0xff00", (0x100, 0xFF00)),
        ("7/15", (7, 15)),
        (" 0x0/0x0 ", (0, 0)),
    ],
)
def test_marks_parse_as_swanctl_writes_them(text: str, want: tuple[int, int]) -> None:
    assert parse_mark(text) == want


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("%unique", "does not allocate marks"),
        ("%same", "does not allocate marks"),
        ("blue", "not VALUE[/MASK]"),
        ("1/", "not VALUE[/MASK]"),
        ("0x100000000", "does not fit 32 bits"),
        ("3/0x1", "bits outside mask"),
    ],
)
def test_bad_marks_say_why(write: Write, text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words.replace("[", r"\[")):
        parse_mark(text)
    for key in ("mark_in", "mark_out"):
        errors = errors_of(write(f"{key}.yaml", _conn(write, f"        {key}: '{text}'\n")))
        assert any(f"children.lan.{key}" in e and words in e for e in errors), errors


def test_marks_and_ipcomp_reach_the_child_spec(write: Write) -> None:
    extra = "        mark_in: 0x2a/0xff\n        mark_out: 43\n        ipcomp: yes\n"
    (spec,) = build_specs(load_config(write("x.yaml", _conn(write, extra))))
    (child,) = spec.children
    assert child.kernel.mark_in == MarkSpec(0x2A, 0xFF)
    assert child.kernel.mark_out == MarkSpec(43)
    assert child.ipcomp is True
    (plain,) = build_specs(load_config(write("y.yaml", _conn(write, "")))).pop().children
    assert plain.kernel.mark_in is None and plain.kernel.mark_out is None and not plain.ipcomp
