"""SIGTERM is bounded: peers get a few seconds to answer DELETEs, then our state goes anyway."""

from __future__ import annotations

import asyncio
import errno
import logging
from pathlib import Path

import pytest
from daemon_helpers import BASE_PORT, RecordingKernel, dead, make_daemon, no_progress, until
from daemon_helpers import write_config as _write

from xfrmctl.kernel.errors import XfrmError


def configs(tmp: Path, offset: int) -> tuple[Path, Path]:
    port = BASE_PORT + 200 + offset
    a = _write(tmp, "a", "127.0.0.1", "127.0.0.2", port, port + 2, "a.example", "b.example")
    b = _write(tmp, "b", "127.0.0.2", "127.0.0.1", port + 2, port, "b.example", "a.example")
    return a, b


def test_stop_with_a_live_peer_deletes_on_both_sides_quickly(tmp_path: Path) -> None:
    a, b = configs(tmp_path, 0)

    async def scenario() -> None:
        da, ha, ka = await make_daemon(a)
        db, _, kb = await make_daemon(b)
        try:
            await asyncio.wait_for(ha.up("tun", None, no_progress), 20)
            await until(lambda: len(kb.sas) == 1 and len(kb.outbound) == 1, what="b's pair")
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            await da.stop()
            assert loop.time() - t0 < 2, "an answered DELETE must not wait for the bound"
            assert ("remove_all", 0) in ka.log and not ka.sas and not ka.outbound
            # The peer heard our DELETE and removed its half.
            await until(lambda: not kb.sas and not kb.outbound, what="peer removal")
            assert not db.engine.ike_sas()
        finally:
            await da.stop()
            await db.stop()

    asyncio.run(scenario())


def test_stop_with_a_dead_peer_ends_within_the_bound(tmp_path: Path) -> None:
    a, b = configs(tmp_path, 10)

    async def scenario() -> None:
        da, ha, ka = await make_daemon(a)
        db, _, _ = await make_daemon(b)
        try:
            await asyncio.wait_for(ha.up("tun", None, no_progress), 20)
            dead(db)
            da.stop_timeout = 1.0
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            await da.stop()
            took = loop.time() - t0
            assert 1.0 <= took < 2.5, took
            assert ("remove_all", 0) in ka.log and not ka.sas and not ka.outbound
            assert da._timer is None and not da._tasks
        finally:
            db.sockets.close()

    asyncio.run(scenario())


def test_stop_logs_kernel_errors_instead_of_raising(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = configs(tmp_path, 20)
    gone = XfrmError("netlink socket closed: network namespace deleted", errno.ENOENT)

    async def scenario() -> None:
        da, ha, ka = await make_daemon(a, RecordingKernel("a"))
        db, _, _ = await make_daemon(b)
        try:
            await asyncio.wait_for(ha.up("tun", None, no_progress), 20)
            ka.fail_remove = gone
            da.stop_timeout = 1.0
            with caplog.at_level(logging.ERROR, logger="xfrmctl.daemon"):
                await asyncio.wait_for(da.stop(), 5)  # must not raise
        finally:
            await db.stop()

    asyncio.run(scenario())
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("removing our kernel state failed" in r.getMessage() for r in errors)
    assert any("namespace deleted" in r.getMessage() for r in errors)
    assert not any(r.exc_info for r in errors), "a kernel error is a message, not a traceback"


def test_stop_gives_up_on_a_hanging_kernel(tmp_path: Path) -> None:
    a, _ = configs(tmp_path, 30)

    class HangingKernel(RecordingKernel):
        async def remove_all(self) -> None:
            await asyncio.sleep(3600)

    async def scenario() -> None:
        da, _, _ = await make_daemon(a, HangingKernel("a"))
        da.stop_timeout = 0.5
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await da.stop()
        assert loop.time() - t0 < 2

    asyncio.run(scenario())
