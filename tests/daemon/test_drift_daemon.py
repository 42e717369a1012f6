"""Drift in the daemon: what a reconcile finds is counted once and repaired (policies put back,
a Child SA whose SAs went rekeyed with the peer), bursts of notifications are bounded, status
shows the counts, and a reload touches only the connections that changed."""

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

from xfrmctl.cli import render_status
from xfrmctl.daemon import drift as drift_mod
from xfrmctl.daemon.kernel_glue import KernelDrift, KernelEvent, MissingPair
from xfrmctl.kernel.errors import XfrmError
from xfrmctl.kernel.types import Dir, Policy, Proto, Selector, Template

REQID = 0x58460001
POLICIES = tuple(
    Policy(Selector.of("10.1.0.0/16", "10.2.0.0/16"), d, (Template(Proto.ESP, reqid=REQID),))
    for d in (Dir.OUT, Dir.IN)
)


class DriftKernel(RecordingKernel):
    """Reports as missing the SAs of `flushed` pairs still installed, and `policies` until
    repaired."""

    def __init__(self) -> None:
        super().__init__("a")
        self.flushed: set[int] = set()
        self.missing: tuple[Policy, ...] = ()
        self.shadowed: tuple[str, ...] = ()
        self.repairs: list[tuple[Policy, ...]] = []
        self.reconciles = 0
        self.fail_repair = False

    async def reconcile(self) -> KernelDrift:
        self.reconciles += 1
        pairs = tuple(
            MissingPair(spi, REQID, (f"inbound esp spi {spi:#010x}",))
            for spi in self.flushed & set(self.sas)
        )
        return KernelDrift(pairs, self.missing, (), self.shadowed)

    async def repair_policies(self, policies: tuple[Policy, ...]) -> None:
        if self.fail_repair:
            raise XfrmError("refused")
        self.repairs.append(policies)
        self.missing = ()


def test_missing_sas_are_rekeyed_with_the_peer_and_counted_once(tmp_path: Path) -> None:
    a, b = loopback_pair(tmp_path, BASE_PORT + 920)

    async def scenario() -> None:
        da, ha, ka = await make_daemon(a, DriftKernel())
        db, _, kb = await make_daemon(b)
        try:
            await asyncio.wait_for(ha.up("tun", None, no_progress), 20)
            (old,) = ka.sas
            ka.flushed.add(old)
            await ka.queue.put(KernelEvent("drift", detail="SAs flushed"))
            # From the notification, not the periodic reconcile (10 s away).
            await until(lambda: old in da.drift._rekeys, timeout=3, what="the repair to start")
            # ACQUIREs of the child's reqid wait for the repair rather than start another SA.
            assert da.drift.on_kernel_event(KernelEvent("acquire", reqid=REQID))
            assert not da.drift.on_kernel_event(KernelEvent("acquire", reqid=REQID + 1))
            await until(lambda: old not in ka.sas and len(ka.sas) == 1, what="repair rekey")
            (new,) = ka.sas
            assert ka.sas[new].replaces_spi_in == old, "a rekey, not a new Child SA"
            assert new in {r.spi_out for r in kb.sas.values()}, "the peer has the new pair"
            await da.drift.reconcile()  # nothing missing any more: nothing counted again
            report = (await ha.status(None)).model_dump(mode="json")
            assert report["drift_found"] == 1 and report["drift_repaired"] == 1
            assert report["drift"] == {"found": {"sa_missing": 1}, "repaired": {"sa_missing": 1}}
        finally:
            await da.stop()
            await db.stop()

    asyncio.run(scenario())


