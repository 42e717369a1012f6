"""`daemon_setups.py --reload`: the lab benchmark's path (bench/tunnels.py, `run_xfrmctl`)
on the host. Each daemon runs from a YAML configuration file as `xfrmctl daemon` does, the
responder in a child process of its own, so that CPU time, RSS and tracemalloc are per side:

- the responder's file holds one connection whose /16s each initiator /32 narrows;
- the initiator's file starts with the lab's 11 idle connections; then N connections with
  one /32 <-> /32 child each and `start_action: start` are appended to it, and the control
  handler's `reload` is called (as `xfrmctl reload`): parse, validate, build the specs,
  start them;
- the interval runs until both sides hold N installed Child SA pairs, then 1 s more (as the
  lab waits before reading RSS).

Logging goes to a file at `--log-level` (the lab's daemons log at info to a file). The drift
reconcile runs every `--reconcile` seconds (default 0: never). The lab's daemons run it every
10 s, and their interval is longer than the host's by about the emulation's factor (~12), so
`--reconcile 1` stands for the lab. With `--glue` it dumps what the netlink double holds,
which then keeps the bodies it was sent (~2 KiB per pair, counted as the daemon's). A run is
one fresh process per N (RSS growth is only meaningful there). `trace` runs the same with
tracemalloc on both sides: what the interval allocated and still holds, per IKE SA, the
configuration included; `top` prints the largest holders, grouped by traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import gc
import json
import logging
import os
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernel_doubles import MemoryKernel, RecordedGlue

from xfrmctl.daemon.core import Daemon
from xfrmctl.daemon.handler import DaemonHandler
from xfrmctl.daemon.kernel_glue import KernelGlue
from xfrmctl.daemon.main import _load, freeze_startup_heap
from xfrmctl.daemon.specs import endpoint_config

INI, RESP = "127.0.0.1", "127.0.0.2"
IKE, ESP = "aes256gcm16-prfsha256-x25519", "aes256gcm16"
IDLE = [f"lat{j}" for j in range(5)] + [f"first{j}" for j in range(5)] + ["tput"]
SETTLE_S = 1.0  # the lab's pause between the last SA and reading RSS


@dataclass(frozen=True)
class Side:
    """What one daemon spent over the interval."""

    cpu_s: float
    rss: int  # growth, bytes
    traced: int  # tracemalloc growth held at the end, bytes (0 without tracing)
    top: list[str]


def _host(i: int, side: int) -> str:
    return f"10.{side}.{i // 256}.{i % 256}/32"


def _conn(name: str, me: str, peer: str, port: int, ts: tuple[str, str], start: bool) -> str:
    ids = ("ini.bench", "resp.bench") if me == INI else ("resp.bench", "ini.bench")
    return (
        f"  {name}:\n    local_addrs: [{me}]\n    remote_addrs: [{peer}]\n"
        f"    remote_port: {port}\n    proposals: [{IKE}]\n"
        f"    local: {{id: {ids[0]}, auth: psk}}\n    remote: {{id: {ids[1]}, auth: psk}}\n"
        f"    psk_file: bench.psk\n    children:\n      net:\n        mode: tunnel\n"
        f"        local_ts: [{ts[0]}]\n        remote_ts: [{ts[1]}]\n"
        f"        esp_proposals: [{ESP}]\n        start_action: {'start' if start else 'none'}\n"
    )


def write_config(path: Path, port: int, conns: list[str], reconcile: float) -> None:
    """The lab's settings (half-open limits lifted), on our own ports."""
    path.write_text(
        f"settings:\n  port: {port}\n  port_nat_t: {port + 1}\n  cookie_threshold: 100000\n"
        "  cookie_threshold_ip: 100000\n  block_threshold: 100000\n"
        f"  init_limit_half_open: 100000\n  reconcile_interval: {reconcile}\n"
        "connections:\n" + "".join(conns)
    )


def initiator_conns(n: int, port: int) -> list[str]:
    idle = [
        _conn(name, INI, RESP, port, (_host(60000 + j, 1), _host(60000 + j, 2)), False)
        for j, name in enumerate(IDLE)
    ]
    sites = [_conn(f"c{i}", INI, RESP, port, (_host(i, 1), _host(i, 2)), True) for i in range(n)]
    return idle + sites


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Meter:
    """CPU, RSS and (when tracing) tracemalloc of this process from `mark` to `read`."""

    def __init__(self, trace: bool, top: int, profile: str | None) -> None:
        self.trace, self.top = trace, top
        self.profile = cProfile.Profile() if profile else None
        self.profile_path = profile
        self._cpu = 0.0
        self._rss = 0
        self._traced = 0
        self._snap: tracemalloc.Snapshot | None = None

    def mark(self) -> None:
        gc.collect()
        if self.trace:
            tracemalloc.start(25 if self.top else 1)
            self._traced = tracemalloc.get_traced_memory()[0]
            self._snap = tracemalloc.take_snapshot() if self.top else None
        self._rss = _rss()
        if self.profile is not None:
            self.profile.enable()
        self._cpu = time.process_time()

    def read(self) -> Side:
        cpu = time.process_time() - self._cpu
        if self.profile is not None and self.profile_path:
            self.profile.disable()
            self.profile.dump_stats(self.profile_path)
        rss = _rss() - self._rss
        traced, top = 0, []
        if self.trace:
            gc.collect()
            traced = tracemalloc.get_traced_memory()[0] - self._traced
            if self._snap is not None:
                top = _top(tracemalloc.take_snapshot().compare_to(self._snap, "traceback"), self)
            tracemalloc.stop()
        return Side(cpu, rss, traced, top)


