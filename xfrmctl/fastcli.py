"""The `xfrmctl` console entry point: the common client commands without typer.

Contract: `main()` runs exactly these command lines itself, and hands every other one (help,
completion, usage errors, unknown or repeated options, other commands) unchanged to the typer
app in `xfrmctl.cli`:

    xfrmctl [--socket PATH] [--timeout SECONDS] up|down NAME[/CHILD]
                                                rekey [--ike] NAME[/CHILD]
                                                status [NAME] [--json]
                                                explain NAME [--json]
                                                reload | version

Both run the same bodies (`xfrmctl.commands`), so what one prints and exits with the other
does too (tests/cli/test_fastcli.py). Typer and click cost about 30 ms per start here and half
a second under the lab's emulation; this module imports only the stdlib `commands` needs.
"""

from __future__ import annotations

import os
import sys

from xfrmctl import commands

TYPE_CHECKING = False  # typing costs a few ms per start; mypy still reads the block below
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

# command -> (flags it takes, least and most positional arguments)
_SHAPES: dict[str, tuple[frozenset[str], int, int]] = {
    "up": (frozenset(), 1, 1),
    "down": (frozenset(), 1, 1),
    "rekey": (frozenset({"--ike"}), 1, 1),
    "status": (frozenset({"--json"}), 0, 1),
    "explain": (frozenset({"--json"}), 1, 1),
    "reload": (frozenset(), 0, 0),
    "version": (frozenset(), 0, 0),
}


def _plain_path(value: str) -> bool:
    """A path that typer's `Path(value)` leaves as written (no `//`, `.` or trailing `/`), so
    messages naming it read the same on both paths."""
    parts = value.split("/")
    return value != "" and all(part not in ("", ".") for part in parts[value.startswith("/") :])


def _plain_number(value: str) -> bool:
    """Digits with at most one dot: what float() and click read alike."""
    digits = value.replace(".", "", 1)
    return digits.isascii() and digits.isdigit()


def _globals(argv: list[str], environ: Mapping[str, str]) -> tuple[dict[str, str], int] | None:
    """The global options before the command and where the command starts; None to defer."""
    given: dict[str, str] = {}
    at = 0
    while at < len(argv) and argv[at].startswith("--"):
        key, equals, value = argv[at].partition("=")
        if not equals:
            if at + 1 >= len(argv):
                return None
            value = argv[at + 1]
            at += 1
        at += 1
        if key not in ("--socket", "--timeout") or key in given or value[:1] in ("", "-"):
            return None
        given[key] = value
    socket = given.get("--socket") or environ.get("XFRMCTL_SOCKET") or commands.DEFAULT_SOCKET
    timeout = given.get("--timeout", str(commands.DEFAULT_TIMEOUT))
    if not _plain_path(socket) or not _plain_number(timeout):
        return None
    return {"socket": socket, "timeout": timeout}, at


def parse(
    argv: list[str], environ: Mapping[str, str]
) -> tuple[commands.Session, str, list[str], set[str]] | None:
    """(session, command, positional arguments, flags) of a command line this module runs,
    or None for one typer must see."""
    if any(key.startswith("_") and key.endswith("_COMPLETE") for key in environ):
        return None  # a shell asking typer for completions
    found = _globals(argv, environ)
    if found is None or found[1] >= len(argv) or argv[found[1]] not in _SHAPES:
        return None
    options, at = found
    command, rest = argv[at], argv[at + 1 :]
    allowed, least, most = _SHAPES[command]
    flags = {arg for arg in rest if arg.startswith("-")}
    positional = [arg for arg in rest if not arg.startswith("-")]
    if not flags <= allowed or len(flags) != len(rest) - len(positional):
        return None  # an unknown or repeated option: typer says what is wrong
    if not least <= len(positional) <= most:
        return None
    session = commands.Session(options["socket"], float(options["timeout"]))
    return session, command, positional, flags


def _runner(command: str, args: list[str], flags: set[str]) -> Callable[[commands.Session], None]:
    name = args[0] if args else None
    table: dict[str, Callable[[commands.Session], None]] = {
        "up": lambda s: commands.up(s, args[0]),
        "down": lambda s: commands.down(s, args[0]),
        "rekey": lambda s: commands.rekey(s, args[0], "--ike" in flags),
        "status": lambda s: commands.status(s, name, "--json" in flags),
        "explain": lambda s: commands.explain(s, args[0], "--json" in flags),
        "reload": commands.reload,
        "version": commands.version,
    }
    return table[command]


def run(argv: list[str], environ: Mapping[str, str]) -> int | None:
    """Run a command line this module handles and return its exit status; None to defer.

    Ctrl-C and a closed stdout end as they do under click: 130 silently, and 1.
    """
    parsed = parse(argv, environ)
    if parsed is None:
        return None
    session, command, args, flags = parsed
    try:
        _runner(command, args, flags)(session)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else commands.EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Nothing more can reach the reader; keep the interpreter's final flush quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return commands.EXIT_FAILED
    return commands.EXIT_OK


def main() -> None:
    """The console script: the fast path when it applies, typer otherwise."""
    argv = sys.argv[1:]
    code = run(argv, os.environ)
    if code is None:
        from xfrmctl.cli import main as typer_main  # typer: ~30 ms, only when needed

        typer_main(argv)
        return
    raise SystemExit(code)


if __name__ == "__main__":
    main()
