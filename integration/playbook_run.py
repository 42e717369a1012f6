"""ansible-playbook as the lab tests run it: this checkout's collection, a private
ANSIBLE_HOME, output streamed to a log in lab-out, and the recap parsed per host."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ANSIBLE = REPO / "ansible"
BIN = REPO / ".venv" / "bin"
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")

Recap = dict[str, dict[str, int]]


def ansible_env(home: Path) -> dict[str, str]:
    return dict(
        os.environ,
        PATH=f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        ANSIBLE_CONFIG=str(ANSIBLE / "ansible.cfg"),
        ANSIBLE_HOME=str(home),
        ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
        ANSIBLE_REMOTE_TEMP=str(home / "remote-tmp"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
    )


FAILED = "playbook failed: "


def stream_to_log(cmd: list[str], log: Path, env: dict[str, str]) -> str:
    """Run `cmd`, streaming its output to `log` with each line's seconds since the start (a
    slow run can be watched from the host, and the log shows which task took the time).
    Returns the output without the stamps, prefixed with FAILED if the exit code was not 0.
    No timeout of its own: the test's pytest timeout bounds it."""
    start = time.monotonic()
    lines: list[str] = []
    with log.open("w") as sink:
        sink.write(f"$ {' '.join(cmd)}\n")
        sink.flush()
        proc = subprocess.Popen(
            cmd, cwd=ANSIBLE, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            sink.write(f"[{time.monotonic() - start:7.1f}] {line}")
            sink.flush()
        code = proc.wait()
    out = "".join(lines)
    return out if code == 0 else f"{FAILED}exit {code}\n{out}"


def run_playbook(
    inventory: Path,
    log: Path,
    home: Path,
    secret: str,
    *args: str,
    prefix: tuple[str, ...] = (),
) -> tuple[Recap, str]:
    """Run site.yml (no wheel build: the lab has no network); fail on a non-zero exit or if
    `secret` appears anywhere in the output. `prefix` runs it through e.g. nsenter."""
    cmd = [*prefix, str(BIN / "ansible-playbook"), "-i", str(inventory)]
    cmd += ["-e", "xfrmctl_build_wheel=false", *args, "site.yml"]
    out = stream_to_log(cmd, log, ansible_env(home))
    assert secret not in out, "the pre-shared key was printed"
    assert not out.startswith(FAILED), out
    recap = {
        m.group(1): {"ok": int(m.group(2)), "changed": int(m.group(3))}
        for m in map(RECAP.match, out.splitlines())
        if m
    }
    return recap, out
