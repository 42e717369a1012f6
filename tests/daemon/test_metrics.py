"""The Prometheus endpoint: scraped over HTTP from loopback daemons, its numbers follow setups,
failures (by reason), rekeys, DPD failures and the kernel's counters; it is off by default,
and `reload` moves or stops it."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from daemon_helpers import (
    BASE_PORT,
    dead,
    loopback_pair,
    make_daemon,
    no_progress,
    until,
    write_config,
)
from prometheus_client.parser import text_string_to_metric_families

from xfrmctl.daemon.control import ControlError
from xfrmctl.daemon.core import Daemon
from xfrmctl.daemon.metrics import MetricsServer

PORT = BASE_PORT + 900
HTTP = BASE_PORT + 950  # TCP: the metrics endpoint
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def fetch(port: int, path: str = "/metrics", host: str = "127.0.0.1") -> tuple[str, str]:
    with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as reply:
        return reply.headers["Content-Type"], reply.read().decode()


async def scrape(port: int = HTTP) -> Samples:
    ctype, text = await asyncio.to_thread(fetch, port)
    assert ctype.startswith("text/plain; version=0.0.4"), ctype
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def tcp_open(port: int, host: str = "127.0.0.1") -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        return probe.connect_ex((host, port)) == 0


async def serving(daemon: Daemon, port: int = HTTP) -> MetricsServer:
    server = MetricsServer(daemon)
    server.bind(("127.0.0.1", port))
    await until(lambda: tcp_open(port), what="the metrics endpoint")
    return server


def test_setup_traffic_and_rekeys_move_the_numbers(tmp_path: Path) -> None:
    a, b = loopback_pair(tmp_path, PORT)

    async def scenario() -> None:
        da, ha, ka = await make_daemon(a)
        db, _, _ = await make_daemon(b)
        server = await serving(da)
        try:
            quiet = await scrape()
            assert ("xfrmctl_ike_sas_up", (("connection", "tun"),)) in quiet  # 0, not absent
            assert value(quiet, "xfrmctl_ike_sas_up", connection="tun") == 0
            assert ("xfrmctl_child_sas_up", (("child", "host"), ("connection", "tun"))) in quiet
            assert value(quiet, "xfrmctl_kernel_install_seconds_count") == 0
            result = await asyncio.wait_for(ha.up("tun", None, no_progress), 20)
            up = await scrape()
            tun, host = {"connection": "tun"}, {"connection": "tun", "child": "host"}
            assert value(up, "xfrmctl_ike_sas_up", **tun) == 1
            assert value(up, "xfrmctl_ike_sa_setups_total", **tun) == 1
            assert value(up, "xfrmctl_child_sa_setups_total", **host) == 1
            assert value(up, "xfrmctl_child_sas_up", **host) == 1
            # RecordingKernel counts 100 bytes / 1 packet in, 200 / 2 out per pair.
            assert value(up, "xfrmctl_child_sa_in_bytes_total", **host) == 100
            assert value(up, "xfrmctl_child_sa_out_packets_total", **host) == 2
            assert value(up, "xfrmctl_kernel_install_seconds_count") == 1
            assert value(up, "xfrmctl_kernel_install_seconds_bucket", le="+Inf") == 1
            assert value(up, "xfrmctl_ike_messages_total", direction="in") >= 2
            assert value(up, "xfrmctl_ike_messages_total", direction="out") >= 2
            assert value(up, "xfrmctl_cookie_mode") == 0
            assert 0 < value(up, "xfrmctl_child_sa_rekey_seconds", **host) <= 3600
            assert value(up, "xfrmctl_child_sa_expiry_seconds", **host) > 0

            (spi,) = ka.sas
            da.call(da.engine.rekey_child, spi)
            await until(lambda: spi not in ka.sas and len(ka.sas) == 1, what="child rekey")
            da.call(da.engine.rekey_ike, result["ike_sa"]["unique_id"])
            await until(
                lambda: (
                    [s.ike_sa_id for s in da.engine.ike_sas()]
                    not in ([result["ike_sa"]["unique_id"]], [])
                    and len(da.engine.ike_sas()) == 1
                ),
                what="IKE rekey",
            )
            rekeyed = await scrape()
            assert value(rekeyed, "xfrmctl_child_sa_rekeys_total", **host) == 1
            assert value(rekeyed, "xfrmctl_child_sa_setups_total", **host) == 1
            assert value(rekeyed, "xfrmctl_ike_sa_rekeys_total", **tun) == 1
            assert value(rekeyed, "xfrmctl_kernel_install_seconds_count") == 2

            await asyncio.wait_for(ha.down("tun", None, no_progress), 20)
            await until(lambda: not ka.sas, what="down")
            down = await scrape()
            assert value(down, "xfrmctl_ike_sas_up", **tun) == 0
            assert value(down, "xfrmctl_child_sas_up", **host) == 0
        finally:
            await server.close()
            await da.stop()
            await db.stop()
        assert not tcp_open(HTTP), "the endpoint outlived close()"

    asyncio.run(scenario())


def test_failures_by_reason_and_dpd(tmp_path: Path) -> None:
    port = PORT + 10
    a = write_config(
        tmp_path, "a", "127.0.0.1", "127.0.0.2", port, port + 2, "a.example", "b.example",
        esp="aes128gcm16", conn_extra="dpd_delay: 1s\ndpd_timeout: 1s",
    )  # fmt: skip
    b = write_config(
        tmp_path, "b", "127.0.0.2", "127.0.0.1", port + 2, port, "b.example", "a.example"
    )

    async def scenario() -> None:
        da, ha, _ = await make_daemon(a)
        db, hb, _ = await make_daemon(b)
        server = await serving(da, HTTP + 1)
        try:
            with pytest.raises(ControlError):
                await asyncio.wait_for(ha.up("tun", None, no_progress), 20)
            failed = await scrape(HTTP + 1)
            reason = {"connection": "tun", "child": "host", "reason": "NO_PROPOSAL_CHOSEN"}
            assert value(failed, "xfrmctl_negotiation_failures_total", **reason) == 1, failed
            # b accepts aes128gcm16 too now: the child comes up, then b dies.
            b.write_text(b.read_text().replace("[aes256gcm16]", "[aes256gcm16, aes128gcm16]"))
            await hb.reload()  # which deletes the IKE SA left from the failed child
            await until(lambda: not da.engine.ike_sas(), what="the old IKE SA's deletion")
            await asyncio.wait_for(ha.up("tun", None, no_progress), 20)
            assert (
                value(await scrape(HTTP + 1), "xfrmctl_dpd_failures_total", connection="tun") == 0
            )
            dead(db)
            await until(lambda: not da.engine.ike_sas(), timeout=15, what="DPD")
            gone = await scrape(HTTP + 1)
            assert value(gone, "xfrmctl_dpd_failures_total", connection="tun") == 1
            assert value(gone, "xfrmctl_ike_retransmissions_total") >= 1
            assert value(gone, "xfrmctl_ike_sas_up", connection="tun") == 0
        finally:
            await server.close()
            await da.stop()
            db.sockets.close()

    asyncio.run(scenario())


def test_http_errors_and_a_failing_kernel_do_not_break_the_endpoint(tmp_path: Path) -> None:
    a, _ = loopback_pair(tmp_path, PORT + 20)

    async def scenario() -> None:
        da, _, ka = await make_daemon(a)
        server = await serving(da, HTTP + 2)

        async def broken(readies: object) -> dict[int, object]:
            raise OSError("netlink went away")

        try:
            with pytest.raises(urllib.error.HTTPError) as missing:
                await asyncio.to_thread(fetch, HTTP + 2, "/nope")
            assert missing.value.code == 404
            ka.counters_all = broken  # type: ignore[method-assign,assignment]
            still = await scrape(HTTP + 2)
            assert ("xfrmctl_half_open_ike_sas", ()) in still
        finally:
            await server.close()
            await da.stop()

    asyncio.run(scenario())


def test_rebind_moves_the_endpoint_to_ipv6_and_off(tmp_path: Path) -> None:
    a, _ = loopback_pair(tmp_path, PORT + 30)

    async def scenario() -> None:
        da, _, _ = await make_daemon(a)
        server = await serving(da, HTTP + 3)
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", HTTP + 5))
        blocker.listen()
        try:
            with pytest.raises(OSError, match=r"cannot listen on 127\.0\.0\.1:\d+"):
                server.bind(("127.0.0.1", HTTP + 5))
            assert tcp_open(HTTP + 3), "a failed move must keep the old endpoint"
            if socket.has_ipv6:
                server.bind(("::1", HTTP + 4))
                await until(lambda: tcp_open(HTTP + 4, "::1"), what="the IPv6 endpoint")
                assert not tcp_open(HTTP + 3)
                _, text = await asyncio.to_thread(fetch, HTTP + 4, "/metrics", "[::1]")
                assert "xfrmctl_cookie_mode 0.0" in text
            server.bind(None)
            await asyncio.sleep(0.05)
            assert not tcp_open(HTTP + 3) and not tcp_open(HTTP + 4, "::1")
        finally:
            blocker.close()
            await server.close()
            await da.stop()

    asyncio.run(scenario())


def test_a_slow_render_runs_off_the_loop_on_a_copy_of_the_counters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 10,000 Child SAs a render takes seconds of an emulated guest (issue 15): the loop
    must go on serving IKE meanwhile, and what it counts then must not change the scrape."""
    import time

    from xfrmctl.daemon import metrics_exposition

    a, _ = loopback_pair(tmp_path, PORT + 30)
    real_render = metrics_exposition.render

    def slow_render(snap: object) -> bytes:
        time.sleep(0.6)
        return real_render(snap)  # type: ignore[arg-type]

    monkeypatch.setattr(metrics_exposition, "render", slow_render)

    async def scenario() -> tuple[int, float]:
        da, _, _ = await make_daemon(a)
        server = await serving(da, HTTP + 3)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.02)
                ticks += 1
                da.stats.messages["in"] += 1  # events counted while the render runs

        try:
            before = da.stats.messages["in"]
            task = asyncio.create_task(ticker())
            samples = await scrape(HTTP + 3)
            task.cancel()
            return ticks, value(samples, "xfrmctl_ike_messages_total", direction="in") - before
        finally:
            await server.close()
            await da.stop()

    ticks, counted = asyncio.run(scenario())
    assert ticks >= 10, f"the loop stood still for the render ({ticks} ticks in 0.6 s)"
    assert counted < ticks, "the scrape showed counts made after its snapshot"
