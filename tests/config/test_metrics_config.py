"""settings.metrics: off by default; `listen` takes ADDRESS:PORT or [IPV6]:PORT, and a wrong
value is reported with its key and what is wrong with it."""

from __future__ import annotations

import pytest
from config_helpers import PSK_CONN, Write, errors_of

from xfrmctl.config import load_config


def test_off_by_default(write: Write) -> None:
    write("site-b.psk", "s3cret-s3cret\n", 0o600)
    assert load_config(write("xfrmctl.yaml", PSK_CONN)).settings.metrics is None


@pytest.mark.parametrize(
    ("listen", "address"),
    [("127.0.0.1:9468", ("127.0.0.1", 9468)), ("'[::1]:9468'", ("::1", 9468))],
)
def test_ipv4_and_ipv6_listen(write: Write, listen: str, address: tuple[str, int]) -> None:
    write("site-b.psk", "s3cret-s3cret\n", 0o600)
    text = f"settings:\n  metrics: {{listen: {listen}}}\n" + PSK_CONN
    metrics = load_config(write("xfrmctl.yaml", text)).settings.metrics
    assert metrics is not None and metrics.address() == address


@pytest.mark.parametrize(
    ("listen", "said"),
    [
        ("localhost:9468", "is not an IP address"),
        ("127.0.0.1", "must be ADDRESS:PORT"),
        ("127.0.0.1:99999", "from 1 to 65535"),
        ("127.0.0.1:http", "from 1 to 65535"),
        ("'::1:9468'", "IPv6 address in brackets"),
        ("'[127.0.0.1]:9468'", "only an IPv6 address goes in brackets"),
    ],
)
def test_bad_listen_is_named(write: Write, listen: str, said: str) -> None:
    errors = errors_of(write("xfrmctl.yaml", f"settings:\n  metrics: {{listen: {listen}}}\n"))
    assert any("settings.metrics.listen" in e and said in e for e in errors), errors


def test_unknown_key_and_missing_listen(write: Write) -> None:
    errors = errors_of(write("xfrmctl.yaml", "settings:\n  metrics: {port: 9468}\n"))
    assert any("settings.metrics.port" in e for e in errors), errors
    assert any("settings.metrics.listen" in e for e in errors), errors
