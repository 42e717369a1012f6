"""The console entry point's fast path (`xfrmctl.fastcli`) and the typer CLI agree: each command
line of the table runs through both against one fake daemon, and stdout, stderr and the exit
status must be identical (and the status the documented one). Command lines the fast path does
not handle must reach typer untouched."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
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
def paths() -> Iterator[dict[str, str]]:
    """Sockets: {live} the fake daemon, {missing} no file, {stale} nobody listens on it.
    Configurations: {good} valid, {bad} with errors, {none} no file."""
    folder = Path(tempfile.mkdtemp(prefix="xf", dir="/tmp"))
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(folder / "stale.sock"))
    stale.close()
    (folder / "k.psk").write_text("secret\n")
    (folder / "k.psk").chmod(0o600)
    auth = "    local: {auth: psk}\n    remote: {auth: psk}\n    psk_file: k.psk\n"
    (folder / "good.yaml").write_text(f"connections:\n  a:\n{auth}")
    (folder / "bad.yaml").write_text("settings:\n  port: 0\n")
    try:
        with ServerThread(folder / "run" / "live.sock", Handler()) as server:
            yield {
                "live": str(server.path),
                "missing": str(folder / "missing.sock"),
                "stale": str(folder / "stale.sock"),
                **{name: str(folder / f"{name}.yaml") for name in ("good", "bad", "none")},
            }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


L = ["--socket", "{live}"]
DEFAULT = "/etc/xfrmctl/xfrmctl.yaml"
# (argv, environment variables, documented exit status)
CASES: list[tuple[list[str], dict[str, str], int]] = [
    ([*L, "up", "site-b"], {}, 0),
    ([*L, "up", "site-b/lan"], {}, 0),
    ([*L, "up", "strict"], {}, 1),  # NO_PROPOSAL_CHOSEN with both sides' offers
    ([*L, "up", "nope"], {}, 1),
    ([*L, "up", "/lan"], {}, 2),  # bad NAME
    ([*L, "up", "a/b/c"], {}, 2),
    ([*L, "down", "site-b/lan"], {}, 0),
    ([*L, "down", "site-b/"], {}, 2),
    ([*L, "rekey", "site-b"], {}, 0),
    ([*L, "rekey", "--ike", "site-b"], {}, 0),
    ([*L, "rekey", "site-b/lan", "--ike"], {}, 2),
    ([*L, "rekey", "gone"], {}, 1),  # NOT_UP
    ([*L, "status"], {}, 0),
    ([*L, "status", "site-b"], {}, 0),
    ([*L, "status", "--json"], {}, 0),
    ([*L, "status", "--json", "site-b"], {}, 0),
    ([*L, "explain", "site-b"], {}, 0),
    ([*L, "explain", "site-b", "--json"], {}, 0),
    ([*L, "explain", "nope", "--json"], {}, 1),
    ([*L, "reload"], {}, 1),  # CONFIG_INVALID with the errors listed
    ([*L, "version"], {}, 0),
    (["--socket={live}", "--timeout", "5", "status"], {}, 0),
    (["--timeout=2.5", *L, "up", "site-b"], {}, 0),
    (["status", "--json"], {"XFRMCTL_SOCKET": "{live}"}, 0),
    (
        ["--socket", "{missing}", "status"],
        {"XFRMCTL_SOCKET": "{live}"},
        3,
    ),  # the option wins over the variable
    (["status"], {"XFRMCTL_SOCKET": "{missing}"}, 3),  # no daemon
    (["up", "site-b"], {"XFRMCTL_SOCKET": "{stale}"}, 3),
    (["status", "--json"], {"XFRMCTL_SOCKET": "{stale}"}, 3),
    (["--socket", "{missing}", "version"], {}, 0),  # the CLI's own version only
    (["--socket", "{missing}", "up", "a//b"], {}, 2),  # bad NAME before any connection
    (["check", "--config", "{good}"], {}, 0),
    (["check", "--config={bad}"], {}, 2),  # every error listed
    (["check", "--config", "{none}"], {}, 2),
    (["check"], {"XFRMCTL_CONFIG": "{good}"}, 0),
    (["--socket", "{missing}", "check", "--config", "{bad}"], {"XFRMCTL_CONFIG": "{good}"}, 2),
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
    env: dict[str, str],
    status: int,
    paths: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("XFRMCTL_SOCKET", "XFRMCTL_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, _fill(value, paths))
    args = [_fill(a, paths) for a in argv]
    fast = _through("fast", args, capsys)
    slow = _through("typer", args, capsys)
    assert fast == slow
    assert fast[0] == status, fast
    assert fast[1] or fast[2]  # something was said


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["daemon"], {}, ("/etc/xfrmctl/xfrmctl.yaml", None, None)),
        (["daemon", "--config", "/c.yaml"], {}, ("/c.yaml", None, None)),
        (["daemon"], {"XFRMCTL_CONFIG": "/e.yaml"}, ("/e.yaml", None, None)),
        (["daemon", "--config=/c.yaml"], {"XFRMCTL_CONFIG": "/e.yaml"}, ("/c.yaml", None, None)),
        (["daemon", "--socket", "/d.sock"], {}, (DEFAULT, "/d.sock", None)),
        (["--socket", "/g.sock", "daemon"], {}, (DEFAULT, "/g.sock", None)),
        (["daemon"], {"XFRMCTL_SOCKET": "/v.sock"}, (DEFAULT, "/v.sock", None)),
        (["--socket", "/g.sock", "daemon", "--socket", "/d.sock"], {}, (DEFAULT, "/d.sock", None)),
        (["daemon", "--log-level", "debug"], {}, (DEFAULT, None, "debug")),
        (["--timeout", "3", "daemon", "--log-level=error", "--config", "c.yaml"], {}, None),
    ],
    ids=repr,
)
def test_daemon_gets_the_same_arguments_on_both_paths(
    argv: list[str],
    env: dict[str, str],
    expected: tuple[str, str | None, str | None] | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The daemon itself is not run: what each path would start it with is compared."""
    calls: list[tuple[str, str | None, str | None]] = []

    def record(config: Any, socket: Any, log_level: str | None) -> None:
        calls.append((os.fspath(config), None if socket is None else os.fspath(socket), log_level))
        raise SystemExit(0)

    monkeypatch.setattr("xfrmctl.commands.daemon", record)
    for name in ("XFRMCTL_CONFIG", "XFRMCTL_SOCKET"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert fastcli.run(argv, os.environ) == 0
    with pytest.raises(SystemExit):
        cli.main(argv)
    assert len(calls) == 2 and calls[0] == calls[1], calls
    assert expected is None or calls[0] == expected


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
        ["check", "-c", "/tmp/x.yaml"],
        ["check", "--config", "/tmp//x.yaml"],
        ["check", "extra"],
        ["daemon", "--log-level", "DEBUG"],  # typer folds the case
        ["daemon", "--log-level", "trace"],
        ["daemon", "--socket", "/run/"],
        ["daemon", "--json"],
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


def _bare_fast_path(argv: list[str]) -> tuple[str, list[str]]:
    """`fastcli.run(argv)` in an interpreter without site (the lab's guest has no
    editable-install finder to load pathlib and friends first): what it printed, then its
    exit status and the modules it imported."""
    root = Path(cli.__file__).resolve().parents[1]
    probe = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "from xfrmctl.fastcli import run\n"
        f"code = run({argv!r}, {{}})\n"
        "print(code, *sorted(set(sys.modules) - before), file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-S", "-c", probe],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(root)},
        check=True,
        timeout=60,
    )
    return proc.stdout, proc.stderr.split("\n")[-2].split()


