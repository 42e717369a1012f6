#!/usr/bin/env python3
"""Setup rate of two whole daemons on loopback, driven the way an operator at scale would:
N connections (one /32<->/32 child each) brought up by concurrent `up` requests through the
control-socket handler, at most `--concurrency` outstanding. No root and no kernel ESP: each
daemon gets a kernel double (bench/kernel_doubles.py): a dict by default, or with `--glue`
the real XfrmGlue over a netlink double that records its batches. Both daemons share this
process, so the CPU figures are both sides summed.

Per N (100, 300, 1000; `--n` to choose), three phases, so that any per-SA cost growing with
the number of SAs shows as a fall-off: the setups; a rekey storm (every Child SA rekeyed at
once through the handler, as `xfrmctl rekey` per connection); the initiator's stop (DELETEs
answered by the responder, every pair removed). Then, unless `--no-memory`, the memory each
established IKE SA with one child holds (separate runs at the largest N: tracemalloc, and the
growth of RSS).
`--profile FILE` writes a cProfile of the largest N (FILE.setup, FILE.rekey, FILE.stop).

`--reload` takes the lab benchmark's path instead (bench/reload_setups.py): daemons built from
configuration files, the N connections added to the initiator's file and loaded by `reload`
with `start_action: start`, the responder in a child process: CPU ms per setup, RSS growth
and tracemalloc held per IKE SA, per side, the configuration included.

Last line (machine-readable): one `n=N setups_per_s=R cpu_ms_per_setup=C ...` group per N.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import ipaddress
import json
import logging
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import reload_setups
from kernel_doubles import MemoryKernel, RecordedGlue

from xfrmctl.daemon.core import Daemon
from xfrmctl.daemon.handler import DaemonHandler
from xfrmctl.daemon.kernel_glue import KernelGlue
from xfrmctl.ike.iana import ProtocolId
from xfrmctl.ike.proposals import parse_proposals
from xfrmctl.ike.settings import EndpointConfig
from xfrmctl.ike.spec import ChildSpec, ConnectionSpec, Identity, PskAuth, TsSpec

A = ipaddress.ip_address("127.0.0.1")
B = ipaddress.ip_address("127.0.0.2")
IKE = tuple(parse_proposals(["aes256gcm16-prfsha256-x25519"], ProtocolId.IKE))
ESP = tuple(parse_proposals(["aes256gcm16"], ProtocolId.ESP))
PSK = PskAuth(b"benchmark pre-shared key")
# One initiator address runs up to `concurrency` half-open SAs: lift the per-IP DoS limits
# (the lab benchmark does the same for charon), so the run measures setups, not cookies.
LIMITS = EndpointConfig(
    cookie_threshold=100_000, cookie_threshold_ip=100_000, block_threshold=100_000
)


def _host(i: int, side: int) -> str:
    return f"10.{side}.{i // 256}.{i % 256}/32"


def _conn(name: str, me: Any, peer: Any, port: int, local: str, remote: str) -> ConnectionSpec:
    child = ChildSpec(
        "net", (TsSpec(ipaddress.ip_network(local)),), (TsSpec(ipaddress.ip_network(remote)),), ESP
    )
    return ConnectionSpec(
        name,
        (me,),
        (peer,),
        Identity.parse(f"{'a' if me == A else 'b'}.example"),
        Identity.parse(f"{'b' if me == A else 'a'}.example"),
        PSK,
        IKE,
        (child,),
        remote_port=port,
    )


def specs(n: int, port_a: int, port_b: int) -> tuple[list[ConnectionSpec], list[ConnectionSpec]]:
    """Initiator: one connection per /32 pair. Responder: one connection whose /16s the
    initiator's /32s narrow, as a gateway serving many sites would configure."""
    ini = [_conn(f"c{i}", A, B, port_b, _host(i, 1), _host(i, 2)) for i in range(n)]
    resp = [_conn("any", B, A, port_a, "10.2.0.0/16", "10.1.0.0/16")]
    return ini, resp


@dataclass
class Phase:
    """One timed phase: wall seconds and CPU seconds of the process (both daemons)."""

    seconds: float = 0.0
    cpu_s: float = 0.0

    def ms_per(self, n: int) -> float:
        return self.cpu_s * 1000 / n


