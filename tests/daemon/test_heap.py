"""After a transient peak the daemon gives the C heap's free pages back (daemon/heap.py): glibc
returns memory on its own only from the top of its heap, so a peak freed below a live
allocation stays resident until asked (issue 15: a reconcile's dumps and index, a reload)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from daemon_helpers import BASE_PORT, make_daemon, write_config

from xfrmctl.daemon import drift, heap

PEAK = textwrap.dedent(
    """
    import sys
    from xfrmctl.daemon.heap import release_free_memory

    def rss_kib():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

    peak = [bytes(64 * 1024) for _ in range(400)]  # 25 MiB below glibc's mmap threshold
    kept = bytes(64 * 1024)  # allocated after: the top of the heap stays in use
    del peak
    before = rss_kib()
    released = release_free_memory()
    print(released, before - rss_kib())
    """
)


def test_a_freed_peak_below_the_heap_top_goes_back_to_the_kernel() -> None:
    if not heap.release_free_memory():
        pytest.skip("not a glibc system: nothing to ask")
    out = subprocess.run(
        [sys.executable, "-c", PEAK], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[0] == "True"
    assert int(out[1]) > 12 * 1024, f"only {out[1]} KiB returned of a 25 MiB peak"


class _Daemon:
    """What DriftWatch.reconcile asks of the daemon, with a kernel that finds no drift."""

    _stopping = False

    def __init__(self) -> None:
        self.kernel = self

    def now(self) -> float:
        return 0.0

    async def reconcile(self) -> None:
        return None


def test_each_reconcile_gives_its_peak_back(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(heap, "release_free_memory", lambda: calls.append("trim") or True)
    watch = drift.DriftWatch(_Daemon())  # type: ignore[arg-type]
    asyncio.run(watch.reconcile())
    asyncio.run(watch.reconcile())
    assert calls == ["trim", "trim"]


def test_a_reload_gives_its_parse_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(heap, "release_free_memory", lambda: calls.append("trim") or True)
    port = BASE_PORT + 974
    cfg = write_config(tmp_path, "a", "127.0.0.1", "127.0.0.2", port, port + 2, "a", "b")

    async def run() -> None:
        daemon, handler, _ = await make_daemon(cfg)
        try:
            calls.clear()  # start-up's own reconciles
            await handler.reload()
            assert calls == ["trim"]
        finally:
            daemon.stop_timeout = 0.0
            await daemon.stop()

    asyncio.run(run())
