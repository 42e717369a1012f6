"""The restart state file: IKE SA state handed from a stopping daemon to the next one.

Contract: `write` stores a JSON document root-only (0600) and atomically (temp file in the same
directory, fsync, rename, fsync of the directory), so a reader sees the whole file or none.
`take` reads it and removes it at once, whatever it holds, so keys never outlive one adoption;
it returns the document, or None with the one-line reason a clean start follows (missing,
unreadable, corrupt, other version, too old). The file lives in the RuntimeDirectory
(/run/xfrmctl, tmpfs), beside the control socket by default: it never reaches a disk.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VERSION = 1
MAX_AGE = 120.0  # seconds: a restart takes a few; an older file describes a stale world
FILE_NAME = "restart-state.json"


@dataclass(frozen=True)
class Taken:
    """What `take` found: the document, or why there is none to adopt."""

    data: dict[str, Any] | None
    reason: str


def default_path(socket_path: Path) -> Path:
    return socket_path.parent / FILE_NAME


def write(path: Path, data: dict[str, Any], wall: float) -> None:
    """Store `data` (with version and time added); raises OSError when it cannot."""
    doc = {"version": VERSION, "written_at": wall, **data}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o600)  # whatever the umask or an old temp file said
            json.dump(doc, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def take(path: Path, wall: float, max_age: float = MAX_AGE) -> Taken:
    """Read and remove the state file; `data` is None (and `reason` says why) if unusable."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Taken(None, f"no state file {path}")
    except OSError as exc:
        return Taken(None, f"state file {path} unreadable: {exc.strerror or exc}")
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return Taken(None, f"state file {path} corrupt: {exc}")
    if not isinstance(doc, dict):
        return Taken(None, f"state file {path} corrupt: not a JSON object")
    if doc.get("version") != VERSION:
        return Taken(None, f"state file {path} has version {doc.get('version')!r}, not {VERSION}")
    written = doc.get("written_at")
    if not isinstance(written, int | float):
        return Taken(None, f"state file {path} corrupt: no written_at")
    age = wall - written
    if age > max_age or age < -5.0:
        return Taken(None, f"state file {path} is {age:.0f} s old (limit {max_age:.0f} s)")
    return Taken(doc, f"state file {path} from {age:.1f} s ago")
