"""settings' half-open limits (strongSwan's names) reach the engine the daemon runs."""

from __future__ import annotations

from config_helpers import PSK_CONN, Write, errors_of

from xfrmctl.config import load_config
from xfrmctl.daemon.core import Daemon
from xfrmctl.daemon.kernel_glue import KernelGlue
from xfrmctl.daemon.specs import build_specs, endpoint_config
from xfrmctl.ike.engine import EndpointConfig

LIMITS = """settings:
  port: 1500
  port_nat_t: 14500
  init_limit_half_open: 77
  cookie_threshold: 7
  cookie_threshold_ip: 2
  block_threshold: 4
"""


def test_limits_reach_the_daemons_engine(write: Write) -> None:
    write("site-b.psk", "s3cret-s3cret\n", 0o600)
    loaded = load_config(write("xfrmctl.yaml", LIMITS + PSK_CONN))
    kernel = KernelGlue()  # the interface itself: nothing is installed here
    daemon = Daemon(build_specs(loaded), kernel, limits=endpoint_config(loaded.settings))
    cfg = daemon.engine.config
    assert (cfg.max_half_open, cfg.cookie_threshold) == (77, 7)
    assert (cfg.cookie_threshold_ip, cfg.block_threshold) == (2, 4)
    assert (cfg.ike_port, cfg.natt_port) == (500, 4500)  # Daemon's own ports argument wins


def test_defaults_are_strongswans(write: Write) -> None:
    write("site-b.psk", "s3cret-s3cret\n", 0o600)
    cfg = endpoint_config(load_config(write("xfrmctl.yaml", PSK_CONN)).settings)
    default = EndpointConfig()
    assert (cfg.max_half_open, cfg.cookie_threshold, cfg.cookie_threshold_ip) == (1000, 10, 3)
    assert cfg.block_threshold == default.block_threshold == 5


def test_a_zero_block_threshold_is_refused(write: Write) -> None:
    errors = errors_of(write("xfrmctl.yaml", "settings:\n  block_threshold: 0\n"))
    assert any("settings.block_threshold" in e for e in errors), errors
