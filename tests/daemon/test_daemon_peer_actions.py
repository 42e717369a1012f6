"""close_action: what the daemon does when the peer closes a Child SA for good, and not when
the peer merely rekeys it. Two daemons on loopback with recording kernels."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from daemon_helpers import (
    BASE_PORT,
    RecordingKernel,
    loopback_pair,
    make_daemon,
    no_progress,
    until,
)


def configs(tmp: Path, offset: int, a_conn: str = "", a_child: str = "") -> tuple[Path, Path]:
    return loopback_pair(tmp, BASE_PORT + 600 + offset, a_conn, a_child)


def spis(k: RecordingKernel) -> set[int]:
    return set(k.sas)


async def peer_closes_child(tmp: Path, offset: int, action: str, by: str = "down") -> None:
    a, b = configs(tmp, offset, a_child=f"close_action: {action}")
    da, ha, ka = await make_daemon(a)
    db, hb, kb = await make_daemon(b)
    try:
        await asyncio.wait_for(ha.up("tun", None, no_progress), 20)
        first = spis(ka)
        assert len(first) == 1
        if by == "down":
            await asyncio.wait_for(hb.down("tun", "host", no_progress), 20)
        else:  # the peer rekeys: the old Child SA is deleted by the peer, but replaced
            (spi_in,) = spis(kb)
            db.call(db.engine.rekey_child, spi_in)
        await until(lambda: not (first & spis(ka)), timeout=10, what="old Child SA removed")
        if by == "rekey" or action == "start":
            await until(lambda: len(spis(ka)) == 1, timeout=10, what="a Child SA again")
            await asyncio.sleep(1.0)  # nothing more comes: exactly one pair, no duplicate
            assert len(spis(ka)) == 1 and len(spis(kb)) == 1
            assert len(da.engine.child_sas()) == 1
        else:
            await asyncio.sleep(1.0)
            assert not spis(ka) and not da.engine.child_sas(), "closed must stay closed"
        reqid = da.engine.trap_reqid("tun", "host")
        trapped = ka.trap_for_reqid(reqid) is not None
        assert trapped == (action == "trap" and by == "down")
    finally:
        await da.stop()
        await db.stop()


@pytest.mark.parametrize(("offset", "action"), [(0, "none"), (10, "trap"), (20, "start")])
def test_close_action_when_the_peer_deletes_the_child(
    tmp_path: Path, offset: int, action: str
) -> None:
    asyncio.run(peer_closes_child(tmp_path, offset, action))


@pytest.mark.parametrize(("offset", "action"), [(30, "trap"), (40, "start")])
def test_close_action_ignores_a_child_the_peer_rekeyed(
    tmp_path: Path, offset: int, action: str
) -> None:
    asyncio.run(peer_closes_child(tmp_path, offset, action, by="rekey"))


def test_start_action_start_initiates_at_load(tmp_path: Path) -> None:
    a, b = configs(tmp_path, 60, a_child="start_action: start")

    async def scenario() -> None:
        db, _, kb = await make_daemon(b)
        da, _, ka = await make_daemon(a)  # nobody asks it to: the config says start
        try:
            await until(lambda: len(spis(ka)) == 1 and len(spis(kb)) == 1, 10, "the child")
        finally:
            await da.stop()
            await db.stop()

    asyncio.run(scenario())