def test_the_fast_path_imports_only_what_it_needs(tmp_path: Path) -> None:
    """A client command imports none of the modules a plain start can skip."""
    _, out = _bare_fast_path(["--socket", str(tmp_path / "none.sock"), "status", "--json"])
    assert out[0] == "3" and "xfrmctl.client" in out
    skippable = {"typing", "pathlib", "contextlib", "warnings", "dataclasses", "datetime"}
    assert skippable & set(out) == set()
    # Each module is a file to find, read and run: ~5-9 ms of every `xfrmctl up` in the lab.
    # `from __future__ import annotations` imports the __future__ module at run time.
    assert {"__future__", "xfrmctl.config", "xfrmctl.config.units"} & set(out) == set()


def test_up_against_a_daemon_imports_neither_json_re_nor_socket(paths: dict[str, str]) -> None:
    """The whole `xfrmctl up` (request, progress, reply, the IKE SA's age): json, re, enum,
    socket and datetime cost ~55 M instructions per start."""
    printed, loaded = _bare_fast_path(["--socket", paths["live"], "up", "site-b"])
    assert "site-b[3]: ESTABLISHED" in printed and "established " in printed
    assert loaded[0] == "0", loaded
    heavy = {"json", "re", "enum", "socket", "datetime", "typing", "pathlib", "selectors"}
    assert heavy & set(loaded) == set()
