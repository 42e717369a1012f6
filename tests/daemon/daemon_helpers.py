"""Shared pieces of the daemon tests: a recording kernel, configs, daemons on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from typer.testing import CliRunner

from xfrmctl.cli import app
from xfrmctl.daemon.control import ControlServer
from xfrmctl.daemon.core import Daemon
from xfrmctl.daemon.handler import DaemonHandler
from xfrmctl.daemon.kernel_glue import ChildCounters, KernelEvent, KernelGlue
from xfrmctl.daemon.specs import build_specs
from xfrmctl.ike.events import ChildSaReady
from xfrmctl.ike.spec import ChildSpec, ConnectionSpec

# A range of 1000 ports per pytest-xdist worker (gw0, gw1, ...), so tests on parallel workers
# never share a port; the pid picks one of five such blocks, apart from other pytest runs.
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
BASE_PORT = 20000 + 1000 * (_WORKER % 8 + 8 * (os.getpid() % 5))
GRACE = 0.3  # the old inbound SA's grace after a rekey, shortened for tests
T = TypeVar("T")


class RecordingKernel(KernelGlue):
    """Keeps what a kernel would hold: inbound SAs (`sas`), outbound SAs, traps, in order."""

    def __init__(self, name: str = "", journal: list[tuple[str, str, int]] | None = None) -> None:
        self.name = name
        self.journal = journal if journal is not None else []
        self.sas: dict[int, ChildSaReady] = {}  # inbound SA present, by spi_in
        self.outbound: set[int] = set()  # spi_out of outbound SAs present
        self.log: list[tuple[str, int]] = []
        self.queue: asyncio.Queue[KernelEvent] = asyncio.Queue()
        self.traps: dict[int, tuple[str, str]] = {}
        self.fail_install: Exception | None = None
        self.delay = 0.0  # seconds each install takes, as netlink does on a slow machine
        self.stale_cleaned_after_traps: bool | None = None
        self.fail_remove: Exception | None = None  # e.g. the netns was deleted under us

    def _record(self, op: str, value: int) -> None:
        self.log.append((op, value))
        self.journal.append((self.name, op, value))

    def prepare_socket(self, sock: Any, family: int) -> None:
        pass

    async def cleanup_stale(self) -> int:
        self.stale_cleaned_after_traps = bool(self.traps)
        self._record("cleanup", 0)
        return 0

    async def install_trap(self, spec: ConnectionSpec, child: ChildSpec, reqid: int) -> None:
        self.traps[reqid] = (spec.name, child.name)
        self._record("trap", reqid)

    async def remove_traps(self, conn: str) -> None:
        for reqid, (name, _) in list(self.traps.items()):
            if name == conn:
                del self.traps[reqid]
                self._record("untrap", reqid)

    def trap_for_reqid(self, reqid: int) -> tuple[str, str] | None:
        return self.traps.get(reqid)

    async def install_child(self, ready: ChildSaReady, outbound: bool = True) -> None:
        if self.fail_install is not None:
            raise self.fail_install
        await asyncio.sleep(self.delay)
        self.sas[ready.spi_in] = ready
        self._record("install", ready.spi_in)
        if outbound:
            await self.install_outbound(ready)

    async def install_outbound(self, ready: ChildSaReady) -> None:
        self.outbound.add(ready.spi_out)
        self._record("install_out", ready.spi_out)

    async def remove_child(self, ready: ChildSaReady, inbound: bool = True) -> None:
        if self.fail_remove is not None:
            raise self.fail_remove
        self.outbound.discard(ready.spi_out)
        self._record("remove_out", ready.spi_out)
        if inbound:
            await self.remove_inbound(ready)

    async def remove_inbound(self, ready: ChildSaReady) -> None:
        self.sas.pop(ready.spi_in, None)
        self._record("remove", ready.spi_in)

    async def update_encap(self, ready: ChildSaReady) -> None:
        self.sas[ready.spi_in] = ready
        self._record("update_encap", ready.encap.remote_port if ready.encap else 0)

    async def counters(self, ready: ChildSaReady) -> ChildCounters:
        return ChildCounters(100, 1, 200, 2)

    async def remove_all(self) -> None:
        self._record("remove_all", 0)
        if self.fail_remove is not None:
            raise self.fail_remove
        self.sas.clear()
        self.outbound.clear()
        self.traps.clear()

    async def events(self) -> AsyncIterator[KernelEvent]:
        while True:
            yield await self.queue.get()


def write_config(
    tmp: Path,
    name: str,
    me: str,
    peer: str,
    my_port: int,
    peer_port: int,
    my_id: str,
    peer_id: str,
    esp: str = "aes256gcm16",
    conn_extra: str = "",
    child_extra: str = "",
) -> Path:
    psk = tmp / f"{name}.psk"
    psk.write_text("correct horse battery staple\n")
    psk.chmod(0o600)
    cfg = tmp / f"{name}.yaml"
    cfg.write_text(f"""
