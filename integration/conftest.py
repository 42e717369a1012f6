"""Fixtures for the real-kernel lab: network-namespace hosts with guaranteed teardown."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from netlab import Network


def _kernel_has_esp() -> str | None:
    """None when this kernel can install an ESP SA, else the reason it cannot."""
    ns = f"xfrmctl-esp-probe-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        proc = subprocess.run(
            [
                "ip",
                "-n",
                ns,
                "xfrm",
                "state",
                "add",
                "src",
                "192.0.2.1",
                "dst",
                "192.0.2.2",
                "proto",
                "esp",
                "spi",
                "0x100",
                "mode",
                "transport",
                "aead",
                "rfc4106(gcm(aes))",
                "0x" + "00" * 20,
                "128",
            ],
            capture_output=True,
            text=True,
        )
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    return None if proc.returncode == 0 else proc.stderr.strip()


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.geteuid() != 0:
        raise pytest.UsageError("the integration suite needs root (it creates namespaces)")
    reason = _kernel_has_esp()
    if reason is not None:
        raise pytest.UsageError(
            f"this kernel ({os.uname().release}) cannot install ESP SAs ({reason}); "
            "run the suite in the real-kernel lab: integration/lab.py pytest"
        )


@pytest.fixture
def lab_out(tmp_path: Path) -> Path:
    """Where captures and logs go; under XFRMCTL_LAB_OUT when set, so they survive the guest."""
    base = os.environ.get("XFRMCTL_LAB_OUT")
    return Path(base) if base else tmp_path


@pytest.fixture
def net(lab_out: Path, request: pytest.FixtureRequest) -> Iterator[Network]:
    workdir = lab_out / "captures" / request.node.name.replace("/", "_")
    workdir.mkdir(parents=True, exist_ok=True)
    network = Network(workdir)
    try:
        yield network
    finally:
        network.close()
