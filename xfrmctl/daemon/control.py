"""The control socket: newline-delimited JSON requests from `xfrmctl` to the daemon.

See docs/control-protocol.md. The socket is root-only (0600 in a 0700 directory) and each
peer's credentials are checked again, so anyone who can talk to it may manage SAs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

from xfrmctl import __version__

if TYPE_CHECKING:
    from xfrmctl.daemon.status import StatusReport  # its models load at the first reply

PROTOCOL_VERSION = 1
MAX_LINE = 64 * 1024
IDLE_TIMEOUT = 60.0  # seconds a connection may wait with no request in flight
MAX_CONNECTIONS = 64  # concurrent control connections; more are refused with BUSY
COMMANDS = ("up", "down", "rekey", "status", "reload", "version", "explain", "keys")

log = logging.getLogger(__name__)

Progress = Callable[[dict[str, Any]], Awaitable[None]]


class ControlError(Exception):
    """An error the handler wants the client to see: a code, words and machine details."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details or {}

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class ControlHandler(Protocol):
    """What the daemon implements; results must be JSON-serialisable or pydantic models."""

    async def up(self, name: str, child: str | None, progress: Progress) -> dict[str, Any]: ...

    async def down(self, name: str, child: str | None, progress: Progress) -> dict[str, Any]: ...

    async def status(self, name: str | None) -> StatusReport: ...

    async def reload(self) -> dict[str, Any]: ...

    async def explain(self, name: str) -> dict[str, Any]: ...

    async def rekey(self, name: str, child: str | None, ike: bool) -> dict[str, Any]: ...

    async def keys(self) -> dict[str, Any]: ...


class ControlSocketError(OSError):
    """The socket cannot be created (path in use, not a socket, no permission)."""


def _as_json(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value


def _encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), default=_as_json).encode() + b"\n"


def _bad(code: str, message: str, **details: Any) -> ControlError:
    return ControlError(code, message, details)


def _name_arg(args: dict[str, Any]) -> str:
    name = args.get("name")
    if not (isinstance(name, str) and name):
        raise _bad("BAD_REQUEST", "args.name must be a connection name (a non-empty string)")
    return name


def _optional_arg(args: dict[str, Any], key: str, what: str) -> str | None:
    value = args.get(key)
    if value is not None and not (isinstance(value, str) and value):
        raise _bad("BAD_REQUEST", f"args.{key} must be {what} or null")
    return value


