"""The console entry point's fast path (`xfrmctl.fastcli`) and the typer CLI agree: each command
line of the table runs through both against one fake daemon, and stdout, stderr and the exit
status must be identical (and the status the documented one). Command lines the fast path does
not handle must reach typer untouched."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import FakeHandler, ServerThread, run_importtime

from xfrmctl import cli, fastcli
from xfrmctl.daemon.control import ControlError


class Handler(FakeHandler):
    """FakeHandler with `rekey` and `explain`: `site-b` is up, anything else is not."""

    async def rekey(self, name: str, child: str | None, ike: bool) -> dict[str, Any]:
        if name != "site-b":
            raise ControlError("NOT_UP", f"{name} has no established IKE SA")
        return {"rekeyed_ike_sas": int(ike), "rekeyed_child_sas": 0 if ike else 1}

    async def explain(self, name: str) -> dict[str, Any]:
        if name != "site-b":
            raise ControlError("UNKNOWN_CONNECTION", f"no connection {name!r}; known: site-b")
        return {"connection": name, "failure": None, "text": [f"{name}: no failure on record"]}


@pytest.fixture(scope="module")
def sockets() -> Iterator[dict[str, str]]:
    """{live}: the fake daemon; {missing}: no file; {stale}: a socket nobody listens on."""
    folder = Path(tempfile.mkdtemp(prefix="xf", dir="/tmp"))
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(folder / "stale.sock"))
    stale.close()
    try:
        with ServerThread(folder / "run" / "live.sock", Handler()) as server:
            yield {
                "live": str(server.path),
                "missing": str(folder / "missing.sock"),
                "stale": str(folder / "stale.sock"),
            }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


L = ["--socket", "{live}"]
# (argv, XFRMCTL_SOCKET or None, documented exit status)
CASES: list[tuple[list[str], str | None, int]] = [
    ([*L, "up", "site-b"], None, 0),
    ([*L, "up", "site-b/lan"], None, 0),
    ([*L, "up", "strict"], None, 1),  # NO_PROPOSAL_CHOSEN with both sides' offers
    ([*L, "up", "nope"], None, 1),
    ([*L, "up", "/lan"], None, 2),  # bad NAME
    ([*L, "up", "a/b/c"], None, 2),
    ([*L, "down", "site-b/lan"], None, 0),
    ([*L, "down", "site-b/"], None, 2),
    ([*L, "rekey", "site-b"], None, 0),
    ([*L, "rekey", "--ike", "site-b"], None, 0),
    ([*L, "rekey", "site-b/lan", "--ike"], None, 2),
    ([*L, "rekey", "gone"], None, 1),  # NOT_UP
    ([*L, "status"], None, 0),
    ([*L, "status", "site-b"], None, 0),
    ([*L, "status", "--json"], None, 0),
    ([*L, "status", "--json", "site-b"], None, 0),
    ([*L, "explain", "site-b"], None, 0),
    ([*L, "explain", "site-b", "--json"], None, 0),
    ([*L, "explain", "nope", "--json"], None, 1),
    ([*L, "reload"], None, 1),  # CONFIG_INVALID with the errors listed
    ([*L, "version"], None, 0),
    (["--socket={live}", "--timeout", "5", "status"], None, 0),
    (["--timeout=2.5", *L, "up", "site-b"], None, 0),
    (["status", "--json"], "{live}", 0),
    (["--socket", "{missing}", "status"], "{live}", 3),  # the option wins over the variable
    (["status"], "{missing}", 3),  # no daemon
    (["up", "site-b"], "{stale}", 3),
    (["status", "--json"], "{stale}", 3),
    (["--socket", "{missing}", "version"], None, 0),  # the CLI's own version only
    (["--socket", "{missing}", "up", "a//b"], None, 2),  # bad NAME before any connection
]


def _fill(text: str, paths: dict[str, str]) -> str:
    return text.format(**paths)


def _through(
    path: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    if path == "fast":
        code = fastcli.run(argv, os.environ)
        assert code is not None, f"the fast path handed {argv} to typer"
    else:
        with pytest.raises(SystemExit) as stopped:
            cli.main(argv)
        assert isinstance(stopped.value.code, int)
        code = stopped.value.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(("argv", "env", "status"), CASES, ids=lambda v: repr(v))
def test_fast_path_and_typer_print_and_exit_alike(
    argv: list[str],
    env: str | None,
    status: int,
    sockets: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if env is None:
        monkeypatch.delenv("XFRMCTL_SOCKET", raising=False)
    else:
        monkeypatch.setenv("XFRMCTL_SOCKET", _fill(env, sockets))
    args = [_fill(a, sockets) for a in argv]
    fast = _through("fast", args, capsys)
    slow = _through("typer", args, capsys)
    assert fast == slow
    assert fast[0] == status, fast
    assert fast[1] or fast[2]  # something was said


def test_an_empty_socket_variable_is_unset_on_both_paths(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both then talk to the default socket (and say so when nothing is there)."""
    monkeypatch.setenv("XFRMCTL_SOCKET", "")
    fast = _through("fast", ["--timeout", "1", "status"], capsys)
    assert fast == _through("typer", ["--timeout", "1", "status"], capsys)
    assert fast[0] == 0 or "/run/xfrmctl/xfrmctl.sock" in fast[2]


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--help"],
        ["status", "--help"],
        ["up"],  # missing NAME: typer's usage error
        ["up", "a", "b"],
        ["up", "--", "-a"],
        ["up", "-"],
        ["status", "--bogus"],
        ["status", "--json", "--json"],
        ["rekey", "-i", "a"],
        ["reload", "extra"],
        ["--socket"],
        ["--socket", "/tmp/x.sock"],
        ["--socket", "/tmp/x.sock", "--socket", "/tmp/y.sock", "status"],
        ["--socket=", "status"],
        ["--socket", "/tmp//x.sock", "status"],  # typer's Path() would rewrite it
        ["--socket", "run/", "status"],
        ["--socket", "./x.sock", "status"],
        ["--timeout", "1e3", "status"],
        ["--timeout", "-1", "status"],
        ["--timeout", "٣", "status"],  # a digit to str.isdigit, not to click
        ["--bogus", "status"],
        ["-x", "status"],
        ["--install-completion"],
        ["keys", "--wireshark", "/tmp"],
        ["check"],
        ["daemon"],
        ["config", "schema"],
        ["Status"],
    ],
    ids=repr,
)
def test_other_command_lines_go_to_typer(argv: list[str]) -> None:
    assert fastcli.parse(argv, {}) is None


