#!/usr/bin/env python3
"""What one `xfrmctl up NAME` costs, end to end, against two whole daemons (issue 15).

The lab's `up` latency and first-packet figures (bench/tunnels.py) are the sum of the CLI
process (its interpreter start, imports and printing), the initiating daemon's work from the
request to the reply, the responder's work, and the kernel's. Under the lab's emulation every
Python instruction costs ~12 times what it costs here, so the host's instruction and CPU
counts are what this measures, one `up` at a time as a user types it (no concurrency):

- daemon: `--ups` requests sent over the real control socket (ControlServer, DaemonHandler)
  to an initiator whose peer is a second daemon on loopback, both with `--glue` semantics
  (the real XfrmGlue over bench/kernel_doubles.py's recording netlink). Per `up`: CPU ms of
  both daemons from request to reply, IKE messages, netlink batches and requests (GETAE
  included), progress lines and reply bytes. It checks that both kernels hold the new Child
  SA (SAs and policies) when the reply arrives: the user expects the tunnel to carry traffic
  once `up` returns.
- client: `--runs` fresh `xfrmctl up NAME` processes (the console script) against the same
  daemons: wall ms and CPU ms of the child; with `--callgrind`, each under valgrind, its
  instructions (millions).

`--daemon-callgrind LOW,HIGH` instead runs this script twice under callgrind (LOW and HIGH
ups, no client) and prints the daemons' instructions per `up` (the difference over the
difference in ups): deterministic, where the CPU ms move with the host's load.
`--getae` (root) instead measures one GETAE request against the real kernel in a private
network namespace: what `up` asked twice per child before its reply, until issue 15.
`--profile FILE` writes a cProfile of the daemon phase. Last line (machine-readable):
`daemon_cpu_ms=M ike_messages=N netlink_batches=N netlink_requests=N client_wall_ms=M
client_cpu_ms=M [client_minstr=M]`.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import cProfile
import ipaddress
import json
import logging
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from daemon_setups import start_pair
from kernel_doubles import RecordedGlue

from xfrmctl.daemon.control import ControlServer
from xfrmctl.daemon.core import Daemon
from xfrmctl.kernel import sa as ksa
from xfrmctl.kernel.socket import Connection
from xfrmctl.kernel.types import SaId, SpiRange, SpiRequest

ROOT = Path(__file__).resolve().parent.parent
XFRMCTL = str(Path(sys.executable).parent / "xfrmctl")


@dataclass
class UpCost:
    """One `up` through the control socket, as the daemons and the netlink double saw it."""

    cpu_ms: float
    ike_messages: int
    batches: int
    requests: int
    lines: int
    reply_bytes: int


def _counts(a: Daemon, b: Daemon) -> tuple[int, int, int]:
    """IKE messages sent by both daemons, netlink batches and requests of both kernels."""
    kernels = [d.kernel for d in (a, b) if isinstance(d.kernel, RecordedGlue)]
    messages = a.stats.messages["out"] + b.stats.messages["out"]
    batches = sum(k.netlink.batches for k in kernels)
    return messages, batches, sum(k.netlink.requests for k in kernels)


def _held(daemon: Daemon, spi_in: int) -> bool:
    """Whether the daemon's kernel double holds both SAs and every policy of that pair."""
    kernel = daemon.kernel
    assert isinstance(kernel, RecordedGlue)
    child, nl = kernel._children.get(spi_in), kernel.netlink
    return (
        child is not None
        and child.inbound.id in nl.sas
        and child.outbound.id in nl.sas
        and all(p.id in nl.policies for p in child.policies)
    )


def _both_hold(a: Daemon, b: Daemon, name: str) -> bool:
    """Whether both kernels hold every Child SA pair of the initiator's connection `name`."""
    mine = a.installed.of_conn(name)
    peer = {e.ready.spi_out: e.ready.spi_in for e in b.installed.values()}
    return bool(mine) and all(
        _held(a, e.ready.spi_in) and e.ready.spi_in in peer and _held(b, peer[e.ready.spi_in])
        for e in mine
    )


