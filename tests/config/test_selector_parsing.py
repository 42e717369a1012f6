"""Selector parsing's shortcuts give what the stdlib gives: a one-address network is built
without an `ip_network` first, and within one load each text is parsed once (issue 15)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xfrmctl.config import selectors
from xfrmctl.config.selectors import parse_selector, parsed_once
from xfrmctl.kernel.types import compact

TEXTS = [
    "10.0.0.1",
    "10.0.0.1/32",
    "10.0.0.1/31",
    "10.0.0.1/128",
    "010.0.0.1/32",
    "::1",
    "::1/128",
    "::1/32",
    "fe80::1%eth0",
    "fe80::1%eth0/128",
    "::ffff:1.2.3.4/128",
    "10.0.0.1/032",
    "10.0.0.1/",
    "/32",
    "host/32",
]
alphabet = st.sampled_from(list("0123456789abcdef.:/%x"))


def _stdlib(text: str) -> object:
    try:
        return compact(ipaddress.ip_network(text, strict=True))
    except ValueError:
        return None


@pytest.mark.parametrize("text", TEXTS)
def test_the_host_shortcut_is_the_stdlibs_network(text: str) -> None:
    got = selectors._host(text)
    assert got is None or (got == _stdlib(text) and type(got) is type(_stdlib(text)))
    if text in ("10.0.0.1", "10.0.0.1/32", "::1/128", "fe80::1%eth0"):
        assert got is not None


@given(st.text(alphabet, max_size=24))
def test_the_host_shortcut_never_accepts_what_the_stdlib_refuses(text: str) -> None:
    got = selectors._host(text)
    assert got is None or got == _stdlib(text)


def test_within_one_load_each_text_is_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[str] = []
    real = selectors._parse

    def counted(text: str) -> selectors.Selector:
        parsed.append(text)
        return real(text)

    monkeypatch.setattr(selectors, "_parse", counted)
    with parsed_once():
        first = parse_selector("10.1.0.0/16[tcp/443]")
        assert parse_selector("10.1.0.0/16[tcp/443]") is first
    parse_selector("10.1.0.0/16[tcp/443]")  # outside: no memo kept
    assert parsed == ["10.1.0.0/16[tcp/443]"] * 2
    with parsed_once(), pytest.raises(ValueError, match="bad prefix"):
        parse_selector("10.1.0.1/16")


def test_the_daemons_load_parses_each_selector_once(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pathlib import Path

    from xfrmctl.daemon.main import _load

    tmp = Path(str(tmp_path))
    (tmp / "k.psk").write_text("a secret\n")
    (tmp / "k.psk").chmod(0o600)
    conns = "".join(
        f"  c{i}:\n    local: {{auth: psk, id: a.example}}\n    remote: {{auth: psk}}\n"
        "    psk_file: k.psk\n"
        f"    children:\n      n: {{local_ts: [10.1.0.{i}/32], remote_ts: [10.2.0.0/16]}}\n"
        for i in range(3)
    )
    cfg = tmp / "x.yaml"
    cfg.write_text("connections:\n" + conns)
    parsed: list[str] = []
    real = selectors._parse
    monkeypatch.setattr(selectors, "_parse", lambda text: parsed.append(text) or real(text))
    specs, _ = _load(cfg)
    assert len(specs) == 3
    assert sorted(parsed) == ["10.1.0.0/32", "10.1.0.1/32", "10.1.0.2/32", "10.2.0.0/16"]
