"""Fixtures for the real-kernel lab: network-namespace hosts with guaranteed teardown."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from netlab import Network, esp_unavailable
from stall_watch import StallWatch


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(StallWatch(config), "stall_watch")


def cpu_times() -> tuple[float, float]:
    """Seconds all CPUs spent busy and idle (iowait counts as idle) since boot, /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK"), idle / os.sysconf("SC_CLK_TCK")


_CPU_AT_START: list[tuple[float, float]] = []


def pytest_sessionstart(session: pytest.Session) -> None:
    _CPU_AT_START.append(cpu_times())
    if os.geteuid() != 0:
        raise pytest.UsageError("the integration suite needs root (it creates namespaces)")
    reason = esp_unavailable()
    if reason is not None:
        raise pytest.UsageError(
            f"this kernel ({os.uname().release}) cannot install ESP SAs ({reason}); "
            "run the suite in the real-kernel lab: integration/lab.py pytest"
        )


@functools.cache
def _shares_a_fixture(module: Path) -> bool:
    return 'scope="module"' in module.read_text()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under `--dist load`, keep a module whose module-scoped fixture serves all its cases (one
    charon, one pluto, one daemon) on one worker; every other test is scheduled alone.
    (xdist's own loadgroup ignores module-level xdist_group marks in this version.)"""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if _shares_a_fixture(config.rootpath / module) else nodeid

    return SharedFixtureScheduling(config, log)


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


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """How busy the machine's CPUs were over the run: idle CPU while scenarios wait on timers is
    room for another worker (XFRMCTL_LAB_WORKERS); a busy one is not."""
    if not _CPU_AT_START or hasattr(terminalreporter.config, "workerinput"):
        return
    busy, idle = (now - then for now, then in zip(cpu_times(), _CPU_AT_START[0], strict=True))
    share = 100 * busy / max(busy + idle, 1e-9)
    terminalreporter.write_line(
        f"lab CPU: {share:.0f}% busy over {os.cpu_count()} CPUs "
        f"({busy:.0f} s busy, {idle:.0f} s idle)"
    )
