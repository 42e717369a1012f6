"""Run xfrmctl daemons in lab hosts and drive them through the real CLI (tests and demo)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from netlab import Host

from xfrmctl.client import ControlClient

REPO = Path(__file__).resolve().parent.parent
XFRMCTL = str(REPO / ".venv" / "bin" / "xfrmctl")


def write_psk(workdir: Path, name: str, secret: str = "lab secret, not for production") -> Path:
    """A PSK file with the permissions the daemon insists on (not world-readable)."""
    psk = workdir / f"{name}.psk"
    psk.write_text(secret + "\n")
    psk.chmod(0o600)
    return psk


class Xfrmctl:
    """One daemon in one host, driven through the real CLI."""

    def __init__(self, host: Host, workdir: Path, cfg: Path, wait: bool = True) -> None:
        """Start the daemon; `wait=False` returns at once (start several, then `wait_ready`):
        each start is seconds of Python imports under TCG, and the guest has two CPUs."""
        self.host = host
        # Unix sockets cannot live on the lab's 9p-shared folders: keep them in /run.
        self.sock = Path("/run/xfrmctl-lab") / f"{host.ns}.sock"
        self.log = workdir / f"{host.name}-daemon.log"
        self.proc = host.popen(
            [XFRMCTL, "daemon", "--config", str(cfg), "--socket", str(self.sock)],
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
        )
        if wait:
            self.wait_ready()

    def wait_ready(self) -> Xfrmctl:
        deadline = time.monotonic() + 300  # Python starts slowly under TCG and load
        while not self.sock.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"daemon did not start:\n{self.log.read_text()}")
            time.sleep(0.2)
        return self

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = self.host.run([XFRMCTL, "--socket", str(self.sock), *args], check=False, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"xfrmctl {' '.join(args)} exited {proc.returncode}:\n"
                f"{proc.stdout}\n{proc.stderr}\n{self.log.read_text()}"
            )
        return proc

    def status(self) -> dict[str, Any]:
        """The report `xfrmctl status --json` prints, read over the control socket from this
        process: the CLI costs a Python start (seconds under TCG) and is tested on its own."""
        return ControlClient(self.sock).call("status", {"name": None})

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)
