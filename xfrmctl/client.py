"""Control-socket client for the CLI: stdlib only, so `xfrmctl status` starts fast.

One request per call over a fresh connection; progress events are passed to a callback and
the final reply is returned or raised as `RemoteError` (docs/control-protocol.md).

Neither `socket` nor `json`: socket.py builds its enums (AddressFamily...) at import and
json imports and compiles `re`, together about 45 M instructions per CLI start, more than the
bare interpreter's own. `_socket` is the same socket object without them, and `lightjson`
gives json's results from the same `_json` accelerator.
"""

import _socket
import errno
import itertools
import os

from xfrmctl import lightjson

TYPE_CHECKING = False  # typing and pathlib cost a few ms per CLI start; mypy reads the block
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

EXIT_FAILED = 1
EXIT_NO_DAEMON = 3

_ids = itertools.count(1)


class ClientError(Exception):
    """Anything that stops a command; `exit_code` is what the CLI exits with."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class DaemonUnavailable(ClientError):
    """No daemon to talk to, or not allowed to talk to it."""

    exit_code = EXIT_NO_DAEMON


class ProtocolViolation(ClientError):
    """The daemon answered something that is not the documented protocol."""


class RemoteError(ClientError):
    """The daemon ran the command and it failed: `code`, `message` and `details` as sent."""

    def __init__(self, code: str, message: str, details: "dict[str, Any]") -> None:
        super().__init__(message)
        self.code = code
        self.details = details


class _Lines:
    """The lines of a socket, each with its newline (the last one maybe without): what
    `socket.makefile("rb").readline()` returns, without socket.py."""

    def __init__(self, sock: _socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()
        self._scanned = 0  # no newline before this offset of the buffer

    def readline(self) -> bytes:
        while (end := self._buffer.find(b"\n", self._scanned)) < 0:
            self._scanned = len(self._buffer)
            chunk = self._sock.recv(65536)
            if not chunk:
                line = bytes(self._buffer)
                self._buffer.clear()
                self._scanned = 0
                return line
            self._buffer += chunk
        line = bytes(self._buffer[: end + 1])
        del self._buffer[: end + 1]
        self._scanned = 0
        return line


def _connect(path: str | os.PathLike[str], timeout: float | None) -> _socket.socket:
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(os.fspath(path))
    except FileNotFoundError:
        sock.close()
        raise DaemonUnavailable(f"xfrmctl daemon is not running (no socket at {path})") from None
    except ConnectionRefusedError:
        sock.close()
        raise DaemonUnavailable(
            f"xfrmctl daemon is not running (nothing listens on {path})"
        ) from None
    except PermissionError:
        sock.close()
        raise DaemonUnavailable(f"permission denied on {path}: run as root") from None
    except OSError as exc:
        sock.close()
        if exc.errno == errno.ENOTSOCK or exc.errno == errno.ECONNREFUSED:
            raise DaemonUnavailable(
                f"xfrmctl daemon is not running ({path} is not a live socket)"
            ) from None
        raise DaemonUnavailable(f"cannot reach the daemon at {path}: {exc.strerror}") from None
    return sock


class ControlClient:
    """Talks to the daemon's control socket; `timeout` bounds each wait for a message."""

    def __init__(self, path: str | os.PathLike[str], timeout: float | None = 120.0) -> None:
        self.path = path
        self.timeout = timeout

    def call(
        self,
        command: str,
        args: "dict[str, Any] | None" = None,
        on_event: "Callable[[dict[str, Any]], None] | None" = None,
    ) -> "dict[str, Any]":
        """Send one request and return its `result`; raise RemoteError if it failed."""
        request_id = next(_ids)
        request = {"id": request_id, "command": command, "args": args or {}}
        sock = _connect(self.path, self.timeout)
        try:
            return self._exchange(sock, request, on_event)
        finally:
            sock.close()

    def _exchange(
        self,
        sock: _socket.socket,
        request: "dict[str, Any]",
        on_event: "Callable[[dict[str, Any]], None] | None",
    ) -> "dict[str, Any]":
        """Send the request and read up to its final reply."""
        request_id = request["id"]
        try:
            # A daemon that refuses us closes at once: its reason is still there to read.
            try:  # noqa: SIM105 (contextlib would be one more import per CLI start)
                sock.sendall(lightjson.dumps(request).encode() + b"\n")
            except BrokenPipeError:
                pass
            reader = _Lines(sock)
            while True:
                line = reader.readline()
                if not line:
                    raise ProtocolViolation("the daemon closed the connection without answering")
                reply = self._decode(line)
                if reply.get("id") not in (request_id, None):
                    continue
                if "ok" not in reply:
                    if on_event is not None:
                        on_event(reply)
                    continue
                return self._final(reply)
        except TimeoutError:
            raise ClientError(f"no answer from the daemon within {self.timeout:g} s") from None
        except PermissionError:
            raise DaemonUnavailable(f"permission denied on {self.path}: run as root") from None
        except (ConnectionError, BrokenPipeError) as exc:
            raise ProtocolViolation(f"connection to the daemon lost: {exc}") from None

    @staticmethod
    def _decode(line: bytes) -> "dict[str, Any]":
        try:
            # As json.loads(bytes) reads UTF-8 (the daemon sends ASCII: ensure_ascii).
            reply = lightjson.loads(line.decode("utf-8", "surrogatepass"))
        except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            text = line[:80]
            raise ProtocolViolation(f"the daemon sent non-JSON: {text!r}") from None
        if not isinstance(reply, dict):
            raise ProtocolViolation("the daemon sent a reply that is not a JSON object")
        return reply

    @staticmethod
    def _final(reply: "dict[str, Any]") -> "dict[str, Any]":
        if reply.get("ok") is True:
            result = reply.get("result")
            return result if isinstance(result, dict) else {"value": result}
        error = reply.get("error")
        if not isinstance(error, dict):
            raise ProtocolViolation("the daemon reported a failure without an error object")
        details = error.get("details")
        return _raise(
            str(error.get("code") or "UNKNOWN"),
            str(error.get("message") or "no message"),
            details if isinstance(details, dict) else {},
        )


def _raise(code: str, message: str, details: "dict[str, Any]") -> "dict[str, Any]":
    if code == "PERMISSION_DENIED":  # the daemon refused us as a peer: socket not accessible
        raise DaemonUnavailable(f"permission denied by the daemon: {message}")
    raise RemoteError(code, message, details)