def test_policies_are_put_back_and_shadowing_is_only_reported(tmp_path: Path) -> None:
    a, _ = loopback_pair(tmp_path, BASE_PORT + 924)

    async def scenario() -> None:
        da, ha, ka = await make_daemon(a, DriftKernel())
        try:
            ka.missing = POLICIES
            ka.shadowed = ("policy out ... shadowed by foreign policy out ... priority 1",)
            ka.fail_repair = True
            await da.drift.reconcile()
            await da.drift.reconcile()  # still missing: counted once
            assert da.drift.counts()["found"]["policy_missing"] == 2
            assert not da.drift.counts()["repaired"]
            ka.fail_repair = False
            await da.drift.reconcile()  # the same shadow: not counted again, never "repaired"
            assert ka.repairs == [POLICIES]
            ka.missing = POLICIES[:1]  # deleted again after the repair: new drift
            await da.drift.reconcile()
            assert da.drift.counts() == {
                "found": {"policy_missing": 3, "policy_shadowed": 1},
                "repaired": {"policy_missing": 3},
            }
            text = render_status((await ha.status(None)).model_dump(mode="json"))
            assert "Kernel drift: 4 found (policy_missing 3, policy_shadowed 1), 3 repaired" in text
        finally:
            await da.stop()

    asyncio.run(scenario())


def test_bursts_of_notifications_are_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = loopback_pair(tmp_path, BASE_PORT + 926)
    monkeypatch.setattr(drift_mod, "MIN_WINDOW", 0.5)

    async def scenario() -> None:
        da, _, ka = await make_daemon(a, DriftKernel())
        da.drift.interval = 0  # notifications only
        try:
            for _ in range(40):  # a tool that keeps flushing
                await ka.queue.put(KernelEvent("drift", detail="SAs flushed"))
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.1)
            assert ka.reconciles == drift_mod.BURST
            await asyncio.sleep(0.6)  # the window ends: one more look, not 40 - BURST
            assert ka.reconciles == drift_mod.BURST + 1
        finally:
            await da.stop()

    asyncio.run(scenario())


def test_the_periodic_reconcile_runs_at_the_interval(tmp_path: Path) -> None:
    a, _ = loopback_pair(tmp_path, BASE_PORT + 928)

    async def scenario() -> None:
        da, _, ka = await make_daemon(a, DriftKernel())
        try:
            assert da.drift.interval == drift_mod.DEFAULT_INTERVAL
            await asyncio.sleep(0.3)
            assert ka.reconciles == 0
            da.drift.interval = 0.1
            await until(lambda: ka.reconciles >= 2, timeout=drift_mod.DEFAULT_INTERVAL + 5)
        finally:
            await da.stop()

    asyncio.run(scenario())


class SlowDumpKernel(DriftKernel):
    """A reconcile whose dumps take `cost` seconds, as thousands of SAs do."""

    cost = 0.03

    async def reconcile(self) -> KernelDrift:
        await asyncio.sleep(self.cost)
        return await super().reconcile()


def test_the_periodic_reconcile_is_spaced_out_to_its_budget(tmp_path: Path) -> None:
    """A 0.03 s reconcile at a 0.05 s interval runs again after 3 s (1% of the time), not 20
    times a second; a notification still gets its reconcile at once."""
    a, _ = loopback_pair(tmp_path, BASE_PORT + 929)

    async def scenario() -> None:
        da, _, ka = await make_daemon(a, SlowDumpKernel())
        try:
            da.drift.interval = 0.05
            await until(lambda: ka.reconciles >= 1, timeout=5)
            await until(lambda: da.drift.cost > 0, timeout=5)
            assert da.drift.period == pytest.approx(SlowDumpKernel.cost / drift_mod.BUDGET, rel=0.5)
            await asyncio.sleep(1.0)
            assert ka.reconciles == 1, "the periodic reconcile ignored its budget"
            await ka.queue.put(KernelEvent("drift", detail="SAs flushed"))
            await until(lambda: ka.reconciles == 2, timeout=2)
        finally:
            await da.stop()

    asyncio.run(scenario())


def test_the_stretched_period_has_bounds() -> None:
    watch = drift_mod.DriftWatch.__new__(drift_mod.DriftWatch)
    watch.interval, watch.cost = 10.0, 0.001
    assert watch.period == 10.0  # cheap: the interval as configured
    watch.cost = 0.5
    assert watch.period == 50.0
    watch.cost = 60.0
    assert watch.period == drift_mod.LONGEST
    watch.interval = 3600.0
    assert watch.period == 3600.0  # a longer interval than LONGEST stands
    watch.interval = 0.0
    assert watch.period == 0.0  # notifications only


