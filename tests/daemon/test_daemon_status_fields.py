"""`status --json` timing fields from a live daemon: each documented field carries a value."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from daemon_helpers import BASE_PORT, loopback_pair, make_daemon, no_progress


def test_ike_and_child_times_are_reported(tmp_path: Path) -> None:
    a, b = loopback_pair(
        tmp_path,
        BASE_PORT + 700,
        a_conn="rekey_time: 2h\nreauth_time: 3h\nrand_time: 60",
        a_child="rekey_time: 1h\nlife_time: 70m\nrand_time: 60",
    )

    async def scenario() -> None:
        da, ha, _ = await make_daemon(a)
        db, _, _ = await make_daemon(b)
        try:
            await asyncio.wait_for(ha.up("tun", None, no_progress), 20)
            (ike,) = (await ha.status(None)).ike_sas
            assert ike.established_at is not None
            assert abs(ike.established_at - datetime.now(UTC)) < timedelta(seconds=30)
            assert ike.rekey_in is not None and 7200 - 60 - 30 <= ike.rekey_in <= 7200
            assert ike.reauth_in is not None and 10800 - 60 - 30 <= ike.reauth_in <= 10800
            (child,) = ike.children
            assert child.rekey_in is not None and 3600 - 60 - 30 <= child.rekey_in <= 3600
            assert child.expires_in is not None and 4200 - 30 <= child.expires_in <= 4200
            assert child.offload == ""  # the recording kernel offloads nothing
        finally:
            await da.stop()
            await db.stop()

    asyncio.run(scenario())
