"""Relay a lab guest's console through a pipe, keep a copy, and stop a guest that has stalled.

Why a pipe: virtme-ng has QEMU open /proc/self/fd/1 and /proc/self/fd/2 by path, two chardevs
each. When the runner's stdout is a regular file (a CI log), every such open truncates it and
writes from an offset of its own: what the log held before the lab vanishes, the streams
overwrite each other, and the runner's own later lines leave a hole of NUL bytes. A pipe has no
offset. The copy in lab-out/guest-console.log keeps the whole console for a later look.

Why a watchdog: a guest in which no test starts or finishes, and which prints nothing, for
`stall_after` seconds has stopped (pytest-timeout would otherwise have failed the test long
before). Without it such a guest holds CI until CI's own limit, with nothing said of where. The
progress folder is written by stall_watch.py in the guest: one file per pytest worker, naming
the test it runs. Before it stops the guest, the watchdog says what QEMU and virtme-ng are doing
on this host: a QEMU that keeps its CPUs busy runs a guest that spins, an idle one a guest (or
an I/O path) that waits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, NamedTuple

CHUNK = 65536
POLL_S = 5.0
# Seconds without output or test progress before a suite's guest counts as stalled, unless
# XFRMCTL_LAB_STALL says otherwise (lab.py for the host's limit, stall_watch.py for the guest's).
STALL_DEFAULT_S = 1200.0
SAMPLE_S = 2.0  # how long a stall's host view watches the guest's processes


class Relay:
    """Copies a child's output to our stdout and a log file, noting when it last said anything."""

    def __init__(self, source: IO[bytes], copy: IO[bytes]) -> None:
        self.source, self.copy = source, copy
        self.last_output = time.time()  # wall clock, to compare with the progress files' mtimes
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        out = sys.stdout.buffer
        fd = self.source.fileno()
        while chunk := os.read(fd, CHUNK):
            self.last_output = time.time()
            for sink in (out, self.copy):
                with contextlib.suppress(OSError, ValueError):
                    sink.write(chunk)
                    sink.flush()


def last_progress(progress: Path) -> float:
    """Wall-clock time of the newest test start or finish any worker wrote (0 without any)."""
    with contextlib.suppress(OSError):
        return max((entry.stat().st_mtime for entry in os.scandir(progress)), default=0.0)
    return 0.0


def in_flight(progress: Path) -> list[str]:
    """The tests the workers had started and not finished, as `worker: node id (since)`."""
    lines = []
    with contextlib.suppress(OSError):
        for entry in sorted(os.scandir(progress), key=lambda e: e.name):
            if text := _read(entry.path).strip():
                lines.append(f"{entry.name}: {text}")
    return lines


def run(
    argv: list[str], env: Mapping[str, str], out: Path, stall_after: float | None
) -> tuple[int, bool]:
    """Run the guest; return its exit code and whether the watchdog stopped it."""
    progress = out / "progress"
    progress.mkdir(exist_ok=True)
    for stale in [*progress.iterdir(), out / "stall-report.txt"]:
        stale.unlink(missing_ok=True)
    with (out / "guest-console.log").open("wb") as copy:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,  # the watchdog's killpg reaches QEMU too
        )
        assert proc.stdout is not None
        relay = Relay(proc.stdout, copy)
        # The guest has a session of its own, out of reach of a Ctrl-C or a SIGTERM meant for
        # us: either ends the guest here, as it would have before, and never leaves QEMU behind.
        previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            stalled = _watch(proc, relay, progress, stall_after)
        finally:
            signal.signal(signal.SIGTERM, previous)
            _stop(proc)
        relay.thread.join(timeout=30)
    return proc.returncode, stalled


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _watch(
    proc: subprocess.Popen[bytes], relay: Relay, progress: Path, stall_after: float | None
) -> bool:
    while True:
        try:
            proc.wait(timeout=POLL_S)
            return False
        except subprocess.TimeoutExpired:
            pass
        if stall_after is None:
            continue
        if time.time() - max(relay.last_output, last_progress(progress)) < stall_after:
            continue
        running = in_flight(progress) or ["(no test had started)"]
        print(
            f"\nlab: the guest has printed nothing and no test has started or finished for "
            f"{stall_after:.0f} s; stopping it. In flight:\n  " + "\n  ".join(running),
            stall_report(progress.parent / "stall-report.txt"),
            "\nOn this host (a spinning QEMU is a busy guest; an idle one, a guest that waits):\n"
            + group_state(proc.pid, SAMPLE_S),
            file=sys.stderr,
            flush=True,
        )
        _stop(proc)
        return True


def group_state(pgid: int, sample_s: float) -> str:
    """Each process of the group: its state, where it waits, and the CPUs it kept busy."""
    before = {pid: _stat(pid) for pid in _members(pgid)}
    time.sleep(sample_s)
    lines = []
    for pid, first in before.items():
        now = _stat(pid)
        if first is None or now is None:
            continue
        busy = (now.cpu_ticks - first.cpu_ticks) / os.sysconf("SC_CLK_TCK") / sample_s
        wchan = _read(f"/proc/{pid}/wchan") or "-"
        threads = len(os.listdir(f"/proc/{pid}/task")) if os.path.isdir(f"/proc/{pid}/task") else 0
        lines.append(
            f"  {now.name} (pid {pid}): state {now.state}, {busy:.2f} CPUs busy over "
            f"{sample_s:.0f} s, waits in {wchan}, threads: {threads}"
        )
    return "\n".join(lines) or "  (no process left)"


def _members(pgid: int) -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        stat = _stat(int(name)) if name.isdigit() else None
        if stat is not None and stat.pgid == pgid:
            pids.append(int(name))
    return pids


class ProcStat(NamedTuple):
    """What /proc/PID/stat says that the host view needs."""

    name: str
    state: str
    cpu_ticks: int  # utime + stime
    pgid: int


def _stat(pid: int) -> ProcStat | None:
    text = _read(f"/proc/{pid}/stat")
    if not text:
        return None
    name, rest = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
    return ProcStat(name, rest[0], int(rest[11]) + int(rest[12]), int(rest[2]))


def _read(path: str | Path) -> str:
    """The file's text, or "" when it is gone or unreadable."""
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def stall_report(path: Path) -> str:
    text = _read(path)
    return f"\n{path}:\n{text}" if text else "\n(no stall report)"