@dataclass
class Result:
    n: int
    setup: Phase
    rekey: Phase
    stop: Phase
    established: int
    rekeyed: int
    netlink: tuple[int, int] | None = None  # glue: (batches, requests) over all phases
    drift: int = 0  # glue: our own notifications taken for drift (must be 0)
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def setups_per_s(self) -> float:
        return self.n / self.setup.seconds

    @property
    def cpu_ms_per_setup(self) -> float:
        return self.setup.ms_per(self.n)


async def _progress(_: dict[str, Any]) -> None:
    pass


async def _timed(
    work: Callable[[], Awaitable[None]], prof: cProfile.Profile | None, path: str | None
) -> Phase:
    if prof is not None:
        prof.enable()
    cpu0, t0 = time.process_time(), time.perf_counter()
    await work()
    phase = Phase(time.perf_counter() - t0, time.process_time() - cpu0)
    if prof is not None and path is not None:
        prof.disable()
        prof.dump_stats(path)
    return phase


def _kernel(glue: bool) -> KernelGlue:
    return RecordedGlue() if glue else MemoryKernel()


async def start_pair(n: int, port: int, glue: bool) -> tuple[Daemon, Daemon, DaemonHandler]:
    ini_specs, resp_specs = specs(n, port, port + 2)
    a = Daemon(ini_specs, _kernel(glue), (port, port + 1), limits=LIMITS)
    b = Daemon(resp_specs, _kernel(glue), (port + 2, port + 3), limits=LIMITS)
    for d in (a, b):
        d.sockets._ipv6 = False
        await d.start()
    return a, b, DaemonHandler(a, lambda: ini_specs)


async def bring_up(handler: DaemonHandler, names: list[str], concurrency: int) -> None:
    sem = asyncio.Semaphore(concurrency)
    failures: list[str] = []

    async def one(name: str) -> None:
        async with sem:
            try:
                await handler.up(name, None, _progress)
            except Exception as exc:
                failures.append(f"{name}: {exc}")

    await asyncio.gather(*(one(name) for name in names))
    if failures:
        raise SystemExit(f"{len(failures)} up requests failed, first: {failures[0]}")


async def rekey_all(a: Daemon, b: Daemon, handler: DaemonHandler, names: list[str]) -> int:
    """Every Child SA rekeyed at once; returns how many pairs were replaced on both sides."""
    old_a, old_b = set(a.installed), set(b.installed)
    for name in names:
        await handler.rekey(name, None, False)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        left = (old_a & set(a.installed)) or (old_b & set(b.installed))
        if not left and len(a.installed) == len(names) == len(b.installed):
            break
        await asyncio.sleep(0.01)
    return len(names) - max(len(old_a & set(a.installed)), len(old_b & set(b.installed)))


async def stop_pair(a: Daemon, b: Daemon) -> None:
    """The initiator stops as on SIGTERM (the responder answers its DELETEs), then the
    responder with nothing left."""
    a.stop_timeout = 60.0
    await a.stop()
    b.stop_timeout = 0.0
    await b.stop()


