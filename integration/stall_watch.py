"""Progress notes for the host's watchdog (guest_console.py), and a report when the suite stalls.

Each pytest process (every xdist worker, or the lone session) keeps one file in
$XFRMCTL_LAB_OUT/progress naming the test it runs, rewritten at each start and emptied at each
finish: the files' times tell the host the suite is moving, their text what was in flight. The
controlling process also watches them: when nothing has moved for `report_after()` seconds
(past pytest-timeout's limit, which should have failed a stuck test), it writes what the guest is
doing (processes and where they wait in the kernel, the kernel's last messages) to
stall-report.txt, which the host prints when it gives up on the guest. (A guest whose kernel
has stopped writes none, and that says something too.)
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from guest_console import STALL_DEFAULT_S, in_flight, last_progress

CHECK_EVERY_S = 30.0
PS_FIELDS = "pid,ppid,stat,wchan:28,etime,time,args"


def progress_dir() -> Path | None:
    base = os.environ.get("XFRMCTL_LAB_OUT")
    return Path(base) / "progress" if base else None


def report_after() -> float:
    """A while before the host's limit (XFRMCTL_LAB_STALL), so the report is out in time."""
    return float(os.environ.get("XFRMCTL_LAB_STALL", STALL_DEFAULT_S)) * 0.6


def _note(config: pytest.Config, text: str) -> None:
    folder = progress_dir()
    if folder is None or config.pluginmanager.has_plugin("dsession"):
        return  # xdist's controller hears every worker's hooks: the workers note their own
    worker = getattr(config, "workerinput", {}).get("workerid", "main")
    folder.mkdir(exist_ok=True)
    (folder / worker).write_text(text)


class StallWatch:
    """The hooks, registered as a plugin by conftest.py."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl
    def pytest_runtest_logstart(self, nodeid: str, location: Any) -> None:
        _note(self.config, f"{nodeid} (since {time.strftime('%H:%M:%S')})\n")

    @pytest.hookimpl
    def pytest_runtest_logfinish(self, nodeid: str, location: Any) -> None:
        _note(self.config, "")

    @pytest.hookimpl
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        folder = progress_dir()
        if folder is None or hasattr(self.config, "workerinput"):
            return
        folder.mkdir(exist_ok=True)
        threading.Thread(target=watch, args=(folder,), daemon=True).start()


def watch(folder: Path) -> None:
    moved = time.time()  # the session's start, then each note, then each report
    while True:
        time.sleep(CHECK_EVERY_S)
        try:
            moved = max(moved, last_progress(folder))
            if time.time() - moved >= report_after():
                report(folder)
                moved = time.time()
        except OSError:
            continue  # a note rewritten as we looked, or a full disk: the host still watches


def report(folder: Path) -> None:
    sections = [
        "in flight:\n" + "".join(f"  {line}\n" for line in in_flight(folder)),
        # Every process but the kernel's threads, with where each waits in the kernel.
        _run("ps", "-N", "--ppid", "2", "-p", "2", "--forest", "-o", PS_FIELDS),
        _run("sh", "-c", "dmesg | tail -n 40"),
    ]
    text = "\n\n".join(sections)
    target = folder.parent / "stall-report.txt"
    target.write_text(text + "\n")


def _run(*argv: str) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"$ {' '.join(argv)}: {exc}"
    return f"$ {' '.join(argv)}\n{done.stdout}{done.stderr}"
