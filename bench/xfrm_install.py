#!/usr/bin/env python3
"""Install and remove N SA+policy sets: batched, one request per round-trip, and `ip -batch`.

Runs as root in a private network namespace. With a kernel that has ESP (the lab guest) each
set is an outbound AES-GCM SA and its out policy; without ESP (a host like the dev machine) each
set is an ALLOCSPI larval SA and a policy, which exercises the same netlink path minus crypto.
The last line is machine-readable: `objects_per_s=<N> ratio_vs_ip_batch=<R>` (batched, largest N,
install+remove, relative to `ip -batch` doing the same).

Like with like: both sides install the same objects (same SPIs, reqid, replay window, selectors,
templates, priority) and remove them by the same keys; our time includes building the typed
objects and encoding them, `ip`'s its parsing, minus the cost of starting `ip` (an empty batch).
`ip -batch` makes one round-trip per line; "batched" is ours, "one per round-trip" ours without
batching. Each contender runs --repeat times, interleaved, and the best time counts (the machine
may be shared); the CPU seconds each side used are shown too, since wall-clock time on a busy
machine also counts waiting for a CPU. Without ESP, ALLOCSPI answers with the new state: `ip`
decodes and prints it, we keep the reply undecoded until read (the bench does not read it).

    .venv/bin/python integration/lab.py exec -- .venv/bin/python bench/xfrm_install.py
    .venv/bin/python bench/xfrm_install.py --sizes 1000   # host: policies + ALLOCSPI
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xfrmctl.kernel import sa as sa_ops
from xfrmctl.kernel.client import AsyncXfrm
from xfrmctl.kernel.errors import XfrmError
from xfrmctl.kernel.policy import add_request as policy_add
from xfrmctl.kernel.policy import delete_request as policy_delete
from xfrmctl.kernel.socket import Request
from xfrmctl.kernel.types import (
    SA,
    Aead,
    Dir,
    Mode,
    Policy,
    PolicyId,
    Proto,
    SaId,
    Selector,
    SpiRange,
    SpiRequest,
    Template,
)

SRC = IPv4Address("192.0.2.1")
SRC_NET = IPv4Network((int(SRC), 32))
BASE = int(IPv4Address("10.0.0.0"))
KEY = secrets.token_bytes(36)
REQID = 0x58460000 + 1


def peer(i: int) -> IPv4Address:
    return IPv4Address(BASE + i + 1)


def the_sa(i: int) -> SA:
    return SA(SRC, peer(i), 0x1000 + i, reqid=REQID, aead=Aead("rfc4106(gcm(aes))", KEY, 128))


def the_policy(i: int) -> Policy:
    sel = Selector(SRC_NET, IPv4Network((BASE + i + 1, 32)))
    return Policy(sel, Dir.OUT, (Template(Proto.ESP, Mode.TRANSPORT, REQID),), priority=100)


def allocspi_request(i: int) -> Request:
    spi = 0x1000 + i
    return sa_ops.allocspi_request(SpiRequest(SRC, peer(i), reqid=REQID, spis=SpiRange(spi, spi)))


Keys = list[tuple[SaId, PolicyId]]


def install_requests(n: int, with_sa: bool) -> tuple[list[Request], Keys]:
    """The requests, and what removes the objects later (as a daemon keeps what it installed)."""
    out: list[Request] = []
    keys: Keys = []
    for i in range(n):
        if with_sa:
            sa = the_sa(i)
            out.append(sa_ops.add_request(sa))
            sa_id = sa.id
        else:
            out.append(allocspi_request(i))
            sa_id = SaId(peer(i), 0x1000 + i)
        policy = the_policy(i)
        out.append(policy_add(policy))
        keys.append((sa_id, policy.id))
    return out, keys


def remove_requests(keys: Keys) -> list[Request]:
    out: list[Request] = []
    for sa_id, policy_id in keys:
        out.append(policy_delete(policy_id))
        out.append(sa_ops.delete_request(sa_id))
    return out


def check(requests: Sequence[Request]) -> None:
    failed = [r.error for r in requests if r.error is not None]
    if failed:
        raise SystemExit(f"{len(failed)} requests failed, first: {failed[0]}")


Times = tuple[float, float, float]  # install, remove (wall-clock seconds), CPU seconds of both


async def run_ours(ns: str, n: int, with_sa: bool, batched: bool) -> Times:
    """Seconds to install, then to remove, n sets; building the requests is included."""
    cpu = time.process_time()
    async with AsyncXfrm(ns) as x:
        times = []
        keys: Keys = []
        for install in (True, False):
            t0 = time.perf_counter()
            if install:
                reqs, keys = install_requests(n, with_sa)
            else:
                reqs = remove_requests(keys)
            if batched:
                await x.batch(reqs)
            else:
                for r in reqs:
                    await x.batch([r])
            times.append(time.perf_counter() - t0)
            check(reqs)
    return times[0], times[1], time.process_time() - cpu


def run_ip_batch(ns: str, n: int, with_sa: bool) -> Times:
    add, rem = [], []
    for i in range(n):
        dst = peer(i)
        if with_sa:
            add.append(
                f"xfrm state add src {SRC} dst {dst} proto esp spi {0x1000 + i} reqid {REQID} "
                f"mode transport replay-window 32 aead rfc4106(gcm(aes)) 0x{KEY.hex()} 128"
            )
        else:
            spi = 0x1000 + i
            add.append(
                f"xfrm state allocspi src {SRC} dst {dst} proto esp reqid {REQID} "
                f"min {spi} max {spi}"
            )
        add.append(
            f"xfrm policy add src {SRC}/32 dst {dst}/32 dir out priority 100 "
            f"tmpl proto esp reqid {REQID} mode transport"
        )
        rem.append(f"xfrm policy delete src {SRC}/32 dst {dst}/32 dir out")
        rem.append(f"xfrm state delete src {SRC} dst {dst} proto esp spi {0x1000 + i}")
    cpu = children_cpu()
    install = ip_batch(ns, add)
    return install, ip_batch(ns, rem), children_cpu() - cpu


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def ip_batch(ns: str, lines: Sequence[str]) -> float:
    """Seconds `ip -n NS -batch FILE` takes for these lines."""
    with tempfile.NamedTemporaryFile("w", suffix=".ipbatch", delete=False) as f:
        f.write("".join(line + "\n" for line in lines))
    try:
        t0 = time.perf_counter()
        proc = subprocess.run(["ip", "-n", ns, "-batch", f.name], capture_output=True, text=True)
        elapsed = time.perf_counter() - t0
    finally:
        os.unlink(f.name)
    if proc.returncode != 0:
        raise SystemExit(f"ip -batch failed: {proc.stderr.strip()[:300]}")
    return elapsed


def kernel_has_esp(ns: str) -> bool:
    async def probe() -> bool:
        async with AsyncXfrm(ns) as x:
            try:
                await x.add_sa(the_sa(0))
            except XfrmError:
                return False
            await x.delete_sa(the_sa(0).id)
            return True

    return asyncio.run(probe())


def best(runs: Sequence[Times]) -> Times:
    return min(r[0] for r in runs), min(r[1] for r in runs), min(r[2] for r in runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--skip-serial-above", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=3, help="runs per contender; the best counts")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (creates a network namespace)")
    ns = f"xfrmctl-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        with_sa = kernel_has_esp(ns)
        what = "SA(aes-gcm)+policy" if with_sa else "ALLOCSPI larval SA+policy (no ESP here)"
        cpu0 = children_cpu()
        startup = min(ip_batch(ns, []) for _ in range(3))
        startup_cpu = (children_cpu() - cpu0) / 3
        print(
            f"measuring: {what} sets, install then remove, kernel {os.uname().release}, "
            f"best of {args.repeat}; starting ip takes {startup * 1000:.1f} ms (subtracted)"
        )
        last = (0.0, 0.0)
        for n in args.sizes:
            objects = 2 * n
            serial = n <= args.skip_serial_above
            ours, ips, serials = [], [], []
            for _ in range(args.repeat):
                ours.append(asyncio.run(run_ours(ns, n, with_sa, batched=True)))
                ip_in, ip_out, ip_cpu = run_ip_batch(ns, n, with_sa)
                ips.append(
                    (
                        max(ip_in - startup, 1e-9),
                        max(ip_out - startup, 1e-9),
                        max(ip_cpu - 2 * startup_cpu, 1e-9),
                    )
                )
                if serial:
                    serials.append(asyncio.run(run_ours(ns, n, with_sa, batched=False)))
            (b_in, b_out, b_cpu), (ip_in, ip_out, ip_cpu) = best(ours), best(ips)
            rate = 2 * objects / (b_in + b_out)
            ip_rate = 2 * objects / (ip_in + ip_out)
            print(
                f"N={n}: batched install {objects / b_in:,.0f}/s remove {objects / b_out:,.0f}/s"
                f" | ip -batch install {objects / ip_in:,.0f}/s remove {objects / ip_out:,.0f}/s"
            )
            print(
                f"N={n}: per CPU second (user+sys, install+remove): "
                f"batched {2 * objects / b_cpu:,.0f}/s | ip -batch {2 * objects / ip_cpu:,.0f}/s",
                flush=True,
            )
            if serials:
                s_in, s_out, _ = best(serials)
                one = 2 * objects / (s_in + s_out)
                print(
                    f"N={n}: one per round-trip install {objects / s_in:,.0f}/s "
                    f"remove {objects / s_out:,.0f}/s (batched is {rate / one:.2f}x)"
                )
            last = (rate, rate / ip_rate)
        print(f"objects_per_s={last[0]:.0f} ratio_vs_ip_batch={last[1]:.2f}")
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


if __name__ == "__main__":
    main()
