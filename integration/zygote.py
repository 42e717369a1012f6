"""Start xfrmctl daemons and CLI calls in lab hosts by forking one interpreter that has already
imported them.

Under software emulation a daemon's start is about 6.6 s of guest CPU, nearly all of it
imports (asyncio, pydantic and the configuration models, pyroute2, the engine), and a suite
run starts some 55 daemons: a sixth of the lab's CPU time (and 120 CLI calls at 0.66 s
each). A zygote per pytest worker imports
xfrmctl once; each start forks it, and the child does what `ip netns exec NS xfrmctl ...`
would: it enters the host's network namespace and a private mount namespace with that
namespace's /sys, gets a session of its own (so the teardown's `killpg` reaches it), points
stdin at /dev/null and stdout/stderr at the log, and runs the console script's entry point
with the same argv. What only the real exec path shows (the console script, a cold
interpreter, systemd's environment) stays covered by the systemd and Ansible scenarios and
the demo, which start the daemon themselves; XFRMCTL_LAB_EXEC=1 makes every scenario exec.

Protocol on the zygote's stdin/stdout: one JSON request per line ({"ns", "argv", "log",
"status"}), one reply line ({"pid"} or {"error"}). When a child exits, the zygote writes its
exit status (negative: the signal, as `subprocess` reports it) to the request's status file.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_REC = 0x4000
MS_SLAVE = 1 << 19
MNT_DETACH = 2


def exec_wanted() -> bool:
    """XFRMCTL_LAB_EXEC=1: start every daemon with a real exec, as before the zygote."""
    return os.environ.get("XFRMCTL_LAB_EXEC", "") not in ("", "0")


class ForkedProcess:
    """The parts of `subprocess.Popen` the lab uses, for a zygote's child."""

    def __init__(self, pid: int, argv: list[str], status: Path) -> None:
        self.pid, self.args, self.status = pid, argv, status
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            with contextlib.suppress(FileNotFoundError, ValueError):
                self.returncode = int(self.status.read_text())
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            time.sleep(0.05)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Zygote:
    """The client side, one per pytest worker (started on first use, gone with the worker)."""

    _instance: Zygote | None = None

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="xfrmctl-zygote-", dir="/run"))
        self.proc = subprocess.Popen(
            [sys.executable, __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        self._count = 0
        atexit.register(self.close)

    def close(self) -> None:
        """End the zygote (EOF on its requests) and remove its status files."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)

    @classmethod
    def shared(cls) -> Zygote:
        if cls._instance is None or cls._instance.proc.poll() is not None:
            cls._instance = cls()
        return cls._instance

    def _next_path(self, suffix: str) -> Path:
        """A file of its own in the zygote's folder."""
        self._count += 1
        return self.dir / f"{self._count}{suffix}"

    def spawn(
        self, ns: str, argv: list[str], log: Path, stderr: Path | None = None
    ) -> ForkedProcess:
        """Fork a child running `xfrmctl ARGV...` in namespace `ns`, writing to `log` (and its
        stderr there too unless `stderr` is given)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        status = self._next_path(".status")
        request = {"ns": ns, "argv": argv, "log": str(log), "status": str(status)}
        if stderr is not None:
            request["stderr"] = str(stderr)
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the lab's zygote exited ({self.proc.wait()})")
        reply = json.loads(line)
        if "error" in reply:
            raise AssertionError(f"zygote could not start {argv}: {reply['error']}")
        return ForkedProcess(int(reply["pid"]), ["xfrmctl", *argv], status)

    def run(self, ns: str, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        """`xfrmctl ARGV...` in namespace `ns` to completion, as `subprocess.run` would capture
        it; the child is killed if it outlives `timeout`."""
        out, err = self._next_path(".out"), self._next_path(".err")
        child = self.spawn(ns, argv, out, err)
        try:
            code = child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(10)
            raise
        result = subprocess.CompletedProcess(child.args, code, out.read_text(), err.read_text())
        for path in (out, err, child.status):
            path.unlink(missing_ok=True)
        return result


# --- the zygote process ---------------------------------------------------------------


def _libc_call(libc: Any, name: str, *args: object) -> None:
    if getattr(libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")


def _enter_namespace(ns: str) -> None:
    """What iproute2's netns_switch does: the namespace, a slave mount namespace, its /sys."""
    if Path("/etc/netns", ns).exists():
        raise OSError(f"/etc/netns/{ns} exists: its bind mounts need `ip netns exec`")
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        _libc_call(libc, "setns", fd, CLONE_NEWNET)
    finally:
        os.close(fd)
    _libc_call(libc, "unshare", CLONE_NEWNS)
    _libc_call(libc, "mount", b"", b"/", b"none", ctypes.c_ulong(MS_SLAVE | MS_REC), None)
    _libc_call(libc, "umount2", b"/sys", MNT_DETACH)
    _libc_call(libc, "mount", ns.encode(), b"/sys", b"sysfs", ctypes.c_ulong(0), None)


def _child(request: dict[str, Any]) -> None:
    """In the forked child: become the daemon; never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        log = os.open(request["log"], flags, 0o644)
        err = os.open(request["stderr"], flags, 0o644) if "stderr" in request else log
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(err, 2)
        os.closerange(3, 4096)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the child's own stdio
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        _enter_namespace(request["ns"])
        sys.argv = ["xfrmctl", *request["argv"]]
        from xfrmctl.fastcli import main

        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:
        print(f"zygote child failed: {exc!r}", file=sys.stderr)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def _reap(statuses: dict[int, str]) -> None:
    while True:
        try:
            pid, raw = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        path = statuses.pop(pid, None)
        if path is not None:
            code = -os.WTERMSIG(raw) if os.WIFSIGNALED(raw) else os.WEXITSTATUS(raw)
            tmp = f"{path}.tmp"
            Path(tmp).write_text(str(code))
            os.replace(tmp, path)


def _serve(requests: IO[str], replies: IO[str]) -> None:
    import selectors

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    statuses: dict[int, str] = {}
    sel = selectors.DefaultSelector()
    sel.register(requests, selectors.EVENT_READ)
    sel.register(wake_r, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            if key.fileobj == wake_r:
                os.read(wake_r, 512)
                _reap(statuses)
                continue
            line = requests.readline()
            if not line:
                return
            request = json.loads(line)
            pid = os.fork()
            if pid == 0:
                _child(request)
            statuses[pid] = request["status"]
            replies.write(json.dumps({"pid": pid}) + "\n")
            replies.flush()
        _reap(statuses)


def main() -> None:
    import gc

    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    import xfrmctl.commands
    import xfrmctl.config.loader
    import xfrmctl.daemon.main
    import xfrmctl.daemon.xfrm_glue
    import xfrmctl.fastcli  # noqa: F401

    gc.collect()
    gc.freeze()  # the children share these pages instead of copying them at their first GC
    _serve(sys.stdin, sys.stdout)


if __name__ == "__main__":
    main()
