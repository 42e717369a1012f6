"""ansible-playbook as the lab tests run it: this checkout's collection, a private
ANSIBLE_HOME, output streamed to a log in lab-out, and the recap parsed per host."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ANSIBLE = REPO / "ansible"
BIN = REPO / ".venv" / "bin"
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")

Recap = dict[str, dict[str, int]]
HEADER = re.compile(r"^(?:TASK|RUNNING HANDLER) \[(?:[\w.]+ : )?(.+?)\] \**$")


def changed_tasks(out: str) -> list[str]:
    """Names of the tasks and handlers that reported `changed` in a playbook's output."""
    names: list[str] = []
    current = ""
    for line in out.splitlines():
        header = HEADER.match(line)
        if header:
            current = header.group(1)
        elif line.startswith("changed:") and current not in names:
            names.append(current)
    return names


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
    with log.open("w") as sink:  # streamed: a slow run can be watched from the host
        sink.write(f"$ {' '.join(cmd)}\n")
        sink.flush()
        proc = subprocess.run(
            cmd,
            cwd=ANSIBLE,
            env=ansible_env(home),
            stdout=sink,
            stderr=subprocess.STDOUT,
            timeout=1500,
        )
    out = log.read_text()
    assert secret not in out, "the pre-shared key was printed"
    assert proc.returncode == 0, out
    recap = {
        m.group(1): {"ok": int(m.group(2)), "changed": int(m.group(3))}
        for m in map(RECAP.match, out.splitlines())
        if m
    }
    return recap, out
