"""`xfrmctl daemon` end to end in this process, with a recording kernel: the settings that only
run_daemon reads (socket, log_level, port, port_nat_t) take effect, and SIGTERM stops it."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from pathlib import Path

import pytest
from daemon_helpers import BASE_PORT, RecordingKernel

from xfrmctl.client import ControlClient
from xfrmctl.daemon.main import run_daemon

PORT = BASE_PORT + 700  # a range of its own among the daemon tests


def config(tmp: Path, settings: str) -> Path:
    psk = tmp / "k.psk"
    psk.write_text("a secret\n")
    psk.chmod(0o600)
    cfg = tmp / "xfrmctl.yaml"
    cfg.write_text(
        f"settings:\n{settings}"
        "connections:\n  c:\n    local_addrs: [127.0.0.1]\n    remote_addrs: [127.0.0.2]\n"
        "    local: {auth: psk, id: a.example}\n    remote: {auth: psk, id: b.example}\n"
        "    psk_file: k.psk\n    children:\n      n: {mode: transport}\n"
    )
    return cfg


def udp_port_taken(port: int) -> bool:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind(("127.0.0.1", port))
    except OSError:
        return True
    finally:
        probe.close()
    return False


async def serve(cfg: Path, sock: Path, cli_level: str | None = None) -> tuple[int, dict, dict]:
    """Run the daemon, look at it while it runs, then SIGTERM it; its exit code and findings."""
    task = asyncio.create_task(run_daemon(cfg, None, RecordingKernel(), log_level=cli_level))
    for _ in range(200):
        if sock.exists() or task.done():
            break
        await asyncio.sleep(0.02)
    assert not task.done(), f"the daemon exited early with {task.result()}"
    report = await asyncio.to_thread(ControlClient(sock).call, "status", {"name": None})
    seen = {
        "level": logging.getLevelName(logging.getLogger().level),
        "ike": udp_port_taken(PORT),
        "natt": udp_port_taken(PORT + 1),
    }
    os.kill(os.getpid(), signal.SIGTERM)
    return await asyncio.wait_for(task, 10), report, seen


def test_settings_socket_log_level_and_ports_take_effect(tmp_path: Path) -> None:
    sock = tmp_path / "ctl" / "xfrmctl.sock"
    sock.parent.mkdir()
    settings = f"  socket: {sock}\n  log_level: debug\n  port: {PORT}\n  port_nat_t: {PORT + 1}\n"
    code, report, seen = asyncio.run(serve(config(tmp_path, settings), sock))
    assert code == 0
    assert [c["name"] for c in report["connections"]] == ["c"], report
    assert seen == {"level": "DEBUG", "ike": True, "natt": True}
    assert not sock.exists(), "the control socket outlived the daemon"
    assert not udp_port_taken(PORT) and not udp_port_taken(PORT + 1)


def test_the_command_line_log_level_wins(tmp_path: Path) -> None:
    sock = tmp_path / "xfrmctl.sock"
    settings = f"  socket: {sock}\n  log_level: debug\n  port: {PORT}\n  port_nat_t: {PORT + 1}\n"
    _, _, seen = asyncio.run(serve(config(tmp_path, settings), sock, cli_level="warning"))
    assert seen["level"] == "WARNING"


def test_a_bad_configuration_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(tmp_path, "  log_level: loud\n")
    assert asyncio.run(run_daemon(cfg, tmp_path / "s.sock", RecordingKernel())) == 2
    err = capsys.readouterr().err
    assert "log_level" in err and str(cfg) in err, err


def test_the_running_daemon_keeps_no_configuration_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The models of every connection (~5 KiB each) are done with once the specs are built;
    run_daemon's frame lives as long as the daemon, and held the first ones (issue 15)."""
    import gc
    import weakref

    import xfrmctl.config

    models: list[weakref.ref[object]] = []
    real = xfrmctl.config.load_config

    def load(path: Path) -> object:
        loaded = real(path)
        models.append(weakref.ref(loaded.model))
        return loaded

    monkeypatch.setattr(xfrmctl.config, "load_config", load)
    sock = tmp_path / "xfrmctl.sock"
    settings = f"  socket: {sock}\n  port: {PORT}\n  port_nat_t: {PORT + 1}\n"
    alive: list[bool] = []

    async def run() -> None:
        task = asyncio.create_task(run_daemon(config(tmp_path, settings), None, RecordingKernel()))
        while not sock.exists():
            assert not task.done(), task.result()
            await asyncio.sleep(0.02)
        gc.collect()
        alive.extend(ref() is not None for ref in models)
        os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(task, 10) == 0

    asyncio.run(run())
    assert alive == [False]