async def one_up(path: str, name: str, a: Daemon, b: Daemon) -> UpCost:
    """Send `up NAME` as the CLI does and read to the final reply; the cost in between."""
    before, cpu0 = _counts(a, b), time.process_time()
    reader, writer = await asyncio.open_unix_connection(path, limit=1 << 20)
    request = {"id": 1, "command": "up", "args": {"name": name, "child": None}}
    writer.write(json.dumps(request).encode() + b"\n")
    lines, size = 0, 0
    while True:
        line = await reader.readline()
        lines, size = lines + 1, size + len(line)
        reply = json.loads(line)
        if "ok" in reply:
            break
    cpu_ms = (time.process_time() - cpu0) * 1000
    writer.close()
    await writer.wait_closed()
    if not reply["ok"]:
        raise SystemExit(f"up {name} failed: {reply['error']}")
    if not _both_hold(a, b, name):
        raise SystemExit(f"up {name} replied before both kernels held the Child SA")
    after = _counts(a, b)
    spent = [x - y for x, y in zip(after, before, strict=True)]
    return UpCost(cpu_ms, spent[0], spent[1], spent[2], lines, size)


async def client_up(path: str, name: str, callgrind: bool) -> tuple[float, float, float | None]:
    """A fresh `xfrmctl up NAME`: wall ms, CPU ms and (under callgrind) millions of
    instructions."""
    argv = [XFRMCTL, "--socket", path, "up", name]
    if callgrind:
        argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv]
    used0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd="/tmp"
    )
    _, err = await proc.communicate()
    wall = (time.perf_counter() - t0) * 1000
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (used.ru_utime + used.ru_stime - used0.ru_utime - used0.ru_stime) * 1000
    if proc.returncode != 0:
        raise SystemExit(f"xfrmctl up {name}: exit {proc.returncode}: {err.decode()[-500:]}")
    found = re.search(rb"Collected : (\d+)", err)
    return wall, cpu, int(found.group(1)) / 1e6 if found else None


async def run(args: argparse.Namespace) -> str:
    # As integration/lab.py before a guest boots: with PYTHONDONTWRITEBYTECODE set, each
    # `xfrmctl up` would otherwise compile every module it imports from source.
    compileall.compile_dir(ROOT / "xfrmctl", quiet=1)
    total = 1 + args.ups + args.runs
    a, b, handler = await start_pair(total, args.port, glue=True)
    folder = tempfile.mkdtemp(prefix="xfup", dir="/tmp")
    path = os.path.join(folder, "c.sock")
    server = ControlServer(Path(path), handler)
    await server.start()
    try:
        await one_up(path, "c0", a, b)  # warm: first-use imports and caches
        prof = cProfile.Profile() if args.profile else None
        if prof is not None:
            prof.enable()
        costs = [await one_up(path, f"c{i}", a, b) for i in range(1, 1 + args.ups)]
        if prof is not None:
            prof.disable()
            prof.dump_stats(args.profile)
        clients = [
            await client_up(path, f"c{i}", args.callgrind) for i in range(1 + args.ups, total)
        ]
        await asyncio.sleep(0.05)  # the server sees the last client leave before it closes
    finally:
        await server.close()
        for d in (a, b):
            d.stop_timeout = 0.0
            await d.stop()
        os.rmdir(folder)
    return report(costs, clients)


