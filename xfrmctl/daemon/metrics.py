"""Prometheus metrics (docs/metrics.md): event counters and a scrape-time view of the daemon.

Contract: `Stats` counts what the daemon saw (engine events of RFC 7296 exchanges, messages,
kernel install latency) with O(1) work per event; everything else is read when scraped. A scrape
takes one snapshot on the event loop (the engine's SAs and one kernel SA dump for every pair,
read in place), then renders that copy with prometheus_client's `generate_latest` in a worker
thread: no thread ever reads daemon state, and the loop goes on serving IKE meanwhile.
No metric carries key material; labels are configured connection and child names.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import copy
import dataclasses
import logging
import socket
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from xfrmctl.daemon.kernel_glue import ChildCounters
from xfrmctl.ike import events as ev
from xfrmctl.ike.status import IkeSaBrief

if TYPE_CHECKING:
    from xfrmctl.daemon.core import Daemon

log = logging.getLogger("xfrmctl.daemon")

# Kernel installs take milliseconds on real hardware, seconds in an emulated lab guest.
INSTALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
REQUEST_LIMIT = 8192  # bytes of request line and headers we read before answering


@dataclass
class Stats:
    """Counters the daemon bumps as events happen; read only at scrape time."""

    ike_setups: Counter[str] = field(default_factory=Counter)
    child_setups: Counter[tuple[str, str]] = field(default_factory=Counter)
    failures: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    ike_rekeys: Counter[str] = field(default_factory=Counter)
    child_rekeys: Counter[tuple[str, str]] = field(default_factory=Counter)
    dpd_failures: Counter[str] = field(default_factory=Counter)
    messages: Counter[str] = field(default_factory=Counter)  # "in" / "out"
    install_buckets: list[int] = field(default_factory=lambda: [0] * len(INSTALL_BUCKETS))
    install_count: int = 0
    install_sum: float = 0.0

    def on_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.IkeSaEstablished):
            self.ike_setups[event.conn] += 1
        elif isinstance(event, ev.IkeSaRekeyed):
            self.ike_rekeys[event.conn] += 1
        elif isinstance(event, ev.NegotiationFailed):
            self.failures[(event.conn, event.child or "", event.reason)] += 1
        elif isinstance(event, ev.AuthenticationFailed):
            self.failures[(event.conn, "", "AUTHENTICATION_FAILED")] += 1
        elif isinstance(event, ev.PeerDead):
            self.dpd_failures[event.conn] += 1

    def copy(self) -> Stats:
        """A copy the events that follow do not change (the scrape renders it off the loop)."""
        return dataclasses.replace(
            self, **{f.name: copy.copy(getattr(self, f.name)) for f in dataclasses.fields(self)}
        )

    def failed(self, conn: str, child: str, reason: str) -> None:
        """A failure the daemon itself detected (e.g. KERNEL_ERROR on install)."""
        self.failures[(conn, child, reason)] += 1

    def installed(self, ready: ev.ChildSaReady, seconds: float) -> None:
        """One Child SA pair installed in the kernel, `seconds` after the engine agreed it."""
        key = (ready.conn, ready.child)
        if ready.replaces_spi_in is None:
            self.child_setups[key] += 1
        else:
            self.child_rekeys[key] += 1
        i = bisect.bisect_left(INSTALL_BUCKETS, seconds)
        if i < len(self.install_buckets):
            self.install_buckets[i] += 1
        self.install_count += 1
        self.install_sum += seconds


@dataclass(frozen=True)
class ChildView:
    conn: str
    child: str
    counters: ChildCounters
    rekey_in: float | None
    expires_in: float | None


@dataclass(frozen=True)
class Snapshot:
    """What one scrape shows, copied on the event loop."""

    stats: Stats
    ike_sas: list[IkeSaBrief]
    children: list[ChildView]
    now: float
    half_open: int
    cookie_threshold: int
    engine_counters: dict[str, int]
    configured: list[tuple[str, str]]  # (connection, child) of every configured child


async def take_snapshot(daemon: Daemon) -> Snapshot:
    """The daemon's state now; one kernel dump covers every installed pair."""
    now = daemon.now()
    installed = list(daemon.installed.values())
    try:
        counters = await daemon.kernel.counters_all([i.ready for i in installed])
    except Exception as exc:  # a scrape must still answer: without kernel numbers
        log.warning("metrics: cannot read the kernel's SA counters: %s", exc)
        counters = {}
    children = [
        ChildView(
            i.ready.conn,
            i.ready.child,
            counters.get(i.ready.spi_in, ChildCounters()),
            seconds_until(i.rekey_at(), now),
            seconds_until(i.expire_at(), now),
        )
        for i in installed
    ]
    engine = daemon.engine
    return Snapshot(
        stats=daemon.stats.copy(),
        ike_sas=engine.ike_briefs(),
        children=children,
        now=now,
        half_open=engine.half_open_count(),
        cookie_threshold=engine.config.cookie_threshold,
        engine_counters=dict(engine.counters),
        configured=[(n, c.name) for n, spec in engine.specs.items() for c in spec.children],
    )


