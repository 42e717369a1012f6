"""Graceful restart between two real daemons on loopback: a restart stop leaves the kernel state
and a state file; the next daemon adopts the IKE SA, and rekeys, status and stop work on it."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import stat
from pathlib import Path

import pytest
from daemon_helpers import (
    BASE_PORT,
    GRACE,
    RecordingKernel,
    loopback_pair,
    make_daemon,
    no_progress,
    until,
)

from xfrmctl.config import load_config
from xfrmctl.daemon.core import Daemon
from xfrmctl.daemon.handler import DaemonHandler
from xfrmctl.daemon.specs import build_specs
from xfrmctl.ike.events import ChildSaReady


class KeepingKernel(RecordingKernel):
    """A kernel that outlives the daemon: `adopt` finds the pairs it still holds."""

    def __init__(self) -> None:
        super().__init__("a")
        self.adopted: set[int] = set()

    async def adopt(self, readies: list[ChildSaReady]) -> set[int]:
        found = {r.spi_in for r in readies if r.spi_in in self.sas and r.spi_out in self.outbound}
        self.adopted |= found
        return found


async def start_with_state(cfg: Path, kernel: RecordingKernel, state: Path) -> Daemon:
    loaded = load_config(cfg)
    daemon = Daemon(build_specs(loaded), kernel, (loaded.settings.port, loaded.settings.port_nat_t))
    daemon.sockets._ipv6 = False
    daemon.rekeyed_inbound_grace = GRACE
    daemon.engine.config = dataclasses.replace(daemon.engine.config, retransmit_timeout=0.5)
    daemon.state_path = state
    await daemon.start()
    return daemon


def test_restart_stop_hands_over_and_the_next_daemon_resumes(tmp_path: Path) -> None:
    a_cfg, b_cfg = loopback_pair(tmp_path, BASE_PORT + 540)
    state = tmp_path / "restart-state.json"

    async def scenario() -> None:
        ka = KeepingKernel()
        da = await start_with_state(a_cfg, ka, state)
        db, _, kb = await make_daemon(b_cfg)
        da2: Daemon | None = None
        try:
            await asyncio.wait_for(DaemonHandler(da, list).up("tun", None, no_progress), 20)
            await until(lambda: len(kb.sas) == 1 and len(ka.sas) == 1, what="both pairs")
            (before,) = da.engine.ike_sas()
            (spi_in,) = ka.sas
            await da.stop(keep=True)
            assert stat.S_IMODE(state.stat().st_mode) == 0o600
            assert ("remove_all", 0) not in ka.log and spi_in in ka.sas  # kernel state kept
            await asyncio.sleep(0.3)
            assert db.engine.ike_sas() and kb.sas  # the peer heard no DELETE

            log_len = len(ka.log)
            da2 = await start_with_state(a_cfg, ka, state)
            assert not state.exists()  # read once, then gone
            (after,) = da2.engine.ike_sas()
            assert (after.spi_i, after.spi_r, after.ike_sa_id) == (
                before.spi_i,
                before.spi_r,
                before.ike_sa_id,
            )
            assert after.adopted and da2.restarts_adopted == 1 and ka.adopted == {spi_in}
            assert spi_in in da2.installed
            assert [op for op, _ in ka.log[log_len:]] == ["cleanup"]  # nothing installed again
            report = await DaemonHandler(da2, list).status(None)
            assert report.ike_sas[0].adopted is True
            assert report.model_dump(mode="json")["ike_sas"][0]["adopted"] is True

            # A child rekey and an IKE rekey with the peer that never noticed the restart.
            installs = len([op for op in kb.log if op[0] == "install"])
            da2.call(da2.engine.rekey_child, spi_in)
            await until(
                lambda: len([op for op in kb.log if op[0] == "install"]) == installs + 1,
                what="peer installs the rekeyed pair",
            )
            await until(lambda: spi_in not in ka.sas, what="old pair removed after the rekey")
            da2.call(da2.engine.rekey_ike, after.ike_sa_id)
            await until(
                lambda: (
                    [s.ike_sa_id for s in db.engine.ike_sas()] != [before.ike_sa_id]
                    and len(db.engine.ike_sas()) == 1
                ),
                what="IKE rekey on the peer",
            )
            assert da2.engine.ike_sas()[0].state == "established"

            # A plain stop still tears everything down, on both sides.
            await da2.stop()
            assert ("remove_all", 0) in ka.log and not ka.sas
            await until(lambda: not kb.sas and not db.engine.ike_sas(), what="peer teardown")
        finally:
            await da.stop()
            if da2 is not None:
                await da2.stop()
            await db.stop()

    asyncio.run(scenario())


def test_clean_start_without_state_file_or_with_a_changed_connection(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a_cfg, b_cfg = loopback_pair(tmp_path, BASE_PORT + 550)
    state = tmp_path / "restart-state.json"
    caplog.set_level(logging.INFO, logger="xfrmctl.daemon")

    async def scenario() -> None:
        ka = KeepingKernel()
        da = await start_with_state(a_cfg, ka, state)
        assert "clean start: no state file" in caplog.text
        db, _, _ = await make_daemon(b_cfg)
        da2: Daemon | None = None
        try:
            await asyncio.wait_for(DaemonHandler(da, list).up("tun", None, no_progress), 20)
            await da.stop(keep=True)
            changed = a_cfg.read_text().replace(
                "esp_proposals: [aes256gcm16]", "esp_proposals: [aes128gcm16]"
            )
            a_cfg.write_text(changed)
            da2 = await start_with_state(a_cfg, ka, state)
            assert "clean start for tun: connection changed" in caplog.text
            assert da2.engine.ike_sas() == [] and da2.restarts_adopted == 0
            assert ka.adopted == set()
        finally:
            await da.stop()
            if da2 is not None:
                await da2.stop()
            await db.stop()

    asyncio.run(scenario())


def test_a_pair_the_kernel_lost_is_deleted_with_the_peer(tmp_path: Path) -> None:
    a_cfg, b_cfg = loopback_pair(tmp_path, BASE_PORT + 560)
    state = tmp_path / "restart-state.json"

    async def scenario() -> None:
        ka = KeepingKernel()
        da = await start_with_state(a_cfg, ka, state)
        db, _, kb = await make_daemon(b_cfg)
        da2: Daemon | None = None
        try:
            await asyncio.wait_for(DaemonHandler(da, list).up("tun", None, no_progress), 20)
            await until(lambda: len(kb.sas) == 1, what="peer pair")
            await da.stop(keep=True)
            ka.sas.clear()  # e.g. `ip xfrm state flush` while no daemon ran
            da2 = await start_with_state(a_cfg, ka, state)
            assert da2.engine.ike_sas()[0].adopted and not da2.installed
            await until(lambda: not kb.sas, what="the peer deleting the lost pair")
            assert db.engine.ike_sas()  # the IKE SA itself lives on
        finally:
            await da.stop()
            if da2 is not None:
                await da2.stop()
            await db.stop()

    asyncio.run(scenario())


def test_a_restart_stop_without_a_state_path_tears_down(tmp_path: Path) -> None:
    a_cfg, b_cfg = loopback_pair(tmp_path, BASE_PORT + 570)

    async def scenario() -> None:
        da, ha, ka = await make_daemon(a_cfg)
        db, _, _ = await make_daemon(b_cfg)
        try:
            await asyncio.wait_for(ha.up("tun", None, no_progress), 20)
            await da.stop(keep=True)
            assert ("remove_all", 0) in ka.log and not ka.sas
        finally:
            await da.stop()
            await db.stop()

    asyncio.run(scenario())
