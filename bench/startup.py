#!/usr/bin/env python3
"""Start-up cost of the commands users and scripts run most: median wall time over `--runs`
fresh processes of a bare interpreter, `xfrmctl --help`, a client command (`status`, against a
socket that does not exist, so only the CLI's own start is measured), the daemon's imports, and
`xfrmctl daemon` up to reading its configuration (a file that does not exist: the CLI and
every import the daemon makes before it serves).

Every lab scenario starts dozens of these, and under the lab's emulation each costs about 15
times what it costs here: this is the figure that moves the CI time. Run it on the host, or in
the guest with `integration/lab.py exec -- .venv/bin/python bench/startup.py`.

xfrmctl is byte-compiled first, as `integration/lab.py` does before a guest boots: where
PYTHONDONTWRITEBYTECODE is set (the lab exports it; so may a CI host), no process would write
its .pyc files, and every start would compile xfrmctl from source.

Beside the wall time, the median CPU time (user + system of the child) of the same runs: on a
host loaded by other work (a CI run, a lab guest) it moves far less than the wall time.

Last line (machine-readable): `python_ms=M help_ms=M client_ms=M daemon_import_ms=M
daemon_start_ms=M`, then the same names with `_cpu_ms`.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CASES = {
    "python": [sys.executable, "-c", "pass"],
    "help": [str(BIN / "xfrmctl"), "--help"],
    "client": [str(BIN / "xfrmctl"), "--socket", "/nonexistent/xfrmctl.sock", "status"],
    "daemon_import": [sys.executable, "-c", "import xfrmctl.daemon.main"],
    "daemon_start": [
        str(BIN / "xfrmctl"),
        *("daemon", "--config", "/nonexistent/xfrmctl.yaml", "--socket", "/nonexistent/x.sock"),
    ],
}


def median_ms(argv: list[str], runs: int) -> tuple[float, float]:
    """Median wall and CPU (user + system) milliseconds of `runs` fresh processes."""
    wall, cpu = [], []
    for _ in range(runs):
        start = time.perf_counter()
        child = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT
        )
        _, _, usage = os.wait4(child.pid, 0)
        child.returncode = 0  # reaped here: Popen must not wait for it again
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((usage.ru_utime + usage.ru_stime) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    compileall.compile_dir(ROOT / "xfrmctl", quiet=1)
    figures = {name: median_ms(argv, args.runs) for name, argv in CASES.items()}
    for name, (wall, cpu) in figures.items():
        print(f"{name:>14}: {wall:7.0f} ms, CPU {cpu:5.0f} ms (medians of {args.runs})")
    print(
        " ".join(f"{name}_ms={wall:.0f}" for name, (wall, _) in figures.items()),
        " ".join(f"{name}_cpu_ms={cpu:.0f}" for name, (_, cpu) in figures.items()),
    )


if __name__ == "__main__":
    main()
