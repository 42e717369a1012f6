"""Two real daemons negotiate over UDP on loopback, with a recording kernel instead of XFRM.

This runs the whole product path except netlink: YAML config → specs → engine → sockets →
events → kernel calls → control handler, with no root and no VM.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from daemon_helpers import BASE_PORT, GRACE, make_daemon, no_progress, write_config

from xfrmctl.daemon.control import ControlError
from xfrmctl.daemon.kernel_glue import KernelEvent


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    a = write_config(
        tmp_path, "a", "127.0.0.1", "127.0.0.2", BASE_PORT, BASE_PORT + 2, "a.example", "b.example"
    )
    b = write_config(
        tmp_path, "b", "127.0.0.2", "127.0.0.1", BASE_PORT + 2, BASE_PORT, "b.example", "a.example"
    )
    return a, b


def test_up_status_rekey_down(pair: tuple[Path, Path]) -> None:
    async def scenario() -> None:
        da, ha, ka = await make_daemon(pair[0])
        db, _, kb = await make_daemon(pair[1])
        try:
            result = await asyncio.wait_for(ha.up("tun", None, no_progress), 20)
            ike = result["ike_sa"]
            assert ike["state"] == "ESTABLISHED"
            assert ike["proposal"].startswith("aes256gcm16")
            child = ike["children"][0]
            assert child["name"] == "host" and child["mode"] == "transport"
            spi_in = int(child["spi_in"], 16)
            # Both kernels hold the same pair, mirrored, with the same keys.
            await asyncio.sleep(0.1)
            assert spi_in in ka.sas
            peer_view = kb.sas[ka.sas[spi_in].spi_out]
            assert peer_view.spi_out == spi_in
            assert peer_view.encr_key_out == ka.sas[spi_in].encr_key_in
            report = await ha.status(None)
            assert report.ike_sas[0].children[0].bytes_in == 100

            # Soft expiry from the kernel: a new pair is installed before the old one goes.
            await ka.queue.put(KernelEvent("soft", spi=spi_in))
            for _ in range(100):
                await asyncio.sleep(0.05)
                if ("remove", spi_in) in ka.log:
                    break
            await asyncio.sleep(GRACE)
            installs = [i for i, (op, _) in enumerate(ka.log) if op == "install"]
            removal = ka.log.index(("remove", spi_in))
            assert len(installs) == 2 and installs[1] < removal, ka.log
            assert len(ka.sas) == 1 and len(kb.sas) == 1

            down = await asyncio.wait_for(ha.down("tun", None, no_progress), 20)
            assert down["deleted_ike_sas"] == 1
            await asyncio.sleep(0.2)
            assert ka.sas == {} and kb.sas == {}
            assert (await ha.status(None)).ike_sas == []
        finally:
            await da.stop()
            await db.stop()

    asyncio.run(scenario())


def test_up_reports_proposal_mismatch(tmp_path: Path) -> None:
    a = write_config(
        tmp_path,
        "a",
        "127.0.0.1",
        "127.0.0.2",
        BASE_PORT + 10,
        BASE_PORT + 12,
        "a.example",
        "b.example",
        esp="aes128gcm16",
    )
    b = write_config(
        tmp_path,
        "b",
        "127.0.0.2",
        "127.0.0.1",
        BASE_PORT + 12,
        BASE_PORT + 10,
        "b.example",
        "a.example",
        esp="chacha20poly1305",
    )

    async def scenario() -> None:
        da, ha, ka = await make_daemon(a)
        db, _, kb = await make_daemon(b)
        try:
            with pytest.raises(ControlError) as err:
                await asyncio.wait_for(ha.up("tun", None, no_progress), 20)
            assert err.value.code == "NO_PROPOSAL_CHOSEN"
            assert "aes128gcm16" in err.value.message
            assert ka.sas == {} and kb.sas == {}
        finally:
            await da.stop()
            await db.stop()

    asyncio.run(scenario())


def test_unknown_connection_is_named(pair: tuple[Path, Path]) -> None:
    async def scenario() -> None:
        da, ha, _ = await make_daemon(pair[0])
        try:
            with pytest.raises(ControlError) as err:
                await ha.up("nope", None, no_progress)
            assert err.value.code == "UNKNOWN_CONNECTION" and "tun" in err.value.message
        finally:
            await da.stop()

    asyncio.run(scenario())