async def run(n: int, concurrency: int, port: int, glue: bool, profile: str | None) -> Result:
    a, b, handler = await start_pair(n, port, glue)
    names = [f"c{i}" for i in range(n)]
    prof = cProfile.Profile() if profile else None

    def where(phase: str) -> str | None:
        return f"{profile}.{phase}" if profile else None

    setup = await _timed(lambda: bring_up(handler, names, concurrency), prof, where("setup"))
    established = min(len(a.installed), len(b.installed))
    rekeyed = 0

    async def storm() -> None:
        nonlocal rekeyed
        rekeyed = await rekey_all(a, b, handler, names)

    rekey = await _timed(storm, prof, where("rekey"))
    stop = await _timed(lambda: stop_pair(a, b), prof, where("stop"))
    result = Result(n, setup, rekey, stop, established, rekeyed)
    if isinstance(a.kernel, RecordedGlue) and isinstance(b.kernel, RecordedGlue):
        nl = (a.kernel.netlink, b.kernel.netlink)
        result.netlink = (sum(x.batches for x in nl), sum(x.requests for x in nl))
        result.drift = a.kernel.drift + b.kernel.drift
    return result


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def memory_per_ike_sa(n: int, concurrency: int, port: int, glue: bool, trace: bool) -> float:
    """Bytes held per established IKE SA with one Child SA, averaged over both daemons:
    with `trace`, what tracemalloc sees the SAs and their bookkeeping allocate and keep;
    without, the growth of the process's RSS (allocator slack included)."""
    a, b, handler = await start_pair(n, port, glue)
    names = [f"c{i}" for i in range(n)]
    await bring_up(handler, names[: min(concurrency, n)], concurrency)  # warm caches
    gc.collect()
    if trace:
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0] if trace else _rss()
    await bring_up(handler, names[min(concurrency, n) :], concurrency)
    await asyncio.sleep(0.2)  # late datagrams and kernel jobs
    gc.collect()
    held = (tracemalloc.get_traced_memory()[0] if trace else _rss()) - before
    tracemalloc.stop()
    grown = n - min(concurrency, n)
    for d in (a, b):
        d.stop_timeout = 0.0
        await d.stop()
    return held / (2 * grown)


def _line(r: Result) -> str:
    text = (
        f"N={r.n:5d}  {r.setups_per_s:7.1f} setups/s  {r.cpu_ms_per_setup:6.2f} CPU ms/setup"
        f"  rekey {r.rekey.seconds:5.2f} s {r.rekey.ms_per(r.n):6.2f} CPU ms/child"
        f"  stop {r.stop.seconds:5.2f} s {r.stop.ms_per(r.n):6.2f} CPU ms/SA"
    )
    if r.netlink is not None:
        text += f"  netlink {r.netlink[0] / r.n:.1f} batches {r.netlink[1] / r.n:.1f} req/setup"
    return text


def _fields(r: Result) -> str:
    return (
        f"n={r.n} setups_per_s={r.setups_per_s:.1f} cpu_ms_per_setup={r.cpu_ms_per_setup:.2f} "
        f"rekey_s={r.rekey.seconds:.2f} cpu_ms_per_rekey={r.rekey.ms_per(r.n):.2f} "
        f"stop_s={r.stop.seconds:.2f} cpu_ms_per_stop={r.stop.ms_per(r.n):.2f}"
    )


def _rss_in_fresh_process(n: int, concurrency: int, port: int, glue: bool) -> float:
    """RSS growth in a process of its own: here, the runs before left freed memory behind
    that the new SAs would reuse without growing RSS."""
    cmd = [sys.executable, __file__, "--rss-only", "--n", str(n), "--port", str(port)]
    cmd += ["--concurrency", str(concurrency)] + (["--glue"] if glue else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return float(out.split()[-1])


def _reload_run(args: argparse.Namespace, n: int, port: int, trace: bool) -> dict[str, Any]:
    """One N of the reload path, in fresh processes (initiator here, responder its child)."""
    cmd = [sys.executable, __file__, "--reload-side", "initiator", "--n", str(n)]
    cmd += ["--port", str(port), "--log-level", args.log_level, "--top", str(args.top)]
    cmd += ["--reconcile", str(args.reconcile)]
    cmd += (["--glue"] if args.glue else []) + (["--trace"] if trace else [])
    cmd += ["--profile", args.profile] if args.profile and n == max(args.n) and not trace else []
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out.splitlines()[-1])
    return result