def test_shell_completion_goes_to_typer() -> None:
    assert fastcli.parse(["status"], {}) is not None
    assert fastcli.parse(["status"], {"_XFRMCTL_COMPLETE": "bash_complete"}) is None


def test_a_socket_variable_typer_would_rewrite_goes_to_typer() -> None:
    assert fastcli.parse(["status"], {"XFRMCTL_SOCKET": "/run//x.sock"}) is None


def _console(*argv: str, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """`python -m xfrmctl ARGV` (the console script's code) and the modules it imported."""
    return run_importtime("xfrmctl", *argv, env=env)


@pytest.mark.parametrize(
    "argv", [["status"], ["status", "--json"], ["up", "x/y"], ["rekey", "--ike", "x"]]
)
def test_the_console_script_runs_client_commands_without_typer(
    tmp_path: Path, argv: list[str]
) -> None:
    env = dict(os.environ, XFRMCTL_SOCKET=str(tmp_path / "none.sock"))
    proc, modules = _console(*argv, env=env)
    assert proc.returncode == 3, proc.stderr
    assert "xfrmctl daemon is not running" in proc.stderr
    assert "xfrmctl.commands" in modules
    heavy = ("typer", "click", "pydantic", "pyroute2", "cryptography")
    assert {m for m in modules if m.split(".")[0] in heavy} == set()


def test_the_console_script_hands_help_to_typer() -> None:
    proc, modules = _console("--help", env=dict(os.environ))
    assert proc.returncode == 0
    assert "Usage:" in proc.stdout and "Commands:" in proc.stdout
    assert "typer" in modules