def _multi(tmp: Path, side: str, port: int, names: list[str], chg_life: str = "") -> Path:
    """Daemon `side` (a: 127.0.0.1 at `port`, b: 127.0.0.2 at `port` + 2) with one connection
    per name, each with its own identities; `chg_life`: chg's child life_time."""
    psk = tmp / "m.psk"
    psk.write_text("correct horse battery staple\n")
    psk.chmod(0o600)
    other = "b" if side == "a" else "a"
    me, peer = ("127.0.0.1", "127.0.0.2") if side == "a" else ("127.0.0.2", "127.0.0.1")
    mine, theirs = (port, port + 2) if side == "a" else (port + 2, port)
    text = f"settings:\n  port: {mine}\n  port_nat_t: {mine + 1}\nconnections:\n"
    for name in names:
        life = f"\n        life_time: {chg_life}" if name == "chg" and chg_life else ""
        text += (
            f"  {name}:\n    local_addrs: [{me}]\n    remote_addrs: [{peer}]\n"
            f"    remote_port: {theirs}\n"
            f"    local: {{id: {name}.{side}.example, auth: psk}}\n"
            f"    remote: {{id: {name}.{other}.example, auth: psk}}\n    psk_file: {psk}\n"
            "    children:\n      host:\n        mode: transport\n"
            f"        esp_proposals: [aes256gcm16]{life}\n"
        )
    cfg = tmp / f"{side}.yaml"
    cfg.write_text(text)
    return cfg


def test_reload_touches_only_what_changed(tmp_path: Path) -> None:
    port = BASE_PORT + 932
    a = _multi(tmp_path, "a", port, ["keep", "gone", "chg"])
    b = _multi(tmp_path, "b", port, ["keep", "gone", "chg", "new"])

    def spis(k: RecordingKernel, conn: str) -> set[int]:
        return {s for r in k.sas.values() if r.conn == conn for s in (r.spi_in, r.spi_out)}

    async def scenario() -> None:
        da, ha, ka = await make_daemon(a)
        db, _, _ = await make_daemon(b)
        try:
            for name in ("keep", "gone", "chg"):
                await asyncio.wait_for(ha.up(name, None, no_progress), 20)
            keep, chg = spis(ka, "keep"), spis(ka, "chg")
            keep_ike = [s.ike_sa_id for s in da.engine.ike_sas("keep")]
            mark = len(ka.log)
            _multi(tmp_path, "a", port, ["keep", "chg", "new"], chg_life="2h")
            result = await ha.reload()
            assert result == {
                "added": ["new"],
                "removed": ["gone"],
                "changed": ["chg"],
                "unchanged": ["keep"],
            }
            await until(lambda: not spis(ka, "gone") and not spis(ka, "chg") & chg)
            for name in ("chg", "new"):
                await asyncio.wait_for(ha.up(name, None, no_progress), 20)
            assert spis(ka, "keep") == keep
            assert [s.ike_sa_id for s in da.engine.ike_sas("keep")] == keep_ike
            assert not {v for _, v in ka.log[mark:]} & keep, "the unchanged tunnel was touched"
            (new_chg,) = [r for r in ka.sas.values() if r.conn == "chg"]
            assert new_chg.lifetimes.hard_seconds == 7200, "chg runs its new configuration"
            assert spis(ka, "new")
            assert da.drift.counts() == {"found": {}, "repaired": {}}
        finally:
            await da.stop()
            await db.stop()

    asyncio.run(scenario())


def test_reconcile_interval_is_a_setting_with_bounds(tmp_path: Path) -> None:
    from xfrmctl.config import load_config
    from xfrmctl.config.errors import ConfigError

    a, _ = loopback_pair(tmp_path, BASE_PORT + 936)
    assert load_config(a).settings.reconcile_interval == drift_mod.DEFAULT_INTERVAL
    text = a.read_text()
    a.write_text(text.replace("settings:\n", "settings:\n  reconcile_interval: 0\n"))
    assert load_config(a).settings.reconcile_interval == 0
    a.write_text(text.replace("settings:\n", "settings:\n  reconcile_interval: -2\n"))
    with pytest.raises(ConfigError) as info:
        load_config(a)
    assert "reconcile_interval" in str(info.value), str(info.value)
