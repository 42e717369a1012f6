"""The guard rails around `xfrmctl keys`: the explicit flag, root only, a safe directory, files
0600 that never follow a planted symlink, and a daemon reply checked before it is written."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xfrmctl.cli import app
from xfrmctl.daemon.keys import KeyFileError, check_tables, open_directory, write_tables

runner = CliRunner()
TABLES = {"esp_sa": ['"IPv4","a","b"'], "ikev2_decryption_table": ["01,02"]}
FLAG = "--i-know-this-writes-secrets"


@pytest.fixture
def keydir(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    path.mkdir(mode=0o700)
    return path


@pytest.fixture
def umask_zero() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["--socket", "/nonexistent/x.sock", "keys", *args])
    return result.exit_code, result.stdout + result.stderr


def test_without_the_flag_nothing_is_asked_of_the_daemon(keydir: Path) -> None:
    code, out = cli("--wireshark", str(keydir))
    assert code == 2, out  # a usage error, not 3: the (absent) daemon was never contacted
    assert f"refusing to write secret keys without {FLAG}" in out
    assert list(keydir.iterdir()) == []


def test_only_root_may_export(keydir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    code, out = cli("--wireshark", str(keydir), FLAG)
    assert code == 2 and "only root may export keys" in out, out


def test_the_wireshark_directory_is_required() -> None:
    code, out = cli(FLAG)
    assert code == 2 and "--wireshark" in out, out


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing", "no such directory"),
        (lambda d: (d / "file").touch() or d / "file", "not a directory"),
        (lambda d: (d.chmod(0o777), d)[1], "is world-writable"),
        (lambda d: (d.chmod(0o1777), d)[1], "is world-writable"),  # sticky as /tmp is
    ],
    ids=["missing", "file", "world-writable", "sticky"],
)
def test_unsafe_directories_are_refused_before_asking_the_daemon(
    keydir: Path, make: object, message: str
) -> None:
    path = make(keydir)  # type: ignore[operator]
    code, out = cli("--wireshark", str(path), FLAG)
    assert code == 2 and message in out, out
    with pytest.raises(KeyFileError, match=message):
        open_directory(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root (CI runs as root)")
def test_a_directory_of_another_user_is_refused(keydir: Path) -> None:
    os.chown(keydir, 12345, -1)
    with pytest.raises(KeyFileError, match="belongs to uid 12345, not to root or you"):
        open_directory(keydir)


def test_files_are_0600_whatever_the_umask(keydir: Path, umask_zero: None) -> None:
    paths = write_tables(keydir, TABLES, "header")
    assert [p.name for p in paths] == ["esp_sa", "ikev2_decryption_table"]
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (keydir / "esp_sa").read_text() == '# header\n"IPv4","a","b"\n'
    assert (keydir / "ikev2_decryption_table").read_text() == "# header\n01,02\n"
    assert sorted(p.name for p in keydir.iterdir()) == ["esp_sa", "ikev2_decryption_table"]


def test_an_earlier_export_is_replaced(keydir: Path) -> None:
    (keydir / "esp_sa").write_text("old keys\n")
    write_tables(keydir, TABLES, "new")
    assert "old keys" not in (keydir / "esp_sa").read_text()


def test_a_planted_symlink_is_replaced_not_followed(keydir: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (keydir / "esp_sa").symlink_to(victim)
    write_tables(keydir, TABLES, "h")
    assert victim.read_text() == "precious\n"
    assert not (keydir / "esp_sa").is_symlink() and "IPv4" in (keydir / "esp_sa").read_text()


def test_a_symlink_planted_at_the_temporary_name_stops_the_write(
    keydir: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (keydir / f".esp_sa.{os.getpid()}.tmp").symlink_to(victim)
    with pytest.raises(KeyFileError, match="cannot create"):
        write_tables(keydir, TABLES, "h")
    assert victim.read_text() == "precious\n"
    assert not (keydir / "esp_sa").exists()


@pytest.mark.parametrize(
    "tables",
    [
        None,
        {"esp_sa": []},
        {"esp_sa": ["ok"], "ikev2_decryption_table": "not a list"},
        {"esp_sa": ['"IPv4"\n"injected"'], "ikev2_decryption_table": []},
        {"esp_sa": [1], "ikev2_decryption_table": []},
    ],
    ids=["none", "missing-table", "not-a-list", "newline", "not-a-string"],
)
def test_a_malformed_daemon_reply_is_not_written(tables: object) -> None:
    with pytest.raises(KeyFileError, match="the daemon sent"):
        check_tables(tables)


def test_a_well_formed_reply_passes() -> None:
    assert check_tables(TABLES) == TABLES
