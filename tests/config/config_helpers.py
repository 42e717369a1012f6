"""Helpers to write configuration trees into a temporary directory."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from xfrmctl.config import ConfigIssue, check_config

Write = Callable[..., Path]


@pytest.fixture
def write(tmp_path: Path) -> Write:
    """write("xfrmctl.yaml", text, mode=0o644) -> path, dedenting the text."""

    def _write(name: str, text: str, mode: int = 0o644) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        path.chmod(mode)
        return path

    return _write


def errors_of(path: Path) -> list[str]:
    loaded, issues = check_config(path)
    errors = [str(i) for i in issues if not i.warning]
    assert (loaded is None) == bool(errors)
    return errors


def issues_of(path: Path) -> list[ConfigIssue]:
    return check_config(path)[1]


PSK_CONN = """
connections:
  site-b:
    local_addrs: [192.0.2.1]
    remote_addrs: [192.0.2.2]
    local: {id: gw-a.example.org, auth: psk}
    remote: {id: gw-b.example.org, auth: psk}
    psk_file: site-b.psk
    children:
      lan:
        local_ts: [10.1.0.0/16]
        remote_ts: [10.2.0.0/16]
"""
