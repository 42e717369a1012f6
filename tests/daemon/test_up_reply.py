"""`up`'s reply (issue 15): sent only once the kernel holds the new Child SA, and built
without asking the kernel for the counters of the pairs it just installed (two GETAE round
trips per child before the user's tunnel was reported up) - yet the same as `status`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from daemon_helpers import BASE_PORT, RecordingKernel, loopback_pair, make_daemon

from xfrmctl.daemon.kernel_glue import ChildCounters
from xfrmctl.ike.events import ChildSaReady

PORT = BASE_PORT + 760
TIMING = {"rekey_in", "expires_in", "installed_at", "established_at", "reauth_in"}


class CountingKernel(RecordingKernel):
    """Counts counter requests; the counters are what it is told (zero: a fresh pair)."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[int] = []
        self.counts = ChildCounters()
        self.delay = 0.05  # each install takes a while, as netlink under load does

    async def counters(self, ready: ChildSaReady) -> ChildCounters:
        self.asked.append(ready.spi_in)
        return self.counts


def _untimed(view: dict[str, Any]) -> dict[str, Any]:
    """An IKE SA view without the fields that move with the clock between two requests."""
    kids = [{k: v for k, v in c.items() if k not in TIMING} for c in view["children"]]
    return {**{k: v for k, v in view.items() if k not in TIMING}, "children": kids}


def test_up_replies_after_the_install_without_asking_for_counters(tmp_path: Path) -> None:
    a, b = loopback_pair(tmp_path, PORT)
    kernel = CountingKernel()
    seen_at_progress: list[str] = []

    async def progress(message: dict[str, Any]) -> None:
        seen_at_progress.append(message["event"])

    async def scenario() -> None:
        da, ha, _ = await make_daemon(a, kernel)
        db, _, kb = await make_daemon(b)
        try:
            result = await asyncio.wait_for(ha.up("tun", None, progress), 20)
            (child,) = result["ike_sa"]["children"]
            spi_in, spi_out = int(child["spi_in"], 16), int(child["spi_out"], 16)
            # Both SAs of both sides are in place when the reply is built.
            assert spi_in in kernel.sas and spi_out in kernel.outbound
            assert spi_out in kb.sas and spi_in in kb.outbound
            assert kernel.asked == []  # nothing asked of the kernel for the fresh pair
            assert (child["bytes_in"], child["packets_out"]) == (0, 0)
            # The slow path (status: the kernel's counters, zero for a fresh pair) agrees.
            (ike,) = (await ha.status("tun")).ike_sas
            assert kernel.asked == [spi_in]
            assert _untimed(ike.model_dump(mode="json")) == _untimed(result["ike_sa"])
            # `up` of a connection already up installs nothing: the kernel's counters.
            kernel.counts = ChildCounters(100, 1, 200, 2)
            again = await asyncio.wait_for(ha.up("tun", None, progress), 20)
            (child,) = again["ike_sa"]["children"]
            assert (child["bytes_in"], child["packets_out"]) == (100, 2)
            assert kernel.asked == [spi_in, spi_in]
        finally:
            await da.stop()
            await db.stop()

    asyncio.run(scenario())
    assert "child_installed" in seen_at_progress
