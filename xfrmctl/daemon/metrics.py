"""Prometheus metrics (docs/metrics.md): event counters and a scrape-time view of the daemon.

Contract: `Stats` counts what the daemon saw (engine events of RFC 7296 exchanges, messages,
kernel install latency) with O(1) work per event; everything else is read when scraped. A scrape
takes one snapshot on the event loop (the engine's SAs and one kernel SA dump for every pair),
then renders it with prometheus_client's `generate_latest`: no thread ever reads daemon state.
No metric carries key material; labels are configured connection and child names.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import socket
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from xfrmctl.daemon.kernel_glue import ChildCounters
from xfrmctl.ike import events as ev
from xfrmctl.ike.status import IkeSaStatus

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
    ike_sas: list[IkeSaStatus]
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
            _until(i.rekey_at(), now),
            _until(i.expire_at(), now),
        )
        for i in installed
    ]
    engine = daemon.engine
    return Snapshot(
        stats=daemon.stats,
        ike_sas=engine.ike_sas(),
        children=children,
        now=now,
        half_open=engine.half_open_count(),
        cookie_threshold=engine.config.cookie_threshold,
        engine_counters=dict(engine.counters),
        configured=[(n, c.name) for n, spec in engine.specs.items() for c in spec.children],
    )


def _until(deadline: float | None, now: float) -> float | None:
    return None if deadline is None else max(0.0, deadline - now)


class SnapshotCollector(Collector):
    """Renders one Snapshot as xfrmctl_* metric families (names in docs/metrics.md)."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Metric]:
        yield from self._ike()
        yield from self._children()
        yield from self._daemon()

    def _ike(self) -> Iterator[Metric]:
        s = self.snap.stats
        up = GaugeMetricFamily(
            "xfrmctl_ike_sas_up", "Established IKE SAs per connection.", labels=["connection"]
        )
        rekey = GaugeMetricFamily(
            "xfrmctl_ike_sa_rekey_seconds",
            "Seconds until the soonest IKE SA rekey of the connection.",
            labels=["connection"],
        )
        ups: Counter[str] = Counter()
        soonest: dict[str, float] = {}
        for ike in self.snap.ike_sas:
            if ike.state == "established":
                ups[ike.conn] += 1
                left = _until(ike.rekey_at, self.snap.now)
                if left is not None:
                    soonest[ike.conn] = min(left, soonest.get(ike.conn, left))
        for conn in sorted({c for c, _ in self.snap.configured} | set(ups)):
            up.add_metric([conn], ups[conn])
        for conn, left in sorted(soonest.items()):
            rekey.add_metric([conn], left)
        yield up
        yield rekey
        yield _counter("ike_sa_setups", "IKE SAs established.", ["connection"], s.ike_setups)
        yield _counter("ike_sa_rekeys", "IKE SAs rekeyed.", ["connection"], s.ike_rekeys)
        yield _counter(
            "dpd_failures", "Peers declared dead (DPD, RFC 7296 §2.4).", ["connection"],
            s.dpd_failures,
        )  # fmt: skip
        yield _counter(
            "negotiation_failures",
            "Failed negotiations by reason (notify type or AUTHENTICATION_FAILED); child is "
            "empty for IKE-level failures.",
            ["connection", "child", "reason"],
            s.failures,
        )

    def _children(self) -> Iterator[Metric]:
        s = self.snap.stats
        labels = ["connection", "child"]
        yield _counter("child_sa_setups", "Child SAs installed.", labels, s.child_setups)
        yield _counter("child_sa_rekeys", "Child SAs rekeyed.", labels, s.child_rekeys)
        sums: dict[tuple[str, str], Counter[str]] = {}
        soon: dict[tuple[str, str], dict[str, float]] = {}
        for c in self.snap.children:
            key = (c.conn, c.child)
            total = sums.setdefault(key, Counter())
            total.update(c.counters.__dict__)
            total["up"] += 1
            for name, left in (("rekey", c.rekey_in), ("expiry", c.expires_in)):
                if left is not None:
                    mine = soon.setdefault(key, {})
                    mine[name] = min(left, mine.get(name, left))
        up = GaugeMetricFamily("xfrmctl_child_sas_up", "Installed Child SA pairs.", labels=labels)
        for key in sorted(set(self.snap.configured) | set(sums)):
            up.add_metric(list(key), sums.get(key, Counter())["up"])
        yield up
        for field_name, name, text in _KERNEL_COUNTERS:
            family = CounterMetricFamily(f"xfrmctl_child_sa_{name}", text, labels=labels)
            for key, total in sorted(sums.items()):
                family.add_metric(list(key), total[field_name])
            yield family
        for name, text in (
            ("rekey", "Seconds until the soonest Child SA rekey (soft lifetime)."),
            ("expiry", "Seconds until the soonest Child SA expiry (hard lifetime)."),
        ):
            gauge = GaugeMetricFamily(f"xfrmctl_child_sa_{name}_seconds", text, labels=labels)
            for key, times in sorted(soon.items()):
                if name in times:
                    gauge.add_metric(list(key), times[name])
            yield gauge

    def _daemon(self) -> Iterator[Metric]:
        s, snap = self.snap.stats, self.snap
        msgs = CounterMetricFamily(
            "xfrmctl_ike_messages", "IKE datagrams received and sent.", labels=["direction"]
        )
        for direction in ("in", "out"):
            msgs.add_metric([direction], s.messages[direction])
        yield msgs
        yield CounterMetricFamily(
            "xfrmctl_ike_retransmissions",
            "IKE requests we sent again for want of a response.",
            value=snap.engine_counters.get("retransmission_sent", 0),
        )
        dropped = CounterMetricFamily(
            "xfrmctl_ike_engine_events",
            "Messages the engine dropped or answered without state, by kind.",
            labels=["kind"],
        )
        for kind, n in sorted(snap.engine_counters.items()):
            if kind != "retransmission_sent":
                dropped.add_metric([kind], n)
        yield dropped
        yield GaugeMetricFamily("xfrmctl_half_open_ike_sas", "Half-open IKE SAs.", snap.half_open)
        yield GaugeMetricFamily(
            "xfrmctl_cookie_mode",
            "1 while every new initiator must return a cookie (RFC 7296 §2.6).",
            int(snap.half_open >= snap.cookie_threshold),
        )
        cumulative, running = [], 0
        for bound, n in zip(INSTALL_BUCKETS, s.install_buckets, strict=True):
            running += n
            cumulative.append((str(bound), running))
        cumulative.append(("+Inf", s.install_count))
        yield HistogramMetricFamily(
            "xfrmctl_kernel_install_seconds",
            "Time from the engine agreeing a Child SA to the kernel holding it.",
            buckets=cumulative,
            sum_value=s.install_sum,
        )


_KERNEL_COUNTERS = (
    ("bytes_in", "in_bytes", "Bytes the kernel decrypted on the child's inbound SAs."),
    ("bytes_out", "out_bytes", "Bytes the kernel encrypted on the child's outbound SAs."),
    ("packets_in", "in_packets", "Packets received on the child's inbound SAs."),
    ("packets_out", "out_packets", "Packets sent on the child's outbound SAs."),
    ("replay_errors", "replay_errors", "Inbound packets dropped as replays (xfrm_stats)."),
    (
        "integrity_failures",
        "integrity_failures",
        "Inbound packets failing the ICV/integrity check (xfrm_stats).",
    ),
)


def _counter(name: str, text: str, labels: list[str], values: Counter[Any]) -> Metric:
    family = CounterMetricFamily(f"xfrmctl_{name}", text, labels=labels)
    for key, n in sorted(values.items()):
        family.add_metric([key] if isinstance(key, str) else list(key), n)
    return family


def render(snap: Snapshot) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snap))
    return generate_latest(registry)


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
                body = render(await take_snapshot(self.daemon))
                await _reply(writer, "200 OK", body, CONTENT_TYPE_PLAIN_0_0_4)
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
