"""Hostile or broken YAML (found by fuzzing `xfrmctl check`): every case is a file:line error
and exit code 2, fast and small, never a traceback."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xfrmctl.cli import app
from xfrmctl.config import load_config
from xfrmctl.config.errors import ConfigError
from xfrmctl.config.loader import MAX_FILE_SIZE

runner = CliRunner()


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    lines = ["a0: &a0 [" + ", ".join(['"lol"'] * width) + "]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


CASES: dict[str, tuple[bytes, int, str]] = {  # name: (file, line, message fragment)
    "int tag on a word": (
        b"settings:\n  log_level: !!int info\n",
        2,
        "'info' cannot be read as a YAML int",
    ),
    "float tag on a word": (
        b"settings:\n  port: !!float many\n",
        2,
        "cannot be read as a YAML float",
    ),
    "bad timestamp": (
        b"settings:\n  port: !!timestamp yesterday\n",
        2,
        "cannot be read as a YAML timestamp",
    ),
    "bad base64": (b"settings:\n  port: !!binary '%%%'\n", 2, "expected a whole number"),
    "python object": (b"settings:\n  port: !!python/object:os.system ls\n", 2, "YAML error"),
    "unknown tag": (b"settings:\n  port: !foo 1\n", 2, "YAML error"),
    "tagged key": (b"settings:\n  !!int x: 1\n", 2, "cannot be read as a YAML int"),
    "deep flow sequence": (
        b"a: " + b"[" * 500 + b"]" * 500 + b"\n",
        1,
        "nesting deeper than 64 levels",
    ),
    "deep flow mapping": (
        b"a: " + b"{a: " * 500 + b"1" + b"}" * 500 + b"\n",
        1,
        "nesting deeper than",
    ),
    "alias bomb": (alias_bomb().encode(), 1, "alias bomb"),
    "control character": (
        b'settings:\n  log_level: "in\x01fo"\n',
        2,
        "control character #x01 at column 17",
    ),
    # libyaml counts bytes; the column is in characters (each é is two bytes of UTF-8)
    "control character after non-ASCII": (
        'settings:\n  log_level: "\u00e9\u00e9\u00e9\u00e9\x01fo"\n'.encode(),
        2,
        "control character #x01 at column 19",
    ),
    "escape character": (b"connections:\n  a:\n    x: \x1b[31m\n", 3, "control character #x1b"),
    "invalid UTF-8": (
        b"settings:\n  socket: /run/\xff\xfe.sock\n",
        2,
        "not UTF-8 text: byte(s) ff at column 16",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_yaml_is_a_placed_error(tmp_path: Path, name: str) -> None:
    data, line, fragment = CASES[name]
    config = tmp_path / "xfrmctl.yaml"
    config.write_bytes(data)
    start = time.process_time()
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert time.process_time() - start < 5, "bounded work"  # generous: the bomb took minutes
    messages = [str(i) for i in info.value.issues]
    assert any(m.startswith(f"{config}:{line}: ") and fragment in m for m in messages), messages
    result = runner.invoke(app, ["check", "--config", str(config)])
    assert result.exit_code == 2 and fragment in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_file_beyond_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    config = tmp_path / "xfrmctl.yaml"
    with config.open("wb") as f:
        f.write(b"# padding\n" * (MAX_FILE_SIZE // 10 + 1))
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert any("is larger than 16 MiB" in str(i) for i in info.value.issues)


def with_psk(tmp_path: Path, text: str) -> Path:
    """The configuration `text` as xfrmctl.yaml beside the k.psk it names."""
    psk = tmp_path / "k.psk"
    psk.write_text("secret\n")
    psk.chmod(0o600)
    config = tmp_path / "xfrmctl.yaml"
    config.write_text(text)
    return config


def test_anchors_and_merge_keys_still_work(tmp_path: Path) -> None:
    """The alias budget leaves room for ordinary reuse."""
    loaded = load_config(
        with_psk(
            tmp_path,
            "connections:\n"
            "  one: &one\n    local_addrs: [192.0.2.1]\n    remote_addrs: [192.0.2.2]\n"
            "    local: {auth: psk, id: a.example}\n    remote: {auth: psk}\n    psk_file: k.psk\n"
            "  two:\n    <<: *one\n",
        )
    )
    assert loaded.connection("two").remote_addrs == loaded.connection("one").remote_addrs
    assert loaded.connection("two").psk_file == loaded.connection("one").psk_file


def test_libyaml_parses_when_pyyaml_has_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The C parser does the work (the pure-Python one costs ~2 ms per connection), and a file
    gives the same configuration through either."""
    import yaml

    from xfrmctl.config import yamlnodes

    if yaml.__with_libyaml__:
        assert yamlnodes.LOADER is yaml.CSafeLoader
    config = with_psk(
        tmp_path,
        "connections:\n  one:\n    local_addrs: [192.0.2.1]\n    remote_addrs: [192.0.2.2]\n"
        "    local: {auth: psk, id: 'é.example'}\n    remote: {auth: psk}\n    psk_file: k.psk\n",
    )
    fast = load_config(config)
    monkeypatch.setattr(yamlnodes, "LOADER", yaml.SafeLoader)
    assert load_config(config).model == fast.model