class ControlServer:
    """asyncio server on a Unix stream socket; `start()`, then `close()` (or `async with`)."""

    def __init__(self, path: Path, handler: ControlHandler) -> None:
        self.path = path
        self.handler = handler
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._connections = 0
        self.idle_timeout = IDLE_TIMEOUT
        self.max_connections = MAX_CONNECTIONS

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _prepare_path(self) -> None:
        # exist_ok: another daemon (another namespace's) may be making it at this moment.
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            info = self.path.lstat()
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(info.st_mode):
            raise ControlSocketError(f"{self.path} exists and is not a socket; refusing to replace")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(self.path))
        except (ConnectionRefusedError, FileNotFoundError):
            self.path.unlink(missing_ok=True)  # stale socket of a daemon that died
        else:
            raise ControlSocketError(f"another daemon is already listening on {self.path}")
        finally:
            probe.close()

    async def start(self) -> None:
        try:
            self._prepare_path()
            old = os.umask(0o177)
            try:
                self._server = await asyncio.start_unix_server(
                    self._serve, path=str(self.path), limit=MAX_LINE
                )
            finally:
                os.umask(old)
            os.chmod(self.path, 0o600)
        except ControlSocketError:
            raise
        except OSError as exc:
            raise ControlSocketError(
                f"cannot listen on {self.path}: {exc.strerror or exc}"
            ) from None

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _peer_allowed(self, writer: asyncio.StreamWriter) -> bool:
        sock = writer.get_extra_info("socket")
        if sock is None:
            return True
        try:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        except OSError:
            return False
        _pid, uid, _gid = struct.unpack("3i", creds)
        return uid in (0, os.geteuid())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        me = asyncio.current_task()
        if me is not None:  # so close() can end idle connections too
            self._tasks.add(me)
            me.add_done_callback(self._tasks.discard)
        lock = asyncio.Lock()

        async def send(message: dict[str, Any]) -> None:
            async with lock:
                writer.write(_encode(message))
                await writer.drain()

        requests: set[asyncio.Task[None]] = set()
        self._connections += 1
        try:
            if self._connections > self.max_connections:
                many = self.max_connections
                error = _bad("BUSY", f"more than {many} control connections; try again")
                await send({"id": None, "ok": False, "error": error.to_json()})
                return
            if not self._peer_allowed(writer):
                await send(
                    {
                        "id": None,
                        "ok": False,
                        "error": _bad(
                            "PERMISSION_DENIED", "only root may use this socket"
                        ).to_json(),
                    }
                )
                return
            while True:
                try:
                    line = await self._next_line(reader, requests)
                except TimeoutError:
                    return  # idle: nothing asked, nothing running
                except ValueError:  # line longer than MAX_LINE: framing is lost
                    error = _bad("BAD_REQUEST", f"request longer than {MAX_LINE} bytes")
                    await send({"id": None, "ok": False, "error": error.to_json()})
                    return
                if not line:
                    break
                if not line.strip():
                    continue
                task = asyncio.create_task(self._request(line, send))
                requests.add(task)
                self._tasks.add(task)
                task.add_done_callback(requests.discard)
                task.add_done_callback(self._tasks.discard)
            if requests:
                await asyncio.gather(*requests, return_exceptions=True)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._connections -= 1
            for task in requests:
                task.cancel()
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def _next_line(
        self, reader: asyncio.StreamReader, requests: set[asyncio.Task[None]]
    ) -> bytes:
        """The next request line; TimeoutError once idle for `idle_timeout` with none running
        (a client waiting for its `up` to finish sends nothing meanwhile and is not idle)."""
        pending = asyncio.ensure_future(reader.readline())
        try:
            while True:
                done, _ = await asyncio.wait({pending}, timeout=self.idle_timeout)
                if done:
                    return pending.result()
                if not requests:
                    raise TimeoutError
        finally:
            if not pending.done():
                pending.cancel()

    async def _request(
        self, line: bytes, send: Callable[[dict[str, Any]], Awaitable[None]]
    ) -> None:
        request_id: Any = None
        try:
            try:
                request = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise _bad("BAD_REQUEST", f"request is not valid JSON: {exc}") from None
            except RecursionError:  # the decoder recurses per level: `[[[[...` 30,000 deep
                raise _bad("BAD_REQUEST", "request is nested too deeply") from None
            if not isinstance(request, dict):
                raise _bad("BAD_REQUEST", "request must be a JSON object")
            request_id = request.get("id")
            if request_id is not None and (
                isinstance(request_id, bool) or not isinstance(request_id, int | str)
            ):
                request_id = None
                raise _bad("BAD_REQUEST", "id must be a number or a string")
            result = await self._dispatch(request, request_id, send)
            await send({"id": request_id, "ok": True, "result": _as_json(result)})
        except ControlError as exc:
            await send({"id": request_id, "ok": False, "error": exc.to_json()})
        except asyncio.CancelledError:
            raise
        except (ConnectionError, OSError):
            raise
        except Exception as exc:
            log.exception("control request failed")
            error = _bad("INTERNAL", f"internal error: {type(exc).__name__}: {exc}")
            with contextlib.suppress(ConnectionError, OSError):
                await send({"id": request_id, "ok": False, "error": error.to_json()})

    async def _dispatch(
        self,
        request: dict[str, Any],
        request_id: Any,
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> Any:
        command = request.get("command")
        args = request.get("args") or {}
        if not isinstance(command, str):
            raise _bad("BAD_REQUEST", "command must be a string", commands=list(COMMANDS))
        if not isinstance(args, dict):
            raise _bad("BAD_REQUEST", "args must be a JSON object")

        async def progress(event: dict[str, Any]) -> None:
            message = {"id": request_id, "event": "progress", **event}
            message.pop("ok", None)  # a progress message must never look final
            message["id"] = request_id
            await send(message)

        if command in ("up", "down"):
            name = _name_arg(args)
            child = _optional_arg(args, "child", "a child name")
            action = self.handler.up if command == "up" else self.handler.down
            return await action(name, child, progress)
        if command == "rekey":
            ike = args.get("ike", False)
            if not isinstance(ike, bool):
                raise _bad("BAD_REQUEST", "ike must be true or false")
            child = _optional_arg(args, "child", "a child name")
            return await self.handler.rekey(_name_arg(args), child, ike)
        if command == "status":
            return await self.handler.status(_optional_arg(args, "name", "a connection name"))
        if command == "reload":
            return await self.handler.reload()
        if command == "explain":
            return await self.handler.explain(_name_arg(args))
        if command == "keys":
            return await self.handler.keys()
        if command == "version":
            return {"version": __version__, "protocol": PROTOCOL_VERSION}
        raise _bad("UNKNOWN_COMMAND", f"unknown command {command!r}", commands=list(COMMANDS))
