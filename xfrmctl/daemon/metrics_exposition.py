"""The Prometheus text exposition of one metrics Snapshot (docs/metrics.md), by prometheus_client.

Contract: `render(snapshot)` returns the scrape's body; it reads only the snapshot, so it may run
anywhere. Kept apart from metrics.py so that a daemon without `settings.metrics` never imports
prometheus_client.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4 as CONTENT_TYPE
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from xfrmctl.daemon.metrics import INSTALL_BUCKETS, Snapshot, seconds_until

__all__ = ["CONTENT_TYPE", "render"]


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
                left = seconds_until(ike.rekey_at, self.snap.now)
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
