"""`dpd_action: restart` against a peer that stays dead backs off instead of looping."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from pathlib import Path

import pytest
from daemon_helpers import BASE_PORT, dead, loopback_pair, make_daemon, no_progress, until

from xfrmctl.daemon.restart import RestartBackoff


def test_backoff_doubles_caps_and_resets() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        fired: list[str] = []
        backoff = RestartBackoff(first=1.0, cap=8.0)
        delays = []
        for _ in range(6):
            armed = backoff.schedule("tun", loop, lambda: fired.append("tun"))
            assert armed is not None
            delays.append(armed)
            # A second PeerDead while one restart is armed does not arm another.
            assert backoff.schedule("tun", loop, lambda: fired.append("x")) is None
            backoff.cancel_all()
        assert delays == [(1.0, 1), (2.0, 2), (4.0, 3), (8.0, 4), (8.0, 5), (8.0, 6)]
        backoff.succeeded("tun")
        assert backoff.delay("tun") == 1.0
        assert backoff.delay("other") == 1.0
        fast = RestartBackoff(first=0.01)
        fast.schedule("tun", loop, lambda: fired.append("tun"))
        await asyncio.sleep(0.05)
        assert fired == ["tun"]

    asyncio.run(scenario())


def test_restart_against_a_dead_peer_backs_off_then_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = loopback_pair(
        tmp_path,
        BASE_PORT + 300,
        a_conn="dpd_delay: 1s\ndpd_timeout: 1s",
        a_child="dpd_action: restart",
    )
    pattern = re.compile(r"DPD action restart for host in ([\d.]+) s \(attempt (\d+)\)")

    def retries() -> list[tuple[float, int]]:
        found = [pattern.search(r.getMessage()) for r in caplog.records]
        return [(float(m[1]), int(m[2])) for m in found if m]

    async def scenario() -> None:
        da, ha, ka = await make_daemon(a)
        db, _, _ = await make_daemon(b)
        db2 = None
        # An unanswered IKE_SA_INIT gives up after 0.2 s; back-off 0.2, 0.4, 0.8 s (cap).
        da.engine.config = dataclasses.replace(
            da.engine.config, retransmit_timeout=0.2, retransmit_tries=0
        )
        da.restarts.first, da.restarts.cap = 0.2, 0.8
        try:
            await asyncio.wait_for(ha.up("tun", None, no_progress), 20)
            dead(db)
            with caplog.at_level(logging.INFO, logger="xfrmctl.daemon"):
                await until(lambda: len(retries()) >= 5, timeout=15, what="five restarts")
                loop = asyncio.get_running_loop()
                t0, seen = loop.time(), len(retries())
                await asyncio.sleep(1.5)
                # Capped at 0.8 s + 0.2 s for the IKE_SA_INIT: at most two more in 1.5 s.
                assert len(retries()) - seen <= 2, retries()
                assert loop.time() - t0 >= 1.5
                got = retries()
                assert [n for _, n in got] == list(range(1, len(got) + 1)), "each retry once"
                assert [d for d, _ in got[:5]] == pytest.approx([0.2, 0.4, 0.8, 0.8, 0.8])
                db2, _, kb2 = await make_daemon(b)  # the peer comes back
                await until(
                    lambda: len(ka.sas) == 1 and len(kb2.sas) == 1,
                    timeout=10,
                    what="re-established",
                )
            assert "tun" not in da.restarts.attempts, "success resets the back-off"
        finally:
            await da.stop()
            if db2 is not None:
                await db2.stop()
            db.sockets.close()

    asyncio.run(scenario())
