"""The pure parts of the lab benchmark (bench/tunnels.py): /proc parsing, the SAD count, the
ratio line. The benchmark itself runs only in the lab guest (./lab.sh bench)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "tunnels.py"


@pytest.fixture(scope="module")
def tunnels() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_tunnels", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_tunnels"] = module
    spec.loader.exec_module(module)
    return module


def test_cpu_seconds_sums_utime_and_stime_past_a_command_with_spaces(tunnels: ModuleType) -> None:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
    stat = "4242 (python3 (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 1 0"
    assert tunnels.cpu_seconds(stat, clk_tck=100) == pytest.approx(3.0)


def test_rss_kib(tunnels: ModuleType) -> None:
    status = "Name:\tcharon\nVmPeak:\t  20000 kB\nVmRSS:\t   9528 kB\nThreads:\t17\n"
    assert tunnels.rss_kib(status) == 9528
    with pytest.raises(ValueError):
        tunnels.rss_kib("Name:\tx\n")


def test_sad_count(tunnels: ModuleType) -> None:
    assert tunnels.sad_count("\t SAD count 200\n") == 200


def test_ratio_line_is_xfrmctl_over_strongswan(tunnels: ModuleType) -> None:
    xf = {"setups_per_s": 30.0, "cpu_ms_per_setup": 10.0, "kib_per_ike_sa": 5.0, "up_latency_s": 2}
    sw = {"setups_per_s": 20.0, "cpu_ms_per_setup": 20.0, "kib_per_ike_sa": 10.0, "up_latency_s": 4}
    assert tunnels.ratio_line(xf, sw, 200) == (
        "ratio_setups_per_s=1.500 ratio_cpu_ms_per_setup=0.500 ratio_kib_per_ike_sa=0.500 "
        "ratio_up_latency=0.500 n=200"
    )
    assert "ratio_setups_per_s=nan" in tunnels.ratio_line(xf, {**sw, "setups_per_s": 0.0}, 1)


def test_site_addresses_are_distinct_and_skip_the_network_address(tunnels: ModuleType) -> None:
    ips = [tunnels.host_ip(i, 1) for i in range(1000)]
    assert len(set(ips)) == 1000
    assert ips[0] == "10.1.0.1" and ips[255] == "10.1.1.0" and "10.1.0.0" not in ips
