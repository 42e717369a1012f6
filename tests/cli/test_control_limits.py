"""The control socket under hostile or careless clients (found by fuzzing): a refused peer is
exit 3, deep JSON is a clean BAD_REQUEST, idle and surplus connections are closed."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from pathlib import Path

import pytest
from cli_helpers import FakeHandler, ServerThread
from test_control import exchange, request
from typer.testing import CliRunner

from xfrmctl.cli import app
from xfrmctl.daemon.control import ControlServer

runner = CliRunner()


def test_a_refused_peer_exits_3_not_accessible(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ControlServer, "_peer_allowed", lambda self, writer: False)
    with ServerThread(short_dir / "run" / "x.sock", FakeHandler()) as server:
        result = runner.invoke(app, ["--socket", str(server.path), "status"])
    assert result.exit_code == 3, result.output
    assert "permission denied by the daemon: only root may use this socket" in result.stderr


def test_json_nested_30000_deep_is_refused_without_a_traceback(
    server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    deep = b"[" * 30000 + b"]" * 30000 + b"\n"
    with caplog.at_level(logging.DEBUG):
        (reply,) = exchange(server.path, deep, replies=1)
        (after,) = exchange(server.path, request("version"), replies=1)  # still serving
    assert reply["ok"] is False and reply["error"]["code"] == "BAD_REQUEST"
    assert "nested too deeply" in reply["error"]["message"]
    assert after["ok"] is True
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def wait_closed(sock: socket.socket, within: float) -> float:
    start = time.monotonic()
    sock.settimeout(within)
    assert sock.recv(1) == b"", "the server sent something instead of closing"
    return time.monotonic() - start


def test_an_idle_connection_is_closed_but_not_one_waiting_for_its_request(
    server: ServerThread,
) -> None:
    server.server.idle_timeout = 0.3
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle:
        idle.connect(str(server.path))
        assert wait_closed(idle, 5) < 3

    async def slow_up(name: str, child: str | None, progress: object) -> dict[str, str]:
        await asyncio.sleep(1.0)  # longer than the idle timeout
        return {"done": name}

    server.handler.up = slow_up  # type: ignore[method-assign]
    (reply,) = exchange(server.path, request("up", name="site-b"), replies=1)
    assert reply == {"id": 1, "ok": True, "result": {"done": "site-b"}}


def connections_become(server: ServerThread, n: int, within: float = 10) -> None:
    """Wait for the server's own count (a fixed sleep was too short on a loaded machine)."""
    deadline = time.monotonic() + within
    while server.server._connections != n:
        assert time.monotonic() < deadline, f"{server.server._connections} connections, not {n}"
        time.sleep(0.01)


def test_connections_beyond_the_limit_get_busy(server: ServerThread) -> None:
    server.server.max_connections = 2
    held = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2)]
    try:
        for s in held:
            s.connect(str(server.path))
        connections_become(server, 2)  # both accepted and counted
        (reply,) = exchange(server.path, request("version"), replies=1)
        assert reply["ok"] is False and reply["error"]["code"] == "BUSY"
    finally:
        for s in held:
            s.close()
    connections_become(server, 0)
    (reply,) = exchange(server.path, request("version"), replies=1)
    assert reply["ok"] is True


def test_a_socket_folder_made_by_another_daemon_meanwhile_is_fine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two daemons (two namespaces) starting at once both find /run/xfrmctl missing; the one
    that creates it second must not fail with "File exists"."""
    real_mkdir = Path.mkdir

    def raced(self: Path, *args: object, **kwargs: object) -> None:
        real_mkdir(self, 0o700)  # the other daemon wins the race
        real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", raced)
    server = ControlServer(tmp_path / "run" / "x.sock", FakeHandler())

    async def run() -> None:
        await server.start()
        await server.close()

    asyncio.run(run())
