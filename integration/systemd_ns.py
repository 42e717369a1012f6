"""A real systemd, as PID 1 of private PID, mount and network namespaces inside the lab guest.

The lab guest's own init is virtme-ng's, not systemd, so the shipped unit (Type=notify,
hardening, ExecReload) and the Ansible role's systemd path need a systemd of their own. This
one gets a private tmpfs on /run, so the units, configuration and secrets a test writes under
/run vanish with it, and a private network namespace, so the daemon it runs binds and installs
XFRM state there. Units that would touch shared state are masked: systemd-tmpfiles would empty
/tmp, which the guest shares with the test process (found the hard way on a host, where it
emptied the host's /tmp).

Other sysinit units (journald, sysctl, udev) still run; that is harmless in the throwaway
guest but not on a real host, so `start` refuses outside the lab unless told otherwise.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import time
from pathlib import Path

# Anything that cleans or mounts over directories the guest shares with the test process.
MASKED = (
    "systemd-tmpfiles-setup.service",
    "systemd-tmpfiles-setup-dev.service",
    "systemd-tmpfiles-setup-dev-early.service",
    "systemd-tmpfiles-clean.service",
    "systemd-tmpfiles-clean.timer",
    "tmp.mount",
)
TARGET = "xfrmctl-lab.target"
ALLOW_ENV = "XFRMCTL_SYSTEMD_NS_ON_HOST"


def refusal() -> str | None:
    """Why a systemd namespace must not start here, or None."""
    if not Path("/lib/systemd/systemd").exists():
        return "systemd is not installed (/lib/systemd/systemd)"
    if os.environ.get("XFRMCTL_IN_LAB") != "1" and os.environ.get(ALLOW_ENV) != "1":
        return (
            "outside the lab guest a second systemd would run sysinit units on this host; "
            f"set {ALLOW_ENV}=1 on a throwaway VM to allow it"
        )
    return None


def _boot_script() -> str:
    masks = " ".join(f"/run/systemd/system/{unit}" for unit in MASKED)
    target = "[Unit]\nDescription=xfrmctl lab target\nDefaultDependencies=no\n"
    return "\n".join(
        [
            "set -e",
            "mount -t tmpfs -o mode=0755 tmpfs /run",
            "mkdir -p /run/systemd/system",
            f"for unit in {masks}; do ln -s /dev/null $unit; done",
            f"printf %s {shlex.quote(target)} > /run/systemd/system/{TARGET}",
            "ip link set lo up",
            "exec env container=xfrmctl-lab /lib/systemd/systemd --system "
            f"--unit={TARGET} --log-target=kmsg",
        ]
    )


class SystemdNamespace:
    """systemd as PID 1 of fresh namespaces; commands run inside through nsenter."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0

    def start(self, timeout: float = 600) -> SystemdNamespace:
        reason = refusal()
        if reason is not None:
            raise RuntimeError(f"cannot start a systemd namespace: {reason}")
        self.proc = subprocess.Popen(
            [
                "unshare",
                "--pid",
                "--fork",
                "--kill-child",
                "--mount",
                "--propagation",
                "private",
                "--mount-proc",
                "--net",
                "--uts",
                "bash",
                "-c",
                _boot_script(),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"systemd namespace exited at start ({self.proc.returncode})")
            self.pid = self.pid or self._find_pid()
            if self.pid:
                state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
                if state in ("running", "degraded"):
                    return self
            time.sleep(1)
        raise RuntimeError(f"systemd did not come up within {timeout:.0f} s (state {state!r})")

    def _find_pid(self) -> int:
        """systemd is the child of unshare's forked child: look for it by its parent chain."""
        assert self.proc is not None
        for child in _children(self.proc.pid):
            for grandchild in [child, *_children(child)]:
                with contextlib.suppress(OSError):
                    if Path(f"/proc/{grandchild}/comm").read_text().strip() == "systemd":
                        return grandchild
        return 0

    def prefix(self, wd: Path | None = None) -> list[str]:
        """Entering a mount namespace resets the working directory to /: `wd` sets it."""
        cwd = [f"--wd={wd}"] if wd is not None else []
        return ["nsenter", "-t", str(self.pid), "-m", "-p", "-n", "-u", *cwd, "--"]

    def run(
        self, *cmd: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*self.prefix(), *cmd], capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"{shlex.join(cmd)} failed: {proc.stdout}{proc.stderr}")
        return proc

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run("systemctl", "show", unit, "-p", ",".join(props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def stop(self) -> None:
        """Killing PID 1 of a PID namespace kills every process in it."""
        if self.proc is None:
            return
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, 9)
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)
        self.proc = None


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]