def report(costs: list[UpCost], clients: list[tuple[float, float, float | None]]) -> str:
    """Print the figures; return the machine-readable line."""
    first = costs[0]
    cpu = statistics.median(c.cpu_ms for c in costs)
    print(
        f"daemon, per up (median of {len(costs)}): {cpu:.2f} CPU ms (both daemons), "
        f"{first.ike_messages} IKE messages, {first.batches} netlink batches "
        f"({first.requests} requests), {first.lines} lines back ({first.reply_bytes} bytes)"
    )
    line = (
        f"daemon_cpu_ms={cpu:.2f} ike_messages={first.ike_messages} "
        f"netlink_batches={first.batches} netlink_requests={first.requests}"
    )
    if clients:
        wall = statistics.median(c[0] for c in clients)
        ccpu = statistics.median(c[1] for c in clients)
        print(f"client `xfrmctl up` (median of {len(clients)}): {wall:.1f} ms, CPU {ccpu:.1f} ms")
        line += f" client_wall_ms={wall:.1f} client_cpu_ms={ccpu:.1f}"
        instr = [c[2] for c in clients if c[2] is not None]
        if instr:
            print(f"client instructions: {statistics.median(instr):.1f} M (callgrind)")
            line += f" client_minstr={statistics.median(instr):.1f}"
    return line


def daemon_instructions(low: int, high: int, port: int) -> float:
    """Millions of instructions per `up` in the daemons (both, with the request's own JSON):
    this script under callgrind with `low` and then `high` ups and no client, the
    difference divided by `high - low`, so that imports and start-up cancel out."""
    counts = []
    for ups in (low, high):
        argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
        argv += [sys.executable, __file__, "--ups", str(ups), "--runs", "0", "--port", str(port)]
        proc = subprocess.run(argv, capture_output=True, text=True, check=True)
        found = re.search(r"Collected : (\d+)", proc.stderr)
        if found is None:
            raise SystemExit(f"no instruction count from valgrind: {proc.stderr[-300:]}")
        counts.append(int(found.group(1)))
    return (counts[1] - counts[0]) / (high - low) / 1e6


async def getae_cost(requests: int) -> tuple[float, float]:
    """CPU and wall microseconds of one GETAE (what `up` asked twice per child before its
    reply) against the real kernel, on a larval SA in a private network namespace (root)."""
    namespace = f"xfrmctl-up-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    conn = Connection(namespace)
    try:
        await conn.open()
        src, dst = ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2")
        ask = SpiRequest(src, dst, reqid=0x58460001, spis=SpiRange(0x1000, 0x1000))
        sa_id = SaId(dst, await ksa.allocate_spi(conn, ask))
        cpu0, t0 = time.process_time(), time.perf_counter()
        for _ in range(requests):
            await ksa.get_counters(conn, sa_id, src)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    finally:
        conn.close()
        subprocess.run(["ip", "netns", "del", namespace], check=False)
    return cpu / requests * 1e6, wall / requests * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ups", type=int, default=30, help="ups over the socket (daemon figures)")
    ap.add_argument("--runs", type=int, default=7, help="`xfrmctl up` processes (client)")
    ap.add_argument("--callgrind", action="store_true", help="clients under callgrind")
    ap.add_argument("--port", type=int, default=42000, help="first of 4 UDP ports")
    ap.add_argument("--profile", help="cProfile of the daemon phase to FILE")
    ap.add_argument(
        "--daemon-callgrind",
        metavar="LOW,HIGH",
        help="instead: instructions per up in the daemons, from two runs under callgrind",
    )
    ap.add_argument("--getae", action="store_true", help="instead: one GETAE's cost (root)")
    args = ap.parse_args()
    if args.getae:
        cpu_us, wall_us = asyncio.run(getae_cost(2000))
        print(f"GETAE against the kernel: {cpu_us:.0f} us CPU, {wall_us:.0f} us wall each")
        print(f"getae_cpu_us={cpu_us:.0f} getae_wall_us={wall_us:.0f}")
        return
    if args.daemon_callgrind:
        low, high = (int(n) for n in args.daemon_callgrind.split(","))
        minstr = daemon_instructions(low, high, args.port)
        print(f"daemons, per up: {minstr:.2f} M instructions (callgrind, {low} vs {high} ups)")
        print(f"daemon_minstr={minstr:.2f}")
        return
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("xfrmctl").setLevel(logging.CRITICAL)
    print(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
