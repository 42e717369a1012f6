#!/usr/bin/env python3
"""Setup rate of two whole daemons on loopback, driven the way an operator at scale would:
N connections (one /32<->/32 child each) brought up by concurrent `up` requests through the
control-socket handler, at most `--concurrency` outstanding. No root and no kernel ESP: each
daemon gets a kernel double that keeps installed SAs in a dict. Both daemons share this
process, so the CPU figure is both sides summed.

Runs N = 100, 300, 1000 (`--n` to choose) so that any per-setup cost growing with the number
of SAs shows as a fall-off in setups/s. `--profile FILE` writes a cProfile of the largest N.

Last line (machine-readable): one `n=N setups_per_s=R cpu_ms_per_setup=C` group per N.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import ipaddress
import logging
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xfrmctl.daemon.core import Daemon
from xfrmctl.daemon.handler import DaemonHandler
from xfrmctl.daemon.kernel_glue import ChildCounters, KernelEvent, KernelGlue
from xfrmctl.ike.events import ChildSaReady
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


class MemoryKernel(KernelGlue):
    """Holds installed Child SAs by inbound SPI; never fails, never blocks."""

    def __init__(self) -> None:
        self.sas: dict[int, ChildSaReady] = {}
        self._idle: asyncio.Event = asyncio.Event()

    def prepare_socket(self, sock: Any, family: int) -> None:
        pass

    async def cleanup_stale(self) -> int:
        return 0

    async def install_trap(self, spec: ConnectionSpec, child: ChildSpec, reqid: int) -> None:
        pass

    async def remove_traps(self, conn: str) -> None:
        pass

    def trap_for_reqid(self, reqid: int) -> tuple[str, str] | None:
        return None

    async def install_child(self, ready: ChildSaReady, outbound: bool = True) -> None:
        self.sas[ready.spi_in] = ready

    async def install_outbound(self, ready: ChildSaReady) -> None:
        pass

    async def remove_child(self, ready: ChildSaReady, inbound: bool = True) -> None:
        if inbound:
            self.sas.pop(ready.spi_in, None)

    async def remove_inbound(self, ready: ChildSaReady) -> None:
        self.sas.pop(ready.spi_in, None)

    async def update_encap(self, ready: ChildSaReady) -> None:
        pass

    async def counters(self, ready: ChildSaReady) -> ChildCounters:
        return ChildCounters()

    async def remove_all(self) -> None:
        self.sas.clear()

    async def events(self) -> AsyncIterator[KernelEvent]:
        await self._idle.wait()  # no upcalls in memory
        yield KernelEvent("none")


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
class Result:
    n: int
    seconds: float
    cpu_s: float
    established: int

    @property
    def setups_per_s(self) -> float:
        return self.n / self.seconds

    @property
    def cpu_ms_per_setup(self) -> float:
        return self.cpu_s * 1000 / self.n


async def _progress(_: dict[str, Any]) -> None:
    pass


async def run(n: int, concurrency: int, port: int) -> Result:
    ini_specs, resp_specs = specs(n, port, port + 2)
    a = Daemon(ini_specs, MemoryKernel(), (port, port + 1), limits=LIMITS)
    b = Daemon(resp_specs, MemoryKernel(), (port + 2, port + 3), limits=LIMITS)
    for d in (a, b):
        d.sockets._ipv6 = False
        await d.start()
    handler = DaemonHandler(a, lambda: ini_specs)
    sem = asyncio.Semaphore(concurrency)
    failures: list[str] = []

    async def one(name: str) -> None:
        async with sem:
            try:
                await handler.up(name, None, _progress)
            except Exception as exc:
                failures.append(f"{name}: {exc}")

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(s.name) for s in ini_specs))
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    established = min(len(a.installed), len(b.installed))
    for d in (a, b):
        d.stop_timeout = 0.0
        await d.stop()
    if failures:
        raise SystemExit(f"{len(failures)} up requests failed, first: {failures[0]}")
    return Result(n, seconds, cpu, established)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[100, 300, 1000])
    ap.add_argument("--concurrency", type=int, default=64, help="outstanding up requests")
    ap.add_argument("--port", type=int, default=41000, help="first of 4 UDP ports per run")
    ap.add_argument("--profile", type=Path, help="write a cProfile of the largest N here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the teardown's "not deleted in 0 s" is expected
    logging.getLogger("xfrmctl").setLevel(logging.CRITICAL)
    results = []
    for i, n in enumerate(sorted(args.n)):
        prof = cProfile.Profile() if args.profile and n == max(args.n) else None
        if prof:
            prof.enable()
        r = asyncio.run(run(n, args.concurrency, args.port + 10 * i))
        if prof:
            prof.disable()
            prof.dump_stats(args.profile)
        if r.established != n:
            raise SystemExit(f"n={n}: only {r.established} Child SAs installed on both sides")
        print(
            f"N={n:5d}  {r.setups_per_s:8.1f} setups/s  {r.cpu_ms_per_setup:7.2f} CPU ms/setup "
            f"(both daemons)  {r.seconds:6.2f} s",
            flush=True,
        )
        results.append(r)
    print(
        " ".join(
            f"n={r.n} setups_per_s={r.setups_per_s:.1f} cpu_ms_per_setup={r.cpu_ms_per_setup:.2f}"
            for r in results
        )
    )


if __name__ == "__main__":
    main()
