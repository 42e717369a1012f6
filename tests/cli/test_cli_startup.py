"""The CLI's start-up contract: no heavy imports, honest stubs (speed itself is measured by
bench/startup.py, not asserted here)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import run_importtime
from typer.testing import CliRunner

from xfrmctl.cli import app

runner = CliRunner()


COMMANDS = {
    "up",
    "down",
    "rekey",
    "status",
    "explain",
    "keys",
    "reload",
    "check",
    "config",
    "daemon",
    "version",
}


def test_help_lists_every_command_in_its_commands_section() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    section = result.output.split("Commands:", 1)[1].split("\n\n", 1)[0]
    listed = {line.split()[0] for line in section.splitlines() if line.strip()}
    assert listed == COMMANDS, section
    for command in COMMANDS:  # and each one is a command that answers --help
        assert runner.invoke(app, [command, "--help"]).exit_code == 0, command


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


def _imported_modules(*args: str, env: dict[str, str]) -> tuple[int, set[str]]:
    """Run the typer CLI under -X importtime: its exit code and every module it imported."""
    proc, modules = run_importtime("xfrmctl.cli", *args, env=env)
    return proc.returncode, modules


# typer >= 0.2x coerces every parsed parameter through a pydantic TypeAdapter, so commands
# that take arguments load pydantic whatever this package does; --help does not.
@pytest.mark.parametrize(
    ("args", "forbidden"),
    [
        (["--help"], ("pyroute2", "cryptography", "pydantic")),
        (["status"], ("pyroute2", "cryptography")),
        (["status", "--json"], ("pyroute2", "cryptography")),
        (["up", "x"], ("pyroute2", "cryptography")),
        (["down", "x/y"], ("pyroute2", "cryptography")),
        (
            ["keys", "--wireshark", "{tmp}", "--i-know-this-writes-secrets"],
            ("pyroute2", "cryptography"),
        ),
    ],
)
def test_client_commands_do_not_import_netlink_or_crypto(
    tmp_path: Path, args: list[str], forbidden: tuple[str, ...]
) -> None:
    env = dict(os.environ, XFRMCTL_SOCKET=str(tmp_path / "none.sock"))
    code, modules = _imported_modules(*(a.format(tmp=tmp_path) for a in args), env=env)
    assert code in (0, 3)  # 3: no daemon at the temporary socket, as intended here
    assert "xfrmctl.client" in modules  # the CLI (run as __main__) really loaded
    heavy = {m for m in modules if m.split(".")[0] in forbidden}
    assert heavy == set()


def test_check_never_scans_for_pydantic_plugins(tmp_path: Path) -> None:
    """`check` (and the daemon) skip pydantic's entry-point scan; an operator's own setting
    of PYDANTIC_DISABLE_PLUGINS is kept."""
    config = tmp_path / "x.yaml"
    config.write_text("connections: {}\n")
    probe = (
        "import os, sys\n"
        "from xfrmctl import commands\n"
        f"commands.check({str(config)!r})\n"
        "from pydantic.plugin import _loader\n"
        "print(os.environ['PYDANTIC_DISABLE_PLUGINS'], _loader._plugins is None)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    run = [sys.executable, "-c", probe]
    out = subprocess.run(run, capture_output=True, text=True, env=env, check=True, timeout=60)
    assert out.stdout.split()[-2:] == ["__all__", "True"]
    env["PYDANTIC_DISABLE_PLUGINS"] = "some-plugin"
    out = subprocess.run(run, capture_output=True, text=True, env=env, check=True, timeout=60)
    assert out.stdout.split()[-2:] == ["some-plugin", "False"]  # scanned, as asked
