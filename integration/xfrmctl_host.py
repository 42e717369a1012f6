"""Run xfrmctl daemons in lab hosts and drive them through the real CLI (tests and demo):
`Xfrmctl` starts with its constructor; `Daemon` is started, killed and restarted explicitly.
Also the two-host PSK configuration the lifecycle scenarios share, and teardown checks."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from netlab import Host
from zygote import ForkedProcess, Zygote, exec_wanted

from xfrmctl.client import ControlClient

REPO = Path(__file__).resolve().parent.parent
XFRMCTL = str(REPO / ".venv" / "bin" / "xfrmctl")
PSK = "lab secret, not for production"


def write_psk(workdir: Path, name: str, secret: str = PSK) -> Path:
    """A PSK file with the permissions the daemon insists on (not world-readable)."""
    psk = workdir / f"{name}.psk"
    psk.write_text(secret + "\n")
    psk.chmod(0o600)
    return psk


class Daemon:
    """One xfrmctl daemon in one host, started by `spawn` and restartable (each run logs to its
    own file); ready when it logs so, since a killed daemon leaves its socket file behind."""

    def __init__(self, host: Host, workdir: Path, cfg: Path, cold: bool = False) -> None:
        self.host, self.workdir, self.cfg = host, workdir, cfg
        # cold: exec the console script as a user would, rather than fork the lab's zygote
        self.cold = cold or exec_wanted()
        # Unix sockets cannot live on the lab's 9p-shared folders: keep them in /run.
        self.sock = Path("/run/xfrmctl-lab") / f"{host.ns}.sock"
        self.runs = 0
        self.proc: subprocess.Popen[str] | ForkedProcess | None = None
        self.killed = False
        self.log = workdir / f"{host.name}-daemon.log"

    def spawn(self) -> Daemon:
        """Start a run; each run logs to its own file."""
        self.runs += 1
        self.killed = False
        self.log = self.workdir / f"{self.host.name}-daemon-{self.runs}.log"
        argv = ["daemon", "--config", str(self.cfg), "--socket", str(self.sock)]
        if self.cold:
            self.proc = self.host.popen(
                [XFRMCTL, *argv], stdout=self.log.open("w"), stderr=subprocess.STDOUT
            )
        else:
            self.log.write_text("")
            self.proc = self.host.adopt(Zygote.shared().spawn(self.host.ns, argv, self.log))
        return self

    def wait_ready(self) -> Daemon:
        deadline = time.monotonic() + 400  # Python starts slowly under TCG, more so on a busy host
        while "xfrmctl daemon ready" not in self.log.read_text():
            if self.proc is None or self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"daemon did not start:\n{self.log.read_text()}")
            time.sleep(0.2)
        return self

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = ["--socket", str(self.sock), *args]
        if self.cold:
            proc = self.host.run([XFRMCTL, *argv], check=False, timeout=180)
        else:
            proc = Zygote.shared().run(self.host.ns, argv, timeout=180)
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

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # `ip netns exec` execs the daemon, and a zygote's child is it
        self.proc.wait(timeout=30)
        self.killed = True

    def stop(self) -> int:
        """SIGTERM and its exit code; 0 after our own kill9, the crash's code if it died."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.terminate()
        code = self.proc.wait(timeout=60)
        return 0 if self.killed else code


class Xfrmctl(Daemon):
    """A daemon started by its constructor; `wait=False` returns at once (start several, then
    `wait_ready`): each start is seconds of Python imports under TCG, and the guest has two
    CPUs."""

    def __init__(
        self, host: Host, workdir: Path, cfg: Path, wait: bool = True, cold: bool = False
    ) -> None:
        super().__init__(host, workdir, cfg, cold)
        self.spawn()
        if wait:
            self.wait_ready()


def start_all(*daemons: Daemon) -> None:
    """Start daemons side by side: each costs seconds of interpreter start under TCG."""
    for d in daemons:
        d.spawn()
    for d in daemons:
        d.wait_ready()


def write_config(
    workdir: Path,
    name: str,
    me: str,
    peer: str,
    local_ts: str,
    remote_ts: str,
    mode: str = "transport",
    conn_extra: str = "",
    child_extra: str = "",
) -> Path:
    psk = workdir / f"{name}.psk"
    psk.write_text(PSK + "\n")
    psk.chmod(0o600)
    other = "b" if name == "a" else "a"
    cfg = workdir / f"{name}.yaml"
    conn = "".join(f"\n    {line}" for line in conn_extra.strip().splitlines())
    child = "".join(f"\n        {line}" for line in child_extra.strip().splitlines())
    cfg.write_text(f"""
connections:
  tun:
    local_addrs: ["{me}"]
    remote_addrs: ["{peer}"]
    proposals: [aes256gcm16-prfsha384-x25519]
    local: {{id: {name}.lab.example, auth: psk}}
    remote: {{id: {other}.lab.example, auth: psk}}
    psk_file: {psk}{conn}
    children:
      net:
        mode: {mode}
        local_ts: [{local_ts}]
        remote_ts: [{remote_ts}]
        esp_proposals: [aes256gcm16]{child}
""")
    return cfg


def assert_clean(*hosts: Host, traps: bool = False) -> None:
    for host in hosts:
        assert host.xfrm_state_text().strip() == "", host.xfrm_state_text()
        if not traps:
            assert host.xfrm_dir_policies() == "", host.xfrm_policy_text()


def stop_all(*daemons: Daemon) -> None:
    codes = [d.stop() for d in daemons]
    assert codes == [0] * len(daemons), [d.log.read_text()[-3000:] for d in daemons]
    for d in daemons:
        assert d.host.xfrm_state_text().strip() == "", d.host.xfrm_state_text()
        assert d.host.xfrm_policy_text().strip() == "", d.host.xfrm_policy_text()
