"""Daemon life cycle on loopback: rekeys without loss, traps, DPD actions, kernel failures, reload.

The recording kernels of both daemons write to one journal, so a test can replay what both
kernels held at every moment and check the property that matters on the wire: a packet sent
on an outbound SA always finds the matching inbound SA in the peer's kernel.
"""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import (
    BASE_PORT,
    RecordingKernel,
    dead,
    loopback_pair,
    make_daemon,
    no_progress,
    until,
)

from xfrmctl.daemon.control import ControlError
from xfrmctl.daemon.kernel_glue import KernelEvent
from xfrmctl.kernel.errors import XfrmError

Journal = list[tuple[str, str, int]]


def configs(
    tmp: Path, offset: int, a_conn: str = "", a_child: str = "", b_child: str = ""
) -> tuple[Path, Path]:
    return loopback_pair(tmp, BASE_PORT + 100 + offset, a_conn, a_child, b_child)


def replay_no_loss(journal: Journal) -> None:
    """A rekeyed outbound SA has its peer's inbound SA; no inbound SA goes while still used.

    (The very first pair is exempt: a responder installs it before the initiator can, as in
    every IKEv2 implementation, and traffic normally starts at the initiator.)
    """
    inbound: dict[str, set[int]] = {"a": set(), "b": set()}
    outbound: dict[str, set[int]] = {"a": set(), "b": set()}
    peer = {"a": "b", "b": "a"}
    for i, (who, op, spi) in enumerate(journal):
        if op == "install":
            inbound[who].add(spi)
        elif op == "install_out":
            assert not outbound[who] or spi in inbound[peer[who]], (
                f"step {i}: {who} sends on {spi:08x} too early"
            )
            outbound[who].add(spi)
        elif op == "remove_out":
            outbound[who].discard(spi)
        elif op == "remove":
            assert spi not in outbound[peer[who]], f"step {i}: {who} dropped {spi:08x} in use"
            inbound[who].discard(spi)


def pair_state(k: RecordingKernel) -> tuple[int, int]:
    return len(k.sas), len(k.outbound)


def test_child_rekey_is_make_before_break_on_both_kernels(tmp_path: Path) -> None:
    a, b = configs(tmp_path, 0)
    journal: Journal = []

    async def scenario() -> None:
        da, ha, ka = await make_daemon(a, RecordingKernel("a", journal))
        db, _, kb = await make_daemon(b, RecordingKernel("b", journal))
        ka.delay = kb.delay = 0.1  # slow kernels widen every race between peers
        try:
            await asyncio.wait_for(ha.up("tun", None, no_progress), 20)
            await until(lambda: pair_state(kb) == (1, 1), what="b's pair")
            (old,) = ka.sas
            old_out = ka.sas[old].spi_out
            for rekeys in range(1, 4):  # repeatedly, as rekey_time would
                (current,) = ka.sas
                da.call(da.engine.rekey_child, current)
                await until(
                    lambda current=current: (  # type: ignore[misc]
                        current not in ka.sas
                        and pair_state(ka) == (1, 1)
                        and pair_state(kb) == (1, 1)
                    ),
                    what=f"rekey {rekeys} to settle",
                )
            assert old not in ka.sas
            replay_no_loss(journal)
            # a's old inbound SA outlived both its outbound twin and b's sending on it.
            assert journal.index(("a", "remove", old)) > journal.index(("b", "remove_out", old))
            assert journal.index(("a", "remove", old)) > journal.index(("a", "remove_out", old_out))
            # b (the responder) only sent on a new SA once a told it to delete the old one.
            installs_out = [
                i for i, (w, op, _) in enumerate(journal) if w == "b" and op == "install_out"
            ]
            removes_out = [
                i for i, (w, op, _) in enumerate(journal) if w == "b" and op == "remove_out"
            ]
            assert len(installs_out) == 4 and len(removes_out) == 3
            for new_out, old_out in zip(installs_out[1:], removes_out, strict=True):
                assert new_out < old_out
            # a (the initiator) sent on each new SA as soon as b's answer was in: before b,
            # deleting the old pair on a's DELETE, stopped sending on the old one.
            a_out = [i for i, (w, op, _) in enumerate(journal) if w == "a" and op == "install_out"]
            for a_new, b_old_gone in zip(a_out[1:], removes_out, strict=True):
                assert a_new < b_old_gone, journal
        finally:
            await da.stop()
            await db.stop()

    asyncio.run(scenario())


def test_ike_rekey_keeps_the_children_installed(tmp_path: Path) -> None:
    a, b = configs(tmp_path, 10)

    async def scenario() -> None:
        da, ha, ka = await make_daemon(a)
        db, _, kb = await make_daemon(b)
        try:
            result = await asyncio.wait_for(ha.up("tun", None, no_progress), 20)
            old_id = result["ike_sa"]["unique_id"]
            await until(lambda: pair_state(kb) == (1, 1))
            before = (set(ka.sas), set(kb.sas))
            da.call(da.engine.rekey_ike, old_id)
            await until(
                lambda: (
                    [s.ike_sa_id for s in da.engine.ike_sas()] not in ([old_id], [])
                    and len(da.engine.ike_sas()) == 1
                    and len(db.engine.ike_sas()) == 1
                ),
                what="IKE rekey",
            )
            await asyncio.sleep(0.3)  # the old IKE SA's deletion reaches the kernel glue
            assert (set(ka.sas), set(kb.sas)) == before
            assert pair_state(ka) == (1, 1) and pair_state(kb) == (1, 1)
            assert not [op for op, _ in ka.log + kb.log if op.startswith("remove")]
            # The moved child still rekeys and deletes through the new IKE SA.
            (spi,) = ka.sas
            da.call(da.engine.rekey_child, spi)
            await until(lambda: spi not in ka.sas and pair_state(ka) == (1, 1))
            await asyncio.wait_for(ha.down("tun", None, no_progress), 20)
            await until(lambda: not ka.sas and not kb.sas and not ka.outbound)
        finally:
            await da.stop()
            await db.stop()

    asyncio.run(scenario())


