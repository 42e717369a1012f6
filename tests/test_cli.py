"""The CLI's start-up contract: fast help, no heavy imports, honest stubs."""

import subprocess
import sys

from typer.testing import CliRunner

from xfrmctl.cli import app

runner = CliRunner()


def test_help_lists_planned_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("up", "down", "status", "reload", "check", "config", "daemon", "version"):
        assert command in result.output


def test_cli_import_does_not_pull_netlink_or_crypto() -> None:
    code = (
        "import sys, xfrmctl.cli; "
        "bad = [m for m in ('pyroute2', 'cryptography', 'pydantic') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_version() -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert "xfrmctl 0.1.0" in result.output