def seconds_until(deadline: float | None, now: float) -> float | None:
    return None if deadline is None else max(0.0, deadline - now)


class MetricsServer:
    """/metrics over plain HTTP/1.0 on the daemon's own loop (one request per connection)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.address: tuple[str, int] | None = None
        self._server: asyncio.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    def bind(self, address: tuple[str, int] | None) -> None:
        """Serve on `address` (None: stop serving). The new socket is bound before the old
        endpoint closes, so a failing bind raises OSError and leaves the endpoint as it was."""
        if address == self.address:
            return
        sock = _listen_socket(address) if address is not None else None
        if self._task is not None:
            self._task.cancel()
        if self._server is not None:
            self._server.close()
        if self._sock is not None:  # a task cancelled before it ran never closes its socket
            self._sock.close()
        self._server, self._task, self._sock, self.address = None, None, sock, address
        if sock is not None and address is not None:
            self._task = asyncio.get_running_loop().create_task(self._start(sock))
            log.info("metrics: serving http://%s/metrics", _url_host(address))

    async def _start(self, sock: socket.socket) -> None:
        self._server = await asyncio.start_server(self._serve, sock=sock)

    async def close(self) -> None:
        task = self._task
        self.bind(None)
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            if len(head) > REQUEST_LIMIT:
                raise ValueError("request too long")
            method, path, *_ = head.split(b" ", 2)
            if method != b"GET":
                await _reply(writer, "405 Method Not Allowed", b"GET only\n")
            elif path.split(b"?", 1)[0] not in (b"/metrics", b"/"):
                await _reply(writer, "404 Not Found", b"try /metrics\n")
            else:
                # Imported at the first scrape: prometheus_client costs every daemon start
                # (seconds under emulation) and most daemons never serve metrics.
                from xfrmctl.daemon.metrics_exposition import CONTENT_TYPE, render

                # Rendered in a thread: at 10,000 Child SAs it takes seconds of an emulated
                # guest, and the IKE traffic must not wait that long for the loop.
                body = await asyncio.to_thread(render, await take_snapshot(self.daemon))
                await _reply(writer, "200 OK", body, CONTENT_TYPE)
        except (
            OSError,
            ValueError,
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ):
            pass  # a client that hangs up or sends garbage gets nothing; the daemon goes on
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _reply(
    writer: asyncio.StreamWriter, status: str, body: bytes, ctype: str = "text/plain"
) -> None:
    head = f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
    writer.write(head.encode() + body)
    await writer.drain()


def _listen_socket(address: tuple[str, int]) -> socket.socket:
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(16)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(f"metrics: cannot listen on {_url_host(address)}: {exc.strerror}") from None
    return sock


def _url_host(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