settings:
  port: {my_port}
  port_nat_t: {my_port + 1}
connections:
  tun:
    local_addrs: [{me}]
    remote_addrs: [{peer}]
    remote_port: {peer_port}
    local: {{id: {my_id}, auth: psk}}
    remote: {{id: {peer_id}, auth: psk}}
    psk_file: {psk}
{_indent(conn_extra, 4)}
    children:
      host:
        mode: transport
        esp_proposals: [{esp}]
{_indent(child_extra, 8)}
""")
    return cfg


def loopback_pair(
    tmp: Path, port: int, a_conn: str = "", a_child: str = "", b_child: str = ""
) -> tuple[Path, Path]:
    """Configs of daemon a (127.0.0.1, UDP `port`) and its peer b (127.0.0.2, `port` + 2);
    each test file takes its own port range so that no two tests share a socket."""
    a = write_config(
        tmp,
        "a",
        "127.0.0.1",
        "127.0.0.2",
        port,
        port + 2,
        "a.example",
        "b.example",
        conn_extra=a_conn,
        child_extra=a_child,
    )
    b = write_config(
        tmp,
        "b",
        "127.0.0.2",
        "127.0.0.1",
        port + 2,
        port,
        "b.example",
        "a.example",
        child_extra=b_child,
    )
    return a, b


def _indent(text: str, n: int) -> str:
    return "\n".join(" " * n + line for line in text.strip().splitlines())


async def make_daemon(
    cfg: Path, kernel: RecordingKernel | None = None
) -> tuple[Daemon, DaemonHandler, RecordingKernel]:
    from xfrmctl.config import load_config

    loaded = load_config(cfg)
    kernel = kernel or RecordingKernel()
    daemon = Daemon(build_specs(loaded), kernel, (loaded.settings.port, loaded.settings.port_nat_t))
    daemon.sockets._ipv6 = False
    daemon.rekeyed_inbound_grace = GRACE
    # Fast retransmissions keep the DPD and restart tests to seconds.
    daemon.engine.config = dataclasses.replace(daemon.engine.config, retransmit_timeout=0.5)
    await daemon.start()
    return daemon, DaemonHandler(daemon, lambda: build_specs(load_config(cfg))), kernel


def dead(daemon: Daemon) -> None:
    """What kill -9 looks like to the peer: no answer, no delete."""
    daemon.sockets.close()
    if daemon._timer is not None:
        daemon._timer.cancel()
        daemon._timer = None
    daemon.engine.handle_timer = lambda now: None  # type: ignore[method-assign]


async def until(check: Callable[[], bool], timeout: float = 10, what: str = "") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.02)


async def no_progress(message: dict[str, Any]) -> None:
    pass


@dataclasses.dataclass
class Served:
    """One daemon of `served_pair`, with its control socket."""

    daemon: Daemon
    handler: DaemonHandler
    kernel: RecordingKernel
    sock: Path


@contextmanager
def served_pair(a_cfg: Path, b_cfg: Path) -> Iterator[tuple[Served, Served]]:
    """Both daemons, each with its control socket, in a background loop: for tests that drive
    the CLI (synchronous) against real daemons. Sockets live in a short /tmp path (AF_UNIX's
    108-byte limit)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    short = Path(tempfile.mkdtemp(prefix="xs", dir="/tmp"))

    def run(coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(30)

    sides: list[Served] = []
    servers: list[ControlServer] = []
    try:
        for name, cfg in (("a", a_cfg), ("b", b_cfg)):
            daemon, handler, kernel = run(make_daemon(cfg))
            server = ControlServer(short / f"{name}.sock", handler)
            run(server.start())
            servers.append(server)
            sides.append(Served(daemon, handler, kernel, short / f"{name}.sock"))
        yield sides[0], sides[1]
    finally:
        for server in servers:
            run(server.close())
        for side in sides:
            run(side.daemon.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
        shutil.rmtree(short, ignore_errors=True)


_runner = CliRunner()


def cli(sock: Path, *args: str) -> tuple[int, str, str]:
    """`xfrmctl --socket SOCK ARGS...` in this process: exit code, stdout, stderr."""
    result = _runner.invoke(app, ["--socket", str(sock), *args])
    return result.exit_code, result.stdout, result.stderr
