"""CLI commands against a real ControlServer on a temporary socket."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cli_helpers import ServerThread
from typer.testing import CliRunner

from xfrmctl.cli import app
from xfrmctl.daemon.status import StatusReport

runner = CliRunner()


def run(path: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--socket", str(path), *args])
    return result.exit_code, result.stdout, result.stderr


def test_up_success_prints_progress_and_what_was_negotiated(server: ServerThread) -> None:
    code, out, _ = run(server.path, "up", "site-b")
    assert code == 0
    assert "sending IKE_SA_INIT to 192.0.2.2" in out
    assert "site-b[3]: ESTABLISHED, 192.0.2.1[gw-a.example.org]...192.0.2.2" in out
    assert "aes256gcm16-prfsha384-x25519" in out
    assert "lan{7}: INSTALLED, tunnel, ESP, SPIs c1a2b3d4_i 0a0b0c0d_o, aes256gcm16" in out
    assert "10.1.0.0/16 === 10.2.0.0/16" in out


def test_up_child_is_passed_separately(server: ServerThread) -> None:
    code, _, _ = run(server.path, "up", "site-b/lan")
    assert code == 0
    assert server.handler.calls == [("up", ("site-b", "lan"))]


def test_up_failure_explains_and_exits_1(server: ServerThread) -> None:
    code, _, err = run(server.path, "up", "strict")
    assert code == 1
    assert (
        "xfrmctl: up strict failed: NO_PROPOSAL_CHOSEN: the peer accepted none of our IKE "
        "proposals" in err
    )
    assert "ours: aes256gcm16-prfsha384-x25519" in err
    assert "theirs: aes128-sha1-modp1024" in err


def test_up_unknown_connection(server: ServerThread) -> None:
    code, _, err = run(server.path, "up", "nope")
    assert code == 1 and "NO_SUCH_CONNECTION: no connection named 'nope'" in err


@pytest.mark.parametrize("bad", ["/lan", "site-b/", "a/b/c"])
def test_bad_name_is_usage_error(server: ServerThread, bad: str) -> None:
    code, _, err = run(server.path, "up", bad)
    assert code == 2 and "is not CONNECTION or CONNECTION/CHILD" in err
    assert server.handler.calls == []


def test_down(server: ServerThread) -> None:
    code, out, _ = run(server.path, "down", "site-b/lan")
    assert code == 0
    assert "site-b/lan: deleted 0 IKE SA(s) and 1 Child SA(s)" in out
    assert server.handler.calls == [("down", ("site-b", "lan"))]


def test_status_json_is_the_documented_shape(server: ServerThread) -> None:
    code, out, _ = run(server.path, "status", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["schema_version"] == 1
    [sa] = report["ike_sas"]
    for key in (
        "name", "state", "local_addr", "remote_addr", "local_id", "remote_id", "proposal",
        "established_at", "rekey_in", "children",
    ):  # fmt: skip
        assert key in sa, key
    child = sa["children"][0]
    for key in (
        "name", "state", "mode", "protocol", "spi_in", "spi_out", "local_ts", "remote_ts",
        "proposal", "bytes_in", "bytes_out", "packets_in", "packets_out", "rekey_in",
    ):  # fmt: skip
        assert key in child, key
    assert (child["spi_in"], child["spi_out"]) == ("c1a2b3d4", "0a0b0c0d")
    assert sa["established_at"] == "2024-01-01T00:00:00Z"
    assert [c["name"] for c in report["connections"]] == ["site-b", "site-c"]
    StatusReport.model_validate(report)


def test_status_human_lists_sas_and_idle_connections(server: ServerThread) -> None:
    code, out, _ = run(server.path, "status", "site-b")
    assert code == 0
    assert "site-b[3]: ESTABLISHED" in out
    assert "in 1234 bytes / 10 packets" in out
    assert "Configured, not up:" in out
    assert "site-c: to 192.0.2.3; children: dmz (start_action trap)" in out
    assert "site-b: to" not in out  # active connections are not repeated
    assert server.handler.calls == [("status", "site-b")]


def test_reload_failure_lists_config_errors(server: ServerThread) -> None:
    code, _, err = run(server.path, "reload")
    assert code == 1
    assert "CONFIG_INVALID" in err
    assert "xfrmctl.yaml:3: settings.port: 0 is out of range" in err and "second" in err


def test_version_reports_daemon_too(server: ServerThread) -> None:
    code, out, _ = run(server.path, "version")
    assert code == 0
    assert "xfrmctl 0.1.0" in out and "daemon 0.1.0 (control protocol 1)" in out


def test_daemon_not_running_no_socket(short_dir: Path) -> None:
    path = short_dir / "missing.sock"
    code, _, err = run(path, "status")
    assert code == 3
    assert f"xfrmctl daemon is not running (no socket at {path})" in err


def test_daemon_not_running_stale_socket(short_dir: Path) -> None:
    path = short_dir / "stale.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    code, _, err = run(path, "up", "site-b")
    assert code == 3 and "xfrmctl daemon is not running" in err


def test_env_var_selects_socket(server: ServerThread) -> None:
    result = runner.invoke(app, ["status"], env={"XFRMCTL_SOCKET": str(server.path)})
    assert result.exit_code == 0 and "site-b[3]" in result.stdout


@contextmanager
def unprivileged() -> Iterator[None]:
    """Drop the effective uid (root) or nothing (already unprivileged)."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)


def test_permission_denied(server: ServerThread) -> None:
    if os.geteuid() != 0:
        server.path.chmod(0)
    with unprivileged():
        code, _, err = run(server.path, "status")
    assert code == 3
    assert f"permission denied on {server.path}: run as root" in err


def test_check_reports_every_error_and_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "xfrmctl.yaml"
    config.write_text(
        "settings:\n  port: 0\nconnections:\n  a:\n    children:\n      c: {mode: tunel}\n"
    )
    result = runner.invoke(app, ["check", "--config", str(config)])
    assert result.exit_code == 2
    assert f"{config}:2: settings.port:" in result.stderr
    assert f"{config}:6: connections.a.children.c.mode: 'tunel' is not one of" in result.stderr
    assert f"{config}: " in result.stderr and "error(s)" in result.stderr


def test_check_ok_and_config_env(tmp_path: Path) -> None:
    config = tmp_path / "x.yaml"
    psk = tmp_path / "k.psk"
    psk.write_text("secret\n")
    psk.chmod(0o600)
    config.write_text(
        "connections:\n  a:\n    local: {auth: psk}\n    remote: {auth: psk}\n    psk_file: k.psk\n"
    )
    result = runner.invoke(app, ["check"], env={"XFRMCTL_CONFIG": str(config)})
    assert result.exit_code == 0, result.stderr
    assert "OK, 1 connection(s) in 1 file(s)" in result.stdout


def test_config_schema_is_json(tmp_path: Path) -> None:
    result = runner.invoke(app, ["config", "schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert "connections" in schema["properties"]


def test_every_command_has_help_with_examples() -> None:
    for command in (["up"], ["down"], ["status"], ["reload"], ["check"], ["daemon"]):
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0
        assert "Examples:" in result.stdout and "Exit status:" in result.stdout, command