def test_kernel_refusing_an_sa_fails_up_and_deletes_the_child(tmp_path: Path) -> None:
    a, b = configs(tmp_path, 20)

    async def scenario() -> None:
        da, ha, ka = await make_daemon(a)
        db, hb, kb = await make_daemon(b)
        ka.fail_install = XfrmError("SA spi 0x1234 already exists", errno.EEXIST)
        try:
            with pytest.raises(ControlError) as err:
                await asyncio.wait_for(ha.up("tun", None, no_progress), 20)
            assert err.value.code == "KERNEL_ERROR"
            assert "already exists" in err.value.message
            # The peer is told: its half of the pair goes too.
            await until(lambda: not kb.sas and not kb.outbound, what="peer cleanup")
            assert not ka.sas and not ka.outbound
            report = await hb.status(None)
            assert all(not s.children for s in report.ike_sas)
        finally:
            await da.stop()
            await db.stop()

    asyncio.run(scenario())


def test_trap_negotiates_on_acquire_and_survives_down(tmp_path: Path) -> None:
    a, b = configs(tmp_path, 30, a_child="start_action: trap")

    async def scenario() -> None:
        da, ha, ka = await make_daemon(a)
        db, _, kb = await make_daemon(b)
        try:
            (reqid,) = ka.traps
            ops = [op for op, _ in ka.log]
            assert ops.index("trap") < ops.index("cleanup"), "traps go in before the cleanup"
            assert not ka.sas and not da.engine.ike_sas()
            await ka.queue.put(KernelEvent("acquire", reqid=reqid, detail="test packet"))
            await until(lambda: pair_state(ka) == (1, 1) and pair_state(kb) == (1, 1))
            await asyncio.wait_for(ha.down("tun", None, no_progress), 20)
            await until(lambda: not ka.sas and not kb.sas)
            assert ka.traps == {reqid: ("tun", "host")}
            # An ACQUIRE for someone else's reqid is ignored.
            await ka.queue.put(KernelEvent("acquire", reqid=reqid + 99))
            await asyncio.sleep(0.2)
            assert not da.engine.ike_sas()
        finally:
            await da.stop()
            await db.stop()

    asyncio.run(scenario())


def test_reload_removes_the_traps_of_changed_connections(tmp_path: Path) -> None:
    a, _ = configs(tmp_path, 40, a_child="start_action: trap")

    async def scenario() -> None:
        da, ha, ka = await make_daemon(a)
        try:
            assert ka.traps
            a.write_text(a.read_text().replace("start_action: trap", "start_action: none"))
            result = await ha.reload()
            assert result["changed"] == ["tun"]
            assert ka.traps == {}
            assert ka.log[-1][0] == "untrap"
        finally:
            await da.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize("action", ["clear", "restart"])
def test_dpd_action_after_the_peer_dies(tmp_path: Path, action: str) -> None:
    a, b = configs(
        tmp_path,
        50 if action == "clear" else 60,
        a_conn="dpd_delay: 1s\ndpd_timeout: 2s",
        a_child=f"dpd_action: {action}",
    )

    async def scenario() -> None:
        da, ha, ka = await make_daemon(a)
        db, _, _ = await make_daemon(b)
        db2 = None
        try:
            await asyncio.wait_for(ha.up("tun", None, no_progress), 20)
            assert pair_state(ka) == (1, 1)
            dead(db)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            await until(lambda: not ka.sas and not ka.outbound, timeout=10, what="DPD")
            # Detected within dpd_delay + dpd_timeout (plus scheduling slack).
            assert loop.time() - t0 < 1 + 2 + 1.5
            if action == "clear":
                await asyncio.sleep(2)
                assert not da.engine.ike_sas(), "clear must not re-initiate"
                return
            db2, _, kb2 = await make_daemon(b)  # the peer comes back
            await until(
                lambda: pair_state(ka) == (1, 1) and pair_state(kb2) == (1, 1),
                timeout=15,
                what="re-initiation after DPD",
            )
        finally:
            await da.stop()
            if db2 is not None:
                await db2.stop()
            db.sockets.close()

    asyncio.run(scenario())


def test_up_progress_messages_are_sentences(tmp_path: Path) -> None:
    a, b = configs(tmp_path, 70)
    seen: list[dict[str, Any]] = []

    async def progress(message: dict[str, Any]) -> None:
        seen.append(message)

    async def scenario() -> None:
        da, ha, _ = await make_daemon(a)
        db, _, _ = await make_daemon(b)
        try:
            await asyncio.wait_for(ha.up("tun", None, progress), 20)
            await asyncio.sleep(0.05)
        finally:
            await da.stop()
            await db.stop()

    asyncio.run(scenario())
    events = [m["event"] for m in seen]
    assert events[:1] == ["initiating"] and "ike_established" in events, events
    assert "child_installed" in events, events
    for m in seen:
        assert isinstance(m.get("message"), str) and len(m["message"]) > 10, m
    established = next(m for m in seen if m["event"] == "ike_established")
    assert "b.example" in established["message"]
