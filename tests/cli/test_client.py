"""The CLI's control client (`xfrmctl.client`, on `_socket` and `lightjson`) against a scripted
peer: how replies are framed and read, whatever the pieces they arrive in."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import short_dir  # noqa: F401 (fixture)

from xfrmctl.client import ClientError, ControlClient, ProtocolViolation, RemoteError, _Lines


def test_lines_come_whole_whatever_the_pieces() -> None:
    left, right = socket.socketpair()
    with left, right:
        for piece in (b"fi", b"rst\nsec", b"ond\n\nthi", b"rd"):
            left.sendall(piece)
        left.shutdown(socket.SHUT_WR)
        lines = _Lines(right)
        got = [lines.readline() for _ in range(5)]
    assert got == [b"first\n", b"second\n", b"\n", b"third", b""]


class Peer:
    """A daemon stand-in: reads one request line, then sends `pieces` (bytes), then closes."""

    def __init__(self, path: Path, pieces: list[bytes]) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(1)
        self.pieces = pieces
        self.request = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            self.request = conn.makefile("rb").readline()
            for piece in self.pieces:
                conn.sendall(piece)

    def close(self) -> None:
        self.thread.join(5)
        self.listener.close()


@pytest.fixture
def peer_at(short_dir: Path) -> Iterator[Any]:  # noqa: F811
    """start(*pieces) -> (socket path, Peer)."""
    peers: list[Peer] = []

    def start(*pieces: bytes) -> tuple[Path, Peer]:
        path = short_dir / f"p{len(peers)}.sock"
        peers.append(Peer(path, list(pieces)))
        return path, peers[-1]

    yield start
    for peer in peers:
        peer.close()


def _reply(result: Any, request_id: int | None) -> bytes:
    return json.dumps({"id": request_id, "ok": True, "result": result}).encode() + b"\n"


def test_progress_then_result_split_anywhere(peer_at: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    big = {"text": "x" * 200_000}  # several reads of the socket
    first = json.dumps({"id": 7, "event": "progress", "message": "hi"}).encode() + b"\n"
    other = json.dumps({"id": 99, "ok": True, "result": {}}).encode() + b"\n"
    data = first + other + _reply(big, 7)
    path, _ = peer_at(data[:5], data[5:60], data[60:])
    events: list[dict[str, Any]] = []
    client = ControlClient(path, timeout=5)
    monkeypatch.setattr("xfrmctl.client._ids", iter([7]))
    assert client.call("up", {"name": "a", "child": None}, on_event=events.append) == big
    assert events == [{"id": 7, "event": "progress", "message": "hi"}]


def test_the_request_is_what_json_would_send(peer_at: Any) -> None:
    path, peer = peer_at(_reply({}, None))
    args = {"name": "é", "child": None, "ike": False}
    ControlClient(path, timeout=5).call("rekey", args)
    request = json.loads(peer.request)
    assert request["command"] == "rekey" and request["args"] == args
    assert peer.request == json.dumps(request).encode() + b"\n"


@pytest.mark.parametrize(
    ("pieces", "error", "words"),
    [
        ((b"not json\n",), ProtocolViolation, "non-JSON: b'not json\\n'"),
        ((b"[1, 2]\n",), ProtocolViolation, "not a JSON object"),
        ((b'{"id": null, "ok": false, "error": 3}\n',), ProtocolViolation, "without an error"),
        ((), ProtocolViolation, "closed the connection without answering"),
        ((b'{"id": null, "ok": true, "result": 1}',), None, None),  # last line, no newline
        (
            (b'{"id": null, "ok": false, "error": {"code": "X", "message": "m"}}\n',),
            RemoteError,
            "m",
        ),
    ],
)
def test_bad_or_short_replies(
    peer_at: Any, pieces: tuple[bytes, ...], error: type[ClientError] | None, words: str | None
) -> None:
    path, _ = peer_at(*pieces)
    client = ControlClient(path, timeout=5)
    if error is None:
        assert client.call("status") == {"value": 1}
        return
    with pytest.raises(error) as raised:
        client.call("status")
    assert words is not None and words in raised.value.message


def test_a_silent_daemon_times_out(short_dir: Path) -> None:  # noqa: F811
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with listener:
        listener.bind(str(short_dir / "mute.sock"))
        listener.listen(1)
        with pytest.raises(ClientError, match=r"no answer from the daemon within 0\.2 s"):
            ControlClient(short_dir / "mute.sock", timeout=0.2).call("status")
