"""bench/sa_watch.py, the lab benchmark's end-of-setup watcher, against this host's kernel in
a private network namespace: it answers when the SA count is reached, with the time, and
times out with the count it saw. Larval SAs (ALLOCSPI) count, and need no ESP module."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns_tools import fresh_netns, ip

WATCH = Path(__file__).resolve().parents[2] / "bench" / "sa_watch.py"

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces"),
]


@pytest.fixture
def ns() -> Iterator[str]:
    with fresh_netns("watch") as name:
        yield name


def larval(ns: str, n: int) -> None:
    for i in range(n):
        ends = ("src", "192.0.2.1", "dst", f"192.0.2.{10 + i}")
        ip(ns, "xfrm", "state", "allocspi", *ends, "proto", "esp", "mode", "tunnel")


def watch(ns: str, want: int, timeout: float) -> subprocess.Popen[str]:
    argv = ["ip", "netns", "exec", ns, sys.executable, str(WATCH), str(want), str(timeout)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_reports_when_the_count_is_reached(ns: str) -> None:
    proc = watch(ns, 3, 30)
    larval(ns, 2)
    time.sleep(0.2)
    assert proc.poll() is None, "two SAs are not three"
    larval(ns, 1)
    before = time.monotonic()
    out, _ = proc.communicate(timeout=30)
    seen, count = out.split()
    assert count == "3" and proc.returncode == 0
    assert before - 0.2 <= float(seen) <= time.monotonic()  # the same system-wide clock


def test_times_out_with_the_count_it_saw(ns: str) -> None:
    larval(ns, 1)
    proc = watch(ns, 5, 0.3)
    out, _ = proc.communicate(timeout=30)
    assert out.split() == ["timeout", "1"] and proc.returncode == 1
