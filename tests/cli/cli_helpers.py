"""A real ControlServer on a temporary socket, driven by a scripted fake handler; and the
modules a CLI process imports."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from xfrmctl.daemon.control import ControlError, ControlServer, Progress
from xfrmctl.daemon.status import (
    ChildConfigStatus,
    ChildSaStatus,
    ConnectionStatus,
    IkeSaStatus,
    StatusReport,
    UpResult,
)


def sample_ike_sa() -> IkeSaStatus:
    return IkeSaStatus(
        name="site-b",
        unique_id=3,
        state="ESTABLISHED",
        local_addr="192.0.2.1",
        remote_addr="192.0.2.2",
        local_id="gw-a.example.org",
        remote_id="gw-b.example.org",
        proposal="aes256gcm16-prfsha384-x25519",
        established_at=datetime(2024, 1, 1, tzinfo=UTC),
        rekey_in=13000,
        children=[
            ChildSaStatus(
                name="lan",
                unique_id=7,
                state="INSTALLED",
                mode="tunnel",
                protocol="esp",
                spi_in=0xC1A2B3D4,
                spi_out=0x0A0B0C0D,
                local_ts=["10.1.0.0/16"],
                remote_ts=["10.2.0.0/16"],
                proposal="aes256gcm16",
                bytes_in=1234,
                packets_in=10,
                rekey_in=3000,
            )
        ],
    )


class FakeHandler:
    """Behaves like the daemon for a connection `site-b`; anything else fails in words."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def up(self, name: str, child: str | None, progress: Progress) -> dict[str, Any]:
        self.calls.append(("up", (name, child)))
        if name == "crash":
            raise RuntimeError("handler bug")
        await progress({"event": "ike_sa_init", "message": "sending IKE_SA_INIT to 192.0.2.2"})
        if name == "strict":
            raise ControlError(
                "NO_PROPOSAL_CHOSEN",
                "the peer accepted none of our IKE proposals",
                {
                    "ours": ["aes256gcm16-prfsha384-x25519"],
                    "theirs": ["aes128-sha1-modp1024"],
                },
            )
        if name != "site-b":
            raise ControlError("NO_SUCH_CONNECTION", f"no connection named {name!r}")
        await progress({"event": "ike_auth", "message": "IKE_AUTH done, installing SAs"})
        return UpResult(ike_sa=sample_ike_sa()).model_dump(mode="json")

    async def down(self, name: str, child: str | None, progress: Progress) -> dict[str, Any]:
        self.calls.append(("down", (name, child)))
        return {"deleted_ike_sas": 0 if child else 1, "deleted_child_sas": 1}

    async def status(self, name: str | None) -> StatusReport:
        self.calls.append(("status", name))
        return StatusReport(
            ike_sas=[sample_ike_sa()],
            connections=[
                ConnectionStatus(name="site-b", remote_addrs=["192.0.2.2"], active=True),
                ConnectionStatus(
                    name="site-c",
                    remote_addrs=["192.0.2.3"],
                    children=[
                        ChildConfigStatus(
                            name="dmz",
                            mode="tunnel",
                            protocol="esp",
                            start_action="trap",
                            local_ts=["10.1.0.0/16"],
                            remote_ts=["10.3.0.0/16"],
                        )
                    ],
                ),
            ],
        )

    async def reload(self) -> dict[str, Any]:
        self.calls.append(("reload", None))
        raise ControlError(
            "CONFIG_INVALID",
            "the new configuration has errors; the running one is kept",
            {"errors": ["xfrmctl.yaml:3: settings.port: 0 is out of range", "second"]},
        )


class ServerThread:
    """Runs an asyncio loop with a ControlServer in a background thread."""

    def __init__(self, path: Path, handler: FakeHandler) -> None:
        self.path = path
        self.handler = handler
        self.loop = asyncio.new_event_loop()
        self.server = ControlServer(path, handler)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(5)
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(5)
        self._stop()

    def _stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory: Unix socket paths are limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="xc", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def server(short_dir: Path) -> Iterator[ServerThread]:
    with ServerThread(short_dir / "run" / "xfrmctl.sock", FakeHandler()) as running:
        yield running


def run_importtime(
    module: str, *args: str, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """`python -X importtime -m MODULE ARGS`: the finished process and every module it
    imported (read from the importtime lines of its stderr)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", module, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    return proc, modules
