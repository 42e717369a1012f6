"""The control protocol on the wire: framing, errors, progress, socket permissions."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import FakeHandler, ServerThread

from xfrmctl.daemon.control import ControlServer, ControlSocketError
from xfrmctl.daemon.status import StatusReport


def exchange(path: Path, *lines: bytes, replies: int) -> list[dict[str, Any]]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        # A server that refuses (BUSY) may answer and close before the request is sent; the
        # answer is still there to read, as xfrmctl.client reads it.
        with contextlib.suppress(BrokenPipeError):
            for line in lines:
                sock.sendall(line)
        reader = sock.makefile("rb")
        return [json.loads(reader.readline()) for _ in range(replies)]


def request(command: str, request_id: Any = 1, **args: Any) -> bytes:
    return json.dumps({"id": request_id, "command": command, "args": args}).encode() + b"\n"


def test_socket_is_root_only(server: ServerThread) -> None:
    mode = stat.S_IMODE(os.stat(server.path).st_mode)
    assert stat.S_ISSOCK(os.stat(server.path).st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(os.stat(server.path.parent).st_mode) == 0o700


def test_up_sends_progress_then_one_final_reply(server: ServerThread) -> None:
    first, second, final = exchange(server.path, request("up", 7, name="site-b"), replies=3)
    assert first == {
        "id": 7,
        "event": "ike_sa_init",
        "message": "sending IKE_SA_INIT to 192.0.2.2",
    }
    assert second["event"] == "ike_auth" and "ok" not in second
    assert final["id"] == 7 and final["ok"] is True
    assert final["result"]["ike_sa"]["children"][0]["spi_in"] == "c1a2b3d4"
    assert server.handler.calls == [("up", ("site-b", None))]


def test_handler_control_error_becomes_error_reply(server: ServerThread) -> None:
    _, reply = exchange(server.path, request("up", "a", name="strict", child="lan"), replies=2)
    assert reply["id"] == "a" and reply["ok"] is False
    assert reply["error"]["code"] == "NO_PROPOSAL_CHOSEN"
    assert reply["error"]["details"]["theirs"] == ["aes128-sha1-modp1024"]


def test_unexpected_exception_is_internal_and_server_survives(server: ServerThread) -> None:
    [reply] = exchange(server.path, request("up", 1, name="crash"), replies=1)
    assert reply["ok"] is False and reply["error"]["code"] == "INTERNAL"
    assert "RuntimeError: handler bug" in reply["error"]["message"]
    [again] = exchange(server.path, request("version", 2), replies=1)
    assert again["ok"] is True and again["result"]["protocol"] == 1


@pytest.mark.parametrize(
    ("line", "code", "words"),
    [
        (b"{not json\n", "BAD_REQUEST", "not valid JSON"),
        (b"[1, 2]\n", "BAD_REQUEST", "must be a JSON object"),
        (b'{"id": 1}\n', "BAD_REQUEST", "command must be a string"),
        (request("launch"), "UNKNOWN_COMMAND", "unknown command 'launch'"),
        (request("up"), "BAD_REQUEST", "args.name"),
        (request("up", name="x", child=5), "BAD_REQUEST", "args.child"),
        (b'{"id": 1, "command": "status", "args": [1]}\n', "BAD_REQUEST", "args must be"),
        (b'{"id": [1], "command": "version"}\n', "BAD_REQUEST", "id must be"),
    ],
)
def test_malformed_requests_get_clear_errors(
    server: ServerThread, line: bytes, code: str, words: str
) -> None:
    [reply] = exchange(server.path, line, replies=1)
    assert reply["ok"] is False
    assert reply["error"]["code"] == code
    assert words in reply["error"]["message"]


def test_several_requests_on_one_connection(server: ServerThread) -> None:
    replies = exchange(server.path, request("version", 1) + request("status", 2) + b"\n", replies=2)
    by_id = {r["id"]: r for r in replies}
    assert by_id[1]["result"]["version"] == "0.1.0"
    StatusReport.model_validate(by_id[2]["result"])  # the documented shape, round-tripped


def test_overlong_line_is_refused(server: ServerThread) -> None:
    [reply] = exchange(server.path, b"x" * 70000 + b"\n", replies=1)
    assert reply["error"]["code"] == "BAD_REQUEST" and "longer than" in reply["error"]["message"]


def test_stale_socket_is_replaced(short_dir: Path) -> None:
    path = short_dir / "x.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # bound but nobody listens: what a crashed daemon leaves
    with ServerThread(path, FakeHandler()):
        [reply] = exchange(path, request("version"), replies=1)
        assert reply["ok"] is True
    assert not path.exists()


def test_second_server_on_same_socket_is_refused(server: ServerThread) -> None:
    with (
        pytest.raises(ControlSocketError, match="already listening"),
        ServerThread(server.path, FakeHandler()),
    ):
        pass
    [reply] = exchange(server.path, request("version"), replies=1)
    assert reply["ok"] is True


def test_regular_file_at_socket_path_is_not_replaced(short_dir: Path) -> None:
    path = short_dir / "x.sock"
    path.write_text("precious")
    with (
        pytest.raises(ControlSocketError, match="is not a socket"),
        ServerThread(path, FakeHandler()),
    ):
        pass
    assert path.read_text() == "precious"


def test_server_constructs_without_loop() -> None:
    assert ControlServer(Path("/nonexistent/x.sock"), FakeHandler()).path.name == "x.sock"
