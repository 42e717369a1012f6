"""Whether a SIGTERM is a restart (keep the tunnels) or a stop (tear them down).

systemd sends the same SIGTERM for `systemctl stop` and `systemctl restart`. Two ways say
"restart": SIGUSR2 before the SIGTERM (explicit; what the Ansible role and tests use), or, under
systemd, a pending job of type `restart` on our own unit (`systemctl list-jobs`, which reaches
PID 1 over its root-only private socket: allowed under the unit's hardening, as connecting to a
socket is no write to the read-only /run). Anything unclear means a stop: tearing down is the
safe default, a wrongly kept tunnel would outlive its configuration.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

log = logging.getLogger("xfrmctl.daemon")

RESTART_JOBS = frozenset({"restart", "try-restart", "reload-or-restart", "try-reload-or-restart"})
QUERY_TIMEOUT = 3.0
ATTEMPTS = 3
LIST_JOBS = ("systemctl", "list-jobs", "--no-legend", "--plain", "--no-pager")


def own_unit(cgroup: str) -> str | None:
    """Our unit from /proc/self/cgroup (cgroup v2 `0::/system.slice/xfrmctl.service`)."""
    for line in cgroup.splitlines():
        path = line.rsplit(":", 1)[-1]
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if name.endswith(".service"):
            return name
    return None


def restart_pending(jobs: str, unit: str) -> bool:
    """Whether `systemctl list-jobs --no-legend --plain` lists a restart job for `unit`."""
    for line in jobs.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1] == unit and fields[2] in RESTART_JOBS:
            return True
    return False


async def systemd_restart_pending() -> bool:
    """Ask systemd whether our unit is being restarted; False when not under systemd or unsure."""
    if "INVOCATION_ID" not in os.environ:
        return False  # not started by systemd
    try:
        unit = own_unit(Path("/proc/self/cgroup").read_text())
    except OSError:
        unit = None
    if unit is None:
        return False
    for _ in range(ATTEMPTS):
        jobs = await _list_jobs()
        if jobs is None:
            continue
        if restart_pending(jobs, unit):
            return True
        log.info("systemd lists no restart job for %s: a stop", unit)
        return False
    log.warning("systemctl list-jobs was killed %d times: tearing down", ATTEMPTS)
    return False


async def _list_jobs() -> str | None:
    """systemctl's job list; "" when it cannot be had, None when systemd's stop killed the query.

    A stop or restart sends SIGTERM to every process of the unit's cgroup, and systemd reads the
    cgroup again until no new process turns up: a query forked in that window is killed with
    the rest. Asked again, it runs after systemd's sweep.
    """
    try:
        proc = await asyncio.create_subprocess_exec(
            *LIST_JOBS, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
    except OSError as exc:
        log.warning("cannot ask systemd whether this is a restart (%s): tearing down", exc)
        return ""
    try:
        out, err = await asyncio.wait_for(proc.communicate(), QUERY_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        log.warning("systemctl list-jobs did not answer in %.0f s: tearing down", QUERY_TIMEOUT)
        return ""
    if proc.returncode is not None and proc.returncode < 0:
        log.info("systemctl list-jobs was killed by signal %d: asking again", -proc.returncode)
        return None
    if proc.returncode:
        why = err.decode(errors="replace").strip().splitlines()
        log.warning(
            "systemctl list-jobs failed (exit %d%s): tearing down",
            proc.returncode,
            f": {why[0]}" if why else "",
        )
        return ""
    return out.decode(errors="replace")
