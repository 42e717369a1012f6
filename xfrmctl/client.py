"""Control-socket client for the CLI: stdlib only, so `xfrmctl status` starts fast.

One request per call over a fresh connection; progress events are passed to a callback and
the final reply is returned or raised as `RemoteError`.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import socket

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

    def __init__(self, code: str, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.code = code
        self.details = details


def _connect(path: str | os.PathLike[str], timeout: float | None) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
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
        args: dict[str, Any] | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Send one request and return its `result`; raise RemoteError if it failed."""
        request_id = next(_ids)
        request = {"id": request_id, "command": command, "args": args or {}}
        with _connect(self.path, self.timeout) as sock:
            try:
                # A daemon that refuses us closes at once: its reason is still there to read.
                try:  # noqa: SIM105 (contextlib would be one more import per CLI start)
                    sock.sendall(json.dumps(request).encode() + b"\n")
                except BrokenPipeError:
                    pass
                reader = sock.makefile("rb")
                while True:
                    line = reader.readline()
                    if not line:
                        raise ProtocolViolation(
                            "the daemon closed the connection without answering"
                        )
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
    def _decode(line: bytes) -> dict[str, Any]:
        try:
            reply = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            text = line[:80]
            raise ProtocolViolation(f"the daemon sent non-JSON: {text!r}") from None
        if not isinstance(reply, dict):
            raise ProtocolViolation("the daemon sent a reply that is not a JSON object")
        return reply

    @staticmethod
    def _final(reply: dict[str, Any]) -> dict[str, Any]:
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


def _raise(code: str, message: str, details: dict[str, Any]) -> dict[str, Any]:
    if code == "PERMISSION_DENIED":  # the daemon refused us as a peer: socket not accessible
        raise DaemonUnavailable(f"permission denied by the daemon: {message}")
    raise RemoteError(code, message, details)
