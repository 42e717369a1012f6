"""The restart state file: written 0600 and atomically, read once, refused when unusable."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from xfrmctl.daemon import state_file


def test_written_root_only_and_taken_once(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    old = os.umask(0)
    try:
        state_file.write(path, {"engine": {"x": 1}}, wall=1000.0)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temp file left
    taken = state_file.take(path, wall=1010.0)
    assert taken.data is not None and taken.data["engine"] == {"x": 1}
    assert not path.exists()  # keys do not outlive one adoption
    again = state_file.take(path, wall=1010.0)
    assert again.data is None and "no state file" in again.reason


def test_a_failed_write_leaves_the_old_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state_file.write(path, {"n": 1}, wall=1000.0)
    with pytest.raises(TypeError):
        state_file.write(path, {"n": object()}, wall=1000.0)
    assert json.loads(path.read_text())["n"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


@pytest.mark.parametrize(
    ("content", "wall", "reason"),
    [
        (b"{not json", 1000.0, "corrupt"),
        (b"[1, 2]", 1000.0, "not a JSON object"),
        (json.dumps({"version": 99, "written_at": 1000.0}).encode(), 1000.0, "version 99"),
        (json.dumps({"version": 1}).encode(), 1000.0, "no written_at"),
        (json.dumps({"version": 1, "written_at": 1000.0}).encode(), 1500.0, "500 s old"),
    ],
)
def test_unusable_files_are_refused_with_a_reason_and_removed(
    tmp_path: Path, content: bytes, wall: float, reason: str
) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    taken = state_file.take(path, wall=wall)
    assert taken.data is None and reason in taken.reason and str(path) in taken.reason
    assert not path.exists()


def test_default_path_is_beside_the_control_socket() -> None:
    path = state_file.default_path(Path("/run/xfrmctl/xfrmctl.sock"))
    assert path == Path("/run/xfrmctl/restart-state.json")
