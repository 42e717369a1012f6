"""Telling a restart from a stop: systemd's job list, our unit from the cgroup, and SIGUSR2."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import pytest
from daemon_helpers import BASE_PORT, RecordingKernel

from xfrmctl.daemon import restart_request
from xfrmctl.daemon.main import run_daemon
from xfrmctl.daemon.restart_request import own_unit, restart_pending

JOBS = """\
1234 xfrmctl.service restart running
1235 other.service start waiting
"""


def test_own_unit_from_cgroup_v2_and_v1() -> None:
    assert own_unit("0::/system.slice/xfrmctl.service\n") == "xfrmctl.service"
    v1 = "12:pids:/system.slice/vpn@a.service\n1:name=systemd:/system.slice/vpn@a.service\n"
    assert own_unit(v1) == "vpn@a.service"
    assert own_unit("0::/user.slice/user-0.slice/session-3.scope\n") is None


def test_only_a_restart_job_of_our_own_unit_counts() -> None:
    assert restart_pending(JOBS, "xfrmctl.service")
    assert not restart_pending(JOBS, "other.service")  # a start job
    assert not restart_pending(JOBS.replace("restart", "stop"), "xfrmctl.service")
    assert not restart_pending("", "xfrmctl.service")


def test_outside_systemd_a_sigterm_is_a_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    assert asyncio.run(restart_request.systemd_restart_pending()) is False


def test_asks_systemctl_under_systemd(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A fake `systemctl` on PATH answers with a restart job for our cgroup's unit."""
    jobs = JOBS.replace("xfrmctl.service", "me.service")
    fake_systemctl(tmp_path, monkeypatch, f"cat <<'END'\n{jobs}END")
    caplog.set_level("INFO", "xfrmctl.daemon")
    monkeypatch.setattr(restart_request, "own_unit", lambda _: "me.service")
    assert asyncio.run(restart_request.systemd_restart_pending()) is True
    monkeypatch.setattr(restart_request, "own_unit", lambda _: "other-unit.service")
    assert asyncio.run(restart_request.systemd_restart_pending()) is False
    assert "systemd lists no restart job for other-unit.service: a stop" in caplog.text


def test_sigusr2_then_sigterm_writes_the_state_file_beside_the_socket(tmp_path: Path) -> None:
    psk = tmp_path / "k.psk"
    psk.write_text("a secret\n")
    psk.chmod(0o600)
    sock = tmp_path / "xfrmctl.sock"
    cfg = tmp_path / "xfrmctl.yaml"
    cfg.write_text(
        f"settings:\n  socket: {sock}\n  port: {BASE_PORT + 580}\n  port_nat_t: {BASE_PORT + 581}\n"
        "connections:\n  c:\n    local_addrs: [127.0.0.1]\n    remote_addrs: [127.0.0.2]\n"
        "    local: {auth: psk, id: a.example}\n    remote: {auth: psk, id: b.example}\n"
        "    psk_file: k.psk\n    children:\n      n: {mode: transport}\n"
    )

    async def serve(keep: bool) -> tuple[int, RecordingKernel]:
        kernel = RecordingKernel()
        task = asyncio.create_task(run_daemon(cfg, None, kernel))
        for _ in range(200):
            if sock.exists() or task.done():
                break
            await asyncio.sleep(0.02)
        if keep:
            os.kill(os.getpid(), signal.SIGUSR2)
            await asyncio.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)
        return await asyncio.wait_for(task, 10), kernel

    code, kernel = asyncio.run(serve(keep=True))
    state = tmp_path / "restart-state.json"
    assert code == 0 and state.exists() and ("remove_all", 0) not in kernel.log
    assert json.loads(state.read_text())["engine"]["ike_sas"] == []
    code, kernel = asyncio.run(serve(keep=False))  # takes the file, then a plain stop
    assert code == 0 and not state.exists() and ("remove_all", 0) in kernel.log


def fake_systemctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    fake = tmp_path / "systemctl"
    fake.write_text(f"#!/bin/sh\n{script}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("INVOCATION_ID", "0123")
    monkeypatch.setattr(restart_request, "own_unit", lambda _: "xfrmctl.service")


def test_a_query_killed_by_systemds_stop_sweep_is_asked_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """systemd's SIGTERM reaches every process of the unit: the first query dies of it."""
    marker = tmp_path / "killed-once"
    fake_systemctl(
        tmp_path,
        monkeypatch,
        f"if [ ! -e {marker} ]; then touch {marker}; kill -TERM $$; fi\ncat <<'END'\n{JOBS}END",
    )
    caplog.set_level("INFO", "xfrmctl.daemon")
    assert asyncio.run(restart_request.systemd_restart_pending()) is True
    assert "killed by signal 15: asking again" in caplog.text


def test_a_query_killed_every_time_or_failing_is_a_stop_and_says_why(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake_systemctl(tmp_path, monkeypatch, f"kill -TERM $$\ncat <<'END'\n{JOBS}END")
    assert asyncio.run(restart_request.systemd_restart_pending()) is False
    assert f"killed {restart_request.ATTEMPTS} times: tearing down" in caplog.text
    fake_systemctl(tmp_path, monkeypatch, "echo 'Failed to connect to bus' >&2\nexit 1")
    caplog.clear()
    assert asyncio.run(restart_request.systemd_restart_pending()) is False
    assert "failed (exit 1: Failed to connect to bus): tearing down" in caplog.text
