"""The lab runner's console relay and stall watchdog (integration/guest_console.py,
stall_watch.py, lab.py's one more boot): a CI log keeps what came before the guest, and a
guest that stops moving is stopped and reported instead of holding CI until its limit."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

INTEGRATION = Path(__file__).resolve().parents[1] / "integration"
sys.path.insert(0, str(INTEGRATION))

import guest_console  # noqa: E402
import lab  # noqa: E402
import stall_watch  # noqa: E402

# Writes to our stdout the way QEMU's file chardevs do: two opens of /proc/self/fd/1 by path.
LIKE_QEMU = "echo one > /proc/self/fd/1; echo two > /proc/self/fd/1"


def test_a_log_file_keeps_what_came_before_and_after_the_guest(tmp_path: Path) -> None:
    log = tmp_path / "ci.log"
    code = (
        f"import sys; sys.path.insert(0, {str(INTEGRATION)!r}); import guest_console\n"
        "print('before', flush=True)\n"
        f"rc, stalled = guest_console.run(['sh', '-c', {LIKE_QEMU!r}], {{}}, "
        f"__import__('pathlib').Path({str(tmp_path)!r}), None)\n"
        "print('after', rc, stalled, flush=True)\n"
    )
    with log.open("wb") as out:
        subprocess.run([sys.executable, "-c", code], stdout=out, check=True)
    assert log.read_bytes() == b"before\none\ntwo\nafter 0 False\n"
    assert (tmp_path / "guest-console.log").read_bytes() == b"one\ntwo\n"


@pytest.fixture
def quick_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guest_console, "POLL_S", 0.05)
    monkeypatch.setattr(guest_console, "SAMPLE_S", 0.1)


@pytest.mark.usefixtures("quick_poll")
def test_a_silent_guest_is_stopped_with_its_whole_group(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pidfile = tmp_path / "grandchild"
    script = (
        f"sleep 60 & echo $! > {pidfile}; (mkdir -p progress; echo 'a.py::t' > progress/gw1); wait"
    )
    rc, stalled = guest_console.run(["sh", "-c", f"cd {tmp_path}; {script}"], {}, tmp_path, 1.0)
    assert stalled and rc == -signal.SIGKILL  # not sh's own end, 60 s on
    grandchild = int(pidfile.read_text())
    time.sleep(0.2)
    assert not Path(f"/proc/{grandchild}").exists() or "Z" in _state(grandchild)
    err = capsys.readouterr().err
    assert "stopping it" in err and "gw1: a.py::t" in err and "(no stall report)" in err
    assert f"  sleep (pid {grandchild}): state S, 0.00 CPUs busy" in err  # the host's view


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.mark.usefixtures("quick_poll")
def test_tests_that_move_keep_a_quiet_guest_alive(tmp_path: Path) -> None:
    touch = f"for i in 1 2 3 4 5 6 7 8; do echo x > {tmp_path}/progress/gw0; sleep 0.3; done"
    rc, stalled = guest_console.run(["sh", "-c", touch], {}, tmp_path, 1.0)
    assert (rc, stalled) == (0, False)


@pytest.mark.usefixtures("quick_poll")
def test_the_guests_report_is_printed_and_cleared_before_the_next_boot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "stall-report.txt").write_text("stale\n")
    write = f"echo 'ps says' > {tmp_path}/stall-report.txt; sleep 30"
    _, stalled = guest_console.run(["sh", "-c", write], {}, tmp_path, 1.0)
    assert stalled
    err = capsys.readouterr().err
    assert "ps says" in err and "stale" not in err and "(no test had started)" in err


def test_progress_notes_name_the_running_test_then_clear(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XFRMCTL_LAB_OUT", str(tmp_path))
    worker = stall_watch.StallWatch(_config(controller=False, workerinput={"workerid": "gw2"}))
    worker.pytest_runtest_logstart("t.py::case", ("t.py", 1, "case"))
    assert guest_console.in_flight(tmp_path / "progress")[0].startswith("gw2: t.py::case (since ")
    worker.pytest_runtest_logfinish("t.py::case", ("t.py", 1, "case"))
    assert guest_console.in_flight(tmp_path / "progress") == []
    # xdist's controller hears every worker's start: it notes none of them.
    stall_watch.StallWatch(_config(controller=True)).pytest_runtest_logstart("t.py::x", None)
    assert sorted(p.name for p in (tmp_path / "progress").iterdir()) == ["gw2"]


def _config(controller: bool, **fields: Any) -> Any:
    plugins = SimpleNamespace(has_plugin=lambda name: controller and name == "dsession")
    return SimpleNamespace(pluginmanager=plugins, **fields)


def test_the_watch_reports_once_nothing_has_moved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stall_watch, "CHECK_EVERY_S", 0.05)
    monkeypatch.setenv("XFRMCTL_LAB_STALL", "0.5")
    progress = tmp_path / "progress"
    progress.mkdir()
    (progress / "gw0").write_text("t.py::hung (since 10:00:00)\n")
    threading.Thread(target=stall_watch.watch, args=(progress,), daemon=True).start()
    report = tmp_path / "stall-report.txt"
    for _ in range(200):
        if report.exists():
            break
        time.sleep(0.05)
    assert "gw0: t.py::hung" in report.read_text()
    monkeypatch.setenv("XFRMCTL_LAB_STALL", "1e9")  # the thread lives on: no more reports


def test_the_stall_report_says_what_the_guest_is_doing(tmp_path: Path) -> None:
    progress = tmp_path / "progress"
    progress.mkdir()
    (progress / "gw0").write_text("t.py::hung (since 10:00:00)\n")
    stall_watch.report(progress)
    text = (tmp_path / "stall-report.txt").read_text()
    assert "gw0: t.py::hung" in text
    assert re.search(rf"^\s*{os.getpid()}\s", text, re.MULTILINE)  # ps lists this process
    assert "$ sh -c dmesg | tail -n 40" in text


def test_the_guest_reports_a_while_before_the_host_gives_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XFRMCTL_LAB_STALL", "100")
    assert stall_watch.report_after() == 60


def test_a_stalled_guest_boots_once_more_and_only_once() -> None:
    calls: list[int] = []

    def boot(results: list[int]) -> Any:
        def one() -> int:
            calls.append(1)
            return results[len(calls) - 1]

        return one

    assert lab.boot_twice_if_stalled(boot([lab.STALLED, 0])) == 0 and len(calls) == 2
    calls.clear()
    assert lab.boot_twice_if_stalled(boot([lab.STALLED, lab.STALLED])) == lab.STALLED
    assert len(calls) == 2
    calls.clear()
    assert lab.boot_twice_if_stalled(boot([1])) == 1 and len(calls) == 1


def test_the_stall_limit_comes_from_the_environment_into_the_guest(tmp_path: Path) -> None:
    code = (
        f"import sys; sys.path.insert(0, {str(INTEGRATION)!r}); import lab, pathlib\n"
        f"script = lab.guest_script(pathlib.Path({str(tmp_path)!r}), ['true'])\n"
        "print(lab.STALL_AFTER_S, script.read_text())\n"
    )
    env = {**os.environ, "XFRMCTL_LAB_STALL": "77"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("77.0 ") and "export XFRMCTL_LAB_STALL=77\n" in out.stdout


def test_a_sigterm_to_the_runner_ends_the_guest_too(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild"
    guest = f"sleep 60 & echo $! > {pidfile}; wait"
    code = (
        f"import sys; sys.path.insert(0, {str(INTEGRATION)!r}); import guest_console, pathlib\n"
        f"guest_console.run(['sh', '-c', {guest!r}], {{}}, pathlib.Path({str(tmp_path)!r}), None)\n"
    )
    runner = subprocess.Popen([sys.executable, "-c", code])
    for _ in range(200):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        time.sleep(0.05)
    grandchild = int(pidfile.read_text())
    runner.terminate()
    assert runner.wait(timeout=30) == 128 + signal.SIGTERM
    time.sleep(0.2)
    assert not Path(f"/proc/{grandchild}").exists() or "Z" in _state(grandchild)


def test_the_hosts_view_tells_a_spinning_process_from_a_waiting_one() -> None:
    spin = f"sleep 60 & exec {sys.executable} -c 'while True: pass'"
    group = subprocess.Popen(["sh", "-c", spin], start_new_session=True)
    try:
        time.sleep(0.3)
        lines = guest_console.group_state(group.pid, sample_s=1.0).splitlines()
    finally:
        os.killpg(group.pid, signal.SIGKILL)
        group.wait()
    sleeper = next(line for line in lines if line.startswith("  sleep "))
    spinner = next(line for line in lines if not line.startswith(("  sleep ", "  sh ")))
    assert "state S, 0.00 CPUs busy" in sleeper and "waits in -" not in sleeper
    assert float(spinner.split("state R, ")[1].split()[0]) > 0.2


def test_the_hosts_view_of_an_empty_group_says_so() -> None:
    assert guest_console.group_state(2**22 + 1, sample_s=0.01) == "  (no process left)"
