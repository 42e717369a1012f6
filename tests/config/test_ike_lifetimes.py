"""IKE SA lifetime keys: reauth_time, over_time, rand_time (swanctl names and defaults)."""

from __future__ import annotations

from config_helpers import PSK_CONN, Write, errors_of

from xfrmctl.config import load_config
from xfrmctl.daemon.specs import build_specs


def _conn(write: Write, extra: str) -> str:
    write("site-b.psk", "s3cret-s3cret\n", 0o600)
    lines = "".join(f"    {line}\n" for line in extra.splitlines())
    return PSK_CONN.replace("    psk_file: site-b.psk\n", "    psk_file: site-b.psk\n" + lines)


def test_reauth_is_off_by_default(write: Write) -> None:
    config = load_config(write("xfrmctl.yaml", _conn(write, "")))
    assert config.connection("site-b").reauth_time == 0
    (spec,) = build_specs(config)
    assert spec.reauth_time == 0.0
    assert (spec.rekey_time, spec.over_time, spec.rand_time) == (14400.0, 1440.0, 1440.0)


def test_over_time_defaults_to_a_tenth_of_the_longer_time(write: Write) -> None:
    config = load_config(write("xfrmctl.yaml", _conn(write, "reauth_time: 1d")))
    conn = config.connection("site-b")
    assert (conn.reauth_time, conn.over_time, conn.rand_time) == (86400, 8640, 8640)
    short = load_config(write("b.yaml", _conn(write, "reauth_time: 30m")))
    assert short.connection("site-b").over_time == 1440  # 10% of rekey_time (4h)
    only = load_config(write("c.yaml", _conn(write, "rekey_time: 0\nreauth_time: 2h")))
    assert only.connection("site-b").over_time == 720


def test_lifetime_keys_reach_the_engine_spec(write: Write) -> None:
    text = _conn(write, "rekey_time: 0\nreauth_time: 3h\nover_time: 10m\nrand_time: 5m")
    (spec,) = build_specs(load_config(write("xfrmctl.yaml", text)))
    assert (spec.rekey_time, spec.reauth_time) == (0.0, 10800.0)
    assert (spec.over_time, spec.rand_time) == (600.0, 300.0)


def test_rand_time_beyond_over_time_is_refused_for_reauth_too(write: Write) -> None:
    text = _conn(write, "rekey_time: 0\nreauth_time: 1h\nover_time: 1m\nrand_time: 2m")
    errors = errors_of(write("xfrmctl.yaml", text))
    assert any(
        "connections.site-b.rand_time" in e and "rand_time (120) is larger than over_time (60)" in e
        for e in errors
    ), errors


def test_rand_time_must_be_below_reauth_time(write: Write) -> None:
    text = _conn(write, "reauth_time: 10m\nover_time: 1h\nrand_time: 20m")
    errors = errors_of(write("xfrmctl.yaml", text))
    assert any("rand_time (1200) must be less than reauth_time (600)" in e for e in errors), errors


def test_bad_reauth_time_names_the_key(write: Write) -> None:
    errors = errors_of(write("xfrmctl.yaml", _conn(write, "reauth_time: sometimes")))
    assert any("reauth_time" in e and "duration" in e for e in errors), errors


def test_child_volume_limits_and_jitter_reach_the_engine_spec(write: Write) -> None:
    text = _conn(write, "").replace(
        "        remote_ts: [10.2.0.0/16]\n",
        "        remote_ts: [10.2.0.0/16]\n        rekey_bytes: 1M\n        rand_bytes: 100K\n"
        "        rekey_packets: 1000\n        life_packets: 1200\n",
    )
    (spec,) = build_specs(load_config(write("xfrmctl.yaml", text)))
    (child,) = spec.children
    assert (child.rekey_bytes, child.rand_bytes) == (1048576, 102400)
    assert (child.rekey_packets, child.life_packets, child.rand_packets) == (1000, 1200, 200)


def test_encap_fragmentation_and_keep_alive_reach_the_engine_spec(write: Write) -> None:
    text = _conn(write, "encap: force\nfragmentation: no\nkeep_alive: 7s")
    (spec,) = build_specs(load_config(write("xfrmctl.yaml", text)))
    assert spec.encap.value == "force" and spec.fragmentation is False
    assert spec.keep_alive == 7.0
    (default,) = build_specs(load_config(write("d.yaml", _conn(write, ""))))
    assert default.encap.value == "auto" and default.fragmentation and default.keep_alive == 20.0
