"""Fixtures for the real-kernel lab: network-namespace hosts with guaranteed teardown."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from netlab import Network, esp_unavailable


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.geteuid() != 0:
        raise pytest.UsageError("the integration suite needs root (it creates namespaces)")
    reason = esp_unavailable()
    if reason is not None:
        raise pytest.UsageError(
            f"this kernel ({os.uname().release}) cannot install ESP SAs ({reason}); "
            "run the suite in the real-kernel lab: integration/lab.py pytest"
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest scenarios first (marked `long`), so parallel workers finish together instead of
    one starting a 10-minute scenario when the other is nearly done."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


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
