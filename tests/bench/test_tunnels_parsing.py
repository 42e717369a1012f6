"""The pure parts of the lab benchmark (bench/tunnels.py): /proc parsing, the SAD count, the
ratio line. The benchmark itself runs only in the lab guest (./lab.sh bench)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "tunnels.py"


@pytest.fixture(scope="module")
def tunnels() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_tunnels", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_tunnels"] = module
    spec.loader.exec_module(module)
    return module


def test_cpu_seconds_sums_utime_and_stime_past_a_command_with_spaces(tunnels: ModuleType) -> None:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
    stat = "4242 (python3 (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 1 0"
    assert tunnels.cpu_seconds(stat, clk_tck=100) == pytest.approx(3.0)


def test_rss_kib(tunnels: ModuleType) -> None:
    status = "Name:\tcharon\nVmPeak:\t  20000 kB\nVmRSS:\t   9528 kB\nThreads:\t17\n"
    assert tunnels.rss_kib(status) == 9528
    with pytest.raises(ValueError):
        tunnels.rss_kib("Name:\tx\n")


def test_sad_count(tunnels: ModuleType) -> None:
    assert tunnels.sad_count("\t SAD count 200\n") == 200


def test_ratio_line_is_xfrmctl_over_strongswan(tunnels: ModuleType) -> None:
    xf = {"setups_per_s": 30.0, "cpu_ms_per_setup": 10.0, "kib_per_ike_sa": 5.0, "up_latency_s": 2}
    sw = {"setups_per_s": 20.0, "cpu_ms_per_setup": 20.0, "kib_per_ike_sa": 10.0, "up_latency_s": 4}
    xf |= {"first_packet_s": 1.0, "rekey_storm_s": 5.0}
    sw |= {"first_packet_s": 2.0, "rekey_storm_s": 10.0}
    assert tunnels.ratio_line(tunnels.ratios(xf, sw), 200) == (
        "ratio_setups_per_s=1.500 ratio_cpu_ms_per_setup=0.500 ratio_kib_per_ike_sa=0.500 "
        "ratio_up_latency=0.500 ratio_first_packet=0.500 ratio_rekey_storm=0.500 n=200"
    )
    zero = tunnels.ratios(xf, {**sw, "setups_per_s": 0.0})
    assert "ratio_setups_per_s=nan" in tunnels.ratio_line(zero, 1)


def test_rounds_give_each_ratio_its_median_and_alternate_the_order(tunnels: ModuleType) -> None:
    """A round whose xfrmctl half ran on a busy host (CPU ratio 1.9) does not decide the
    figure: the median of three paired ratios does."""
    keys = [key for key, _ in tunnels.RATIO_KEYS]
    rounds = [dict.fromkeys(keys, 1.5), dict.fromkeys(keys, 1.9), dict.fromkeys(keys, 1.4)]
    med = tunnels.median_ratios(rounds)
    assert med == dict.fromkeys(keys, 1.5)
    line = tunnels.ratio_line(med, 1000, rounds=3)
    assert line.startswith("ratio_setups_per_s=1.500 ") and line.endswith(" n=1000 rounds=3")
    assert [tunnels.round_order(k)[0] for k in (1, 2, 3)] == ["xfrmctl", "strongswan", "xfrmctl"]
    assert set(tunnels.round_order(2)) == {"xfrmctl", "strongswan"}


def test_site_addresses_are_distinct_and_skip_the_network_address(tunnels: ModuleType) -> None:
    ips = [tunnels.host_ip(i, 1) for i in range(1000)]
    assert len(set(ips)) == 1000
    assert ips[0] == "10.1.0.1" and ips[255] == "10.1.1.0" and "10.1.0.0" not in ips


def test_outbound_spis_and_ping_counts() -> None:
    phases = _phases()
    text = (
        "src 192.168.77.1 dst 192.168.77.2\n\tproto esp spi 0xc0000001 reqid 1 mode tunnel\n"
        "\treplay-window 0 flag af-unspec\n"
        "src 192.168.77.2 dst 192.168.77.1\n\tproto esp spi 0xc0000002 reqid 1 mode tunnel\n"
        "src 192.168.77.1 dst 192.168.77.2\n\tproto esp spi 0x0000ab03 reqid 2 mode tunnel\n"
    )
    assert phases.outbound_spis(text, "192.168.77.1") == {0xC0000001, 0xAB03}
    assert phases.outbound_spis(text, "192.168.77.2") == {0xC0000002}
    summary = "--- 10.2.0.1 ping statistics ---\n412 packets transmitted, 409 received, 0.7% loss"
    assert phases.ping_counts(summary) == (412, 409)
    assert phases.ping_counts("ping: interrupted") == (0, 0)
    storm = phases.StormResult(children=10, completed=8, pings_sent=100, pings_received=97)
    assert (storm.failed, storm.lost) == (2, 3)


def _phases() -> ModuleType:
    path = BENCH.parent / "tunnel_phases.py"
    spec = importlib.util.spec_from_file_location("tunnel_phases", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["tunnel_phases"] = module
    spec.loader.exec_module(module)
    return module


def test_cpu_times_splits_user_and_system(tunnels: ModuleType) -> None:
    stat = "7 (charon-systemd) S 1 7 7 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 17 0"
    assert tunnels.cpu_times(stat, clk_tck=100) == pytest.approx((2.5, 0.5))


def test_prom_value_and_charon_retransmits(tunnels: ModuleType) -> None:
    text = (
        "# HELP xfrmctl_ike_retransmissions_total IKE requests we sent again.\n"
        "xfrmctl_ike_retransmissions_total 12.0\n"
        'xfrmctl_ike_engine_events_total{kind="retransmitted_request"} 3.0\n'
    )
    assert tunnels.prom_value(text, "xfrmctl_ike_retransmissions_total") == 12
    assert tunnels.prom_value(text, 'xfrmctl_ike_engine_events_total{kind="x"}') == 0
    log = (
        "Dec  6 10:00:01 05[IKE] retransmit 1 of request with message ID 0\n"
        "Dec  6 10:00:02 06[IKE] retransmit 2 of request with message ID 1\n"
        "Dec  6 10:00:03 07[IKE] received retransmit of request with ID 0, retransmitting"
        " response\n"
    )
    assert tunnels.charon_retransmits(log) == 2


def test_cpu_spent_counts_only_what_ran_meanwhile(
    tunnels: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    used = {11: 1.0, 22: 5.0}

    def fake_sample(pid: int) -> object:
        return tunnels.Sample(used[pid], 0.0, 0)

    def busy() -> None:
        used[11] += 0.25
        used[22] += 0.5

    monkeypatch.setattr(tunnels, "sample", fake_sample)
    assert tunnels.cpu_spent_ms({"initiator": 11, "responder": 22}, busy) == pytest.approx(750)