def _reload_line(r: dict[str, Any], traced: dict[str, Any]) -> tuple[str, str]:
    n = r["n"]
    cpu = {side: r[side]["cpu_s"] * 1000 / n for side in ("initiator", "responder")}
    rss = {side: r[side]["rss"] / 1024 / n for side in ("initiator", "responder")}
    held = {side: traced[side]["traced"] / 1024 / n for side in ("initiator", "responder")}
    text = (
        f"N={n:5d}  {n / r['seconds']:7.1f} setups/s  CPU ms/setup {cpu['initiator']:5.2f} + "
        f"{cpu['responder']:5.2f} = {cpu['initiator'] + cpu['responder']:5.2f}  "
        f"KiB/IKE SA RSS {rss['initiator']:5.1f} / {rss['responder']:5.1f}  "
        f"held {held['initiator']:5.1f} / {held['responder']:5.1f} (initiator / responder)"
    )
    for side in ("initiator", "responder"):
        for line in traced[side]["top"]:
            text += f"\n  {side[:4]} {line}"
    fields = (
        f"n={n} setups_per_s={n / r['seconds']:.1f} "
        f"cpu_ms_per_setup={cpu['initiator'] + cpu['responder']:.2f} "
        f"cpu_ms_ini={cpu['initiator']:.2f} cpu_ms_resp={cpu['responder']:.2f} "
        f"rss_kib_ini={rss['initiator']:.1f} rss_kib_resp={rss['responder']:.1f} "
        f"held_kib_ini={held['initiator']:.1f} held_kib_resp={held['responder']:.1f}"
    )
    return text, fields


def reload_main(args: argparse.Namespace) -> None:
    print(
        f"reload path, kernel double: {'XfrmGlue over recorded netlink' if args.glue else 'dict'}"
    )
    fields = []
    for i, n in enumerate(sorted(args.n)):
        port = args.port + 10 * i
        r = _reload_run(args, n, port, False)
        traced = _reload_run(args, n, port + 5, True)
        text, f = _reload_line(r, traced)
        print(text, flush=True)
        fields.append(f)
    print(" ".join(fields))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[100, 300, 1000])
    ap.add_argument("--concurrency", type=int, default=64, help="outstanding up requests")
    ap.add_argument("--port", type=int, default=41000, help="first of 4 UDP ports per run")
    ap.add_argument("--glue", action="store_true", help="XfrmGlue over a recording netlink")
    ap.add_argument("--no-memory", action="store_true", help="skip the tracemalloc run")
    ap.add_argument("--profile", help="cProfile of the largest N to FILE.{setup,rekey,stop}")
    ap.add_argument("--rss-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--reload", action="store_true", help="the lab's path: config + reload")
    ap.add_argument("--log-level", default="info", help="--reload: the daemons' log level")
    ap.add_argument("--top", type=int, default=0, help="--reload: largest tracemalloc holders")
    ap.add_argument("--reconcile", type=float, default=0.0, help="--reload: drift interval, s")
    ap.add_argument("--reload-side", choices=["initiator", "responder"], help=argparse.SUPPRESS)
    ap.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.reload_side:
        side = (
            reload_setups.initiator if args.reload_side == "initiator" else reload_setups.responder
        )
        asyncio.run(side(args))
        return
    if args.reload:
        reload_main(args)
        return
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("xfrmctl").setLevel(logging.CRITICAL)
    if args.rss_only:
        n = max(args.n)
        print(asyncio.run(memory_per_ike_sa(n, args.concurrency, args.port, args.glue, False)))
        return
    print(f"kernel double: {'XfrmGlue over recorded netlink' if args.glue else 'dict'}")
    results = []
    for i, n in enumerate(sorted(args.n)):
        profile = args.profile if n == max(args.n) else None
        r = asyncio.run(run(n, args.concurrency, args.port + 10 * i, args.glue, profile))
        if r.established != n or r.rekeyed != n or r.drift:
            raise SystemExit(
                f"n={n}: {r.established} established, {r.rekeyed} rekeyed on both sides, "
                f"{r.drift} own notifications taken for drift"
            )
        print(_line(r), flush=True)
        results.append(r)
    tail = ""
    if not args.no_memory:
        n = max(args.n)
        port = args.port + 10 * len(args.n)
        rss = _rss_in_fresh_process(n, args.concurrency, port, args.glue)
        traced = asyncio.run(memory_per_ike_sa(n, args.concurrency, port + 5, args.glue, True))
        print(
            f"memory per IKE SA with one Child SA (N={n}): {traced / 1024:.1f} KiB held "
            f"(tracemalloc), {rss / 1024:.1f} KiB RSS growth"
        )
        tail = f" kib_per_ike_sa={traced / 1024:.1f} rss_kib_per_ike_sa={rss / 1024:.1f}"
    print(" ".join(_fields(r) for r in results) + tail)


if __name__ == "__main__":
    main()
