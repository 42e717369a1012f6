#!/usr/bin/env python3
"""Start-up cost of the commands users and scripts run most: median wall time over `--runs`
fresh processes of a bare interpreter, `xfrmctl --help`, a client command (`status`, against a
socket that does not exist, so only the CLI's own start is measured), the daemon's imports, and
`xfrmctl daemon` up to reading its configuration (a file that does not exist: the CLI and
every import the daemon makes before it serves), `xfrmctl check` of a small configuration (one
PSK connection: what the systemd unit's ExecStartPre and Ansible's template validation run),
and `daemon_ready`: `xfrmctl daemon` with that configuration, started, stopped by SIGTERM as
soon as it logs "xfrmctl daemon ready" (its configuration, kernel glue, IKE and control
sockets; the stop right after ready is included). `daemon_ready` runs in a private network
namespace of an unprivileged user namespace (`unshare -rn`: no root, no host kernel state),
with the real XFRM netlink glue.

Every lab scenario starts dozens of these, and under the lab's emulation each costs about 15
times what it costs here: this is the figure that moves the CI time. Run it on the host, or in
the guest with `integration/lab.py exec -- .venv/bin/python bench/startup.py`.

xfrmctl is byte-compiled first, as `integration/lab.py` does before a guest boots: where
PYTHONDONTWRITEBYTECODE is set (the lab exports it; so may a CI host), no process would write
its .pyc files, and every start would compile xfrmctl from source.

Beside the wall time, the median CPU time (user + system of the child) of the same runs: on a
host loaded by other work (a CI run, a lab guest) it moves far less than the wall time.

`--callgrind` instead runs each case once under valgrind's callgrind and prints its
instructions (millions): deterministic, where times move with the host's load.

Last line (machine-readable): `python_ms=M help_ms=M client_ms=M daemon_import_ms=M
daemon_start_ms=M check_ms=M daemon_ready_ms=M`, then the same names with `_cpu_ms` (with
`--callgrind`: `NAME_minstr=M`).
"""

from __future__ import annotations

import argparse
import compileall
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
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
READY = b"xfrmctl daemon ready"
SMALL_CONFIG = """\
settings:
  socket: {dir}/xfrmctl.sock
  log_level: info
  port: 10500
  port_nat_t: 14500
connections:
  a:
    local_addrs: [127.0.0.1]
    remote_addrs: [127.0.0.2]
    proposals: [aes256gcm16-prfsha384-x25519]
    local: {{id: a.example.org, auth: psk}}
    remote: {{id: b.example.org, auth: psk}}
    psk_file: a.psk
    children:
      lan:
        local_ts: [10.1.0.0/16]
        remote_ts: [10.2.0.0/16]
        esp_proposals: [aes256gcm16]
        start_action: none
"""


def small_config(directory: Path) -> Path:
    """One PSK connection, start_action none, unprivileged ports, files under `directory`."""
    psk = directory / "a.psk"
    psk.write_text("bench-only-pre-shared-key-0123456789\n")
    psk.chmod(0o600)
    config = directory / "xfrmctl.yaml"
    config.write_text(SMALL_CONFIG.format(dir=directory))
    return config


def config_cases(directory: Path) -> dict[str, list[str]]:
    """The cases that read the small configuration in `directory`."""
    config = str(small_config(directory))
    socket = str(directory / "xfrmctl.sock")
    return {
        "check": [str(BIN / "xfrmctl"), "check", "--config", config],
        "daemon_ready": [
            *("unshare", "--user", "--map-root-user", "--net"),
            *(str(BIN / "xfrmctl"), "daemon", "--config", config, "--socket", socket),
        ],
    }


def run_once(argv: list[str]) -> tuple[subprocess.Popen[bytes], bytes]:
    """Start `argv`; a daemon is sent SIGTERM once it logs READY. Returns the child, reaped by
    the caller, and its stderr."""
    child = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=ROOT
    )
    assert child.stderr is not None
    err = b""
    for line in child.stderr:
        err += line
        if READY in line:
            child.send_signal(signal.SIGTERM)
    if "daemon" in argv and READY not in err and b"/nonexistent/" not in err:
        raise SystemExit(f"{argv}: never ready:\n{err.decode(errors='replace')}")
    return child, err


def median_ms(argv: list[str], runs: int) -> tuple[float, float]:
    """Median wall and CPU (user + system) milliseconds of `runs` fresh processes."""
    wall, cpu = [], []
    for _ in range(runs):
        start = time.perf_counter()
        child, _ = run_once(argv)
        _, _, usage = os.wait4(child.pid, 0)
        child.returncode = 0  # reaped here: Popen must not wait for it again
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((usage.ru_utime + usage.ru_stime) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def callgrind_minstr(argv: list[str]) -> float:
    """Instructions (millions) of one run of `argv` under callgrind (`unshare` execs the
    daemon in place, so its process is the one measured)."""
    valgrind = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    at = 4 if argv[0] == "unshare" else 0
    child, err = run_once([*argv[:at], *valgrind, *argv[at:]])
    child.wait()
    found = re.findall(rb"Collected : (\d+)", err)
    if not found:
        raise SystemExit(f"{argv}: no callgrind total:\n{err.decode(errors='replace')}")
    return int(found[-1]) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--callgrind", action="store_true", help="instructions, one run each")
    parser.add_argument("--only", help="comma-separated case names")
    args = parser.parse_args()
    compileall.compile_dir(ROOT / "xfrmctl", quiet=1)
    with tempfile.TemporaryDirectory(prefix="xfrmctl-startup-") as tmp:
        cases = CASES | config_cases(Path(tmp))
        if args.only:
            cases = {name: cases[name] for name in args.only.split(",")}
        if args.callgrind:
            minstr = {name: callgrind_minstr(argv) for name, argv in cases.items()}
            for name, value in minstr.items():
                print(f"{name:>14}: {value:8.1f} M instructions")
            print(" ".join(f"{name}_minstr={value:.1f}" for name, value in minstr.items()))
            return
        figures = {name: median_ms(argv, args.runs) for name, argv in cases.items()}
    for name, (wall, cpu) in figures.items():
        print(f"{name:>14}: {wall:7.0f} ms, CPU {cpu:5.0f} ms (medians of {args.runs})")
    print(
        " ".join(f"{name}_ms={wall:.0f}" for name, (wall, _) in figures.items()),
        " ".join(f"{name}_cpu_ms={cpu:.0f}" for name, (_, cpu) in figures.items()),
    )


if __name__ == "__main__":
    main()