def _top(diffs: list[tracemalloc.StatisticDiff], meter: Meter) -> list[str]:
    lines = []
    for d in diffs[: meter.top]:
        frames = [f"{_short(f.filename)}:{f.lineno}" for f in reversed(d.traceback)]
        lines.append(f"{d.size_diff / 1024:9.1f} KiB {d.count_diff:7d}  " + " < ".join(frames[:8]))
    return lines


def _short(filename: str) -> str:
    """A frame's file relative to the package or the standard library."""
    for root in ("/xfrmctl/", "/site-packages/", "/lib/python3.11/"):
        if root in filename:
            return filename.rsplit(root, 1)[-1]
    return filename.rsplit("/", 1)[-1]


def _kernel(glue: bool, dumps: bool) -> KernelGlue:
    return RecordedGlue(dumps) if glue else MemoryKernel()


def _logging(path: Path, level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(levelname)s %(name)s: %(message)s",
        filename=str(path),
        force=True,
    )


async def _daemon(config: Path, glue: bool) -> tuple[Daemon, DaemonHandler]:
    """A daemon as `run_daemon` builds it (its reload reads the file again)."""
    specs, loaded = _load(config)
    s = loaded.settings
    kernel = _kernel(glue, s.reconcile_interval > 0)
    daemon = Daemon(specs, kernel, (s.port, s.port_nat_t), limits=endpoint_config(s))
    daemon.sockets._ipv6 = False
    daemon.drift.interval = s.reconcile_interval
    freeze_startup_heap()
    await daemon.start()
    return daemon, DaemonHandler(daemon, lambda: _load(config)[0])


async def responder(args: Any) -> None:
    """The child process: serve the responder, answer `mark`/`count`/`read`/`stop` lines."""
    work = Path(args.workdir)
    _logging(work / "responder.log", args.log_level)
    cfg = work / "responder.yaml"
    pair = ("10.2.0.0/16", "10.1.0.0/16")
    conns = [_conn("any", RESP, INI, args.port, pair, False)]
    write_config(cfg, args.port + 2, conns, args.reconcile)
    daemon, _ = await _daemon(cfg, args.glue)
    meter = Meter(args.trace, args.top, args.profile and f"{args.profile}.responder")
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print("ready", flush=True)
    while line := (await reader.readline()).decode().strip():
        if line == "mark":
            meter.mark()
            print("ok", flush=True)
        elif line == "count":
            print(len(daemon.installed), flush=True)
        elif line == "read":
            print(json.dumps(meter.read().__dict__), flush=True)
        elif line == "stop":
            break
    daemon.stop_timeout = 0.0
    await daemon.stop()


class Peer:
    """The responder child process, spoken to one line at a time."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def ask(self, line: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        return (await self.proc.stdout.readline()).decode().strip()


async def _spawn_responder(args: Any, work: Path) -> Peer:
    cmd = [sys.executable, str(Path(__file__).with_name("daemon_setups.py")), "--reload-side"]
    cmd += ["responder", "--workdir", str(work), "--port", str(args.port)]
    cmd += [
        "--log-level",
        args.log_level,
        "--top",
        str(args.top),
        "--reconcile",
        str(args.reconcile),
    ]
    cmd += (["--glue"] if args.glue else []) + (["--trace"] if args.trace else [])
    cmd += ["--profile", args.profile] if args.profile else []
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 24
    )  # the limit: a long --top is one line of JSON
    peer = Peer(proc)
    assert proc.stdout is not None
    if (await proc.stdout.readline()).decode().strip() != "ready":
        raise SystemExit("the responder did not start")
    return peer


async def initiator(args: Any) -> None:
    """One N: start both, reload N connections in, wait for 2N installed pairs, report."""
    n = max(args.n)
    with contextlib.ExitStack() as stack:
        # --workdir keeps the configurations and logs
        work = Path(args.workdir or stack.enter_context(tempfile.TemporaryDirectory()))
        (work / "bench.psk").write_text("benchmark pre-shared key\n")
        os.chmod(work / "bench.psk", 0o600)
        _logging(work / "initiator.log", args.log_level)
        peer = await _spawn_responder(args, work)
        cfg = work / "initiator.yaml"
        conns = initiator_conns(n, args.port + 2)
        write_config(cfg, args.port, conns[: len(IDLE)], args.reconcile)
        daemon, handler = await _daemon(cfg, args.glue)
        await asyncio.sleep(0.2)
        meter = Meter(args.trace, args.top, args.profile and f"{args.profile}.initiator")
        await peer.ask("mark")
        meter.mark()
        t0 = time.perf_counter()
        write_config(cfg, args.port, conns, args.reconcile)
        result = await handler.reload()
        assert len(result["added"]) == n, result
        deadline = time.monotonic() + 60 + 2 * n
        while len(daemon.installed) < n or int(await peer.ask("count")) < n:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(daemon.installed)} pairs installed of {n}")
            await asyncio.sleep(0.02)
        seconds = time.perf_counter() - t0
        await asyncio.sleep(SETTLE_S)
        ini = meter.read()
        resp = Side(**json.loads(await peer.ask("read")))
        await peer.ask("stop")
        await peer.proc.wait()
        daemon.stop_timeout = 0.0
        await daemon.stop()
    print(
        json.dumps(
            {"n": n, "seconds": seconds, "initiator": ini.__dict__, "responder": resp.__dict__}
        )
    )
