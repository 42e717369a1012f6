"""The `xfrmctl` console entry point: the common commands without typer.

Contract: `main()` runs exactly these command lines itself, and hands every other one (help,
completion, usage errors, unknown, short or repeated options, other commands, values typer
would rewrite) unchanged to the typer app in `xfrmctl.cli`:

    xfrmctl [--socket PATH] [--timeout SECONDS] up|down NAME[/CHILD]
                                                rekey [--ike] NAME[/CHILD]
                                                status [NAME] [--json]
                                                explain NAME [--json]
                                                reload | version
                                                check [--config PATH]
                                                daemon [--config PATH] [--socket PATH]
                                                       [--log-level debug|info|warning|error]

Both run the same bodies (`xfrmctl.commands`), so what one prints and exits with the other
does too (tests/cli/test_fastcli.py). Typer and click cost about 30 ms per start here and half
a second under the lab's emulation; this module imports only the stdlib `commands` needs.
"""

import os
import sys

from xfrmctl import commands

TYPE_CHECKING = False  # typing costs a few ms per start; mypy still reads the block below
if TYPE_CHECKING:
    from collections.abc import Mapping

# command -> (flags, options that take a value, least and most positional arguments)
_SHAPES: dict[str, tuple[frozenset[str], frozenset[str], int, int]] = {
    "up": (frozenset(), frozenset(), 1, 1),
    "down": (frozenset(), frozenset(), 1, 1),
    "rekey": (frozenset({"--ike"}), frozenset(), 1, 1),
    "status": (frozenset({"--json"}), frozenset(), 0, 1),
    "explain": (frozenset({"--json"}), frozenset(), 1, 1),
    "reload": (frozenset(), frozenset(), 0, 0),
    "version": (frozenset(), frozenset(), 0, 0),
    "check": (frozenset(), frozenset({"--config"}), 0, 0),
    "daemon": (frozenset(), frozenset({"--config", "--socket", "--log-level"}), 0, 0),
}
_GLOBALS = frozenset({"--socket", "--timeout"})
_LOG_LEVELS = ("debug", "info", "warning", "error")


class Invocation:
    """A command line the fast path runs: the command, its positional arguments and options
    (a flag maps to ""), with the global options and the environment resolved as typer does."""

    def __init__(
        self,
        command: str,
        args: list[str],
        options: dict[str, str],
        globals_: dict[str, str],
        environ: "Mapping[str, str]",
    ) -> None:
        self.command, self.args, self.options = command, args, options
        # None unless given by option or by variable (as typer tells them from the default)
        self.socket = globals_.get("--socket") or environ.get("XFRMCTL_SOCKET")
        self.timeout = globals_.get("--timeout", str(commands.DEFAULT_TIMEOUT))
        config = options.get("--config") or environ.get("XFRMCTL_CONFIG")
        self.config = config or commands.DEFAULT_CONFIG

    def plain(self) -> bool:
        """Values typer reads the same: paths it leaves as written, a plain number, a log
        level in lower case."""
        sockets = [self.socket or commands.DEFAULT_SOCKET, self.options.get("--socket", "/x")]
        return (
            all(_plain_path(p) for p in [*sockets, self.config])
            and _plain_number(self.timeout)
            and self.options.get("--log-level", "info") in _LOG_LEVELS
        )

    def session(self) -> commands.Session:
        return commands.Session(self.socket or commands.DEFAULT_SOCKET, float(self.timeout))


def _plain_path(value: str) -> bool:
    """A path that typer's `Path(value)` leaves as written (no `//`, `.` or trailing `/`), so
    messages naming it read the same on both paths."""
    parts = value.split("/")
    return value != "" and all(part not in ("", ".") for part in parts[value.startswith("/") :])


def _plain_number(value: str) -> bool:
    """Digits with at most one dot: what float() and click read alike."""
    digits = value.replace(".", "", 1)
    return digits.isascii() and digits.isdigit()


def _option(
    tokens: list[str], at: int, flags: frozenset[str], valued: frozenset[str]
) -> tuple[str, str, int] | None:
    """The option at `at` as (name, value, where the next token is); None to defer."""
    key, equals, value = tokens[at].partition("=")
    if key in flags and not equals:
        return key, "", at + 1
    if key not in valued:
        return None
    if not equals:
        if at + 1 >= len(tokens):
            return None
        value, at = tokens[at + 1], at + 1
    return (key, value, at + 1) if value[:1] not in ("", "-") else None


def _scan(
    tokens: list[str], at: int, flags: frozenset[str], valued: frozenset[str], stop: bool
) -> tuple[dict[str, str], list[str], int] | None:
    """Options and positional arguments from `at` on (up to the first positional one when
    `stop`); None on anything unknown or repeated, for typer to explain."""
    options: dict[str, str] = {}
    positional: list[str] = []
    while at < len(tokens):
        if not tokens[at].startswith("-"):
            if stop:
                break
            positional.append(tokens[at])
            at += 1
            continue
        found = _option(tokens, at, flags, valued)
        if found is None or found[0] in options:
            return None
        options[found[0]], at = found[1], found[2]
    return options, positional, at


def parse(argv: list[str], environ: "Mapping[str, str]") -> Invocation | None:
    """The command line as the fast path runs it, or None for one typer must see."""
    if any(key.startswith("_") and key.endswith("_COMPLETE") for key in environ):
        return None  # a shell asking typer for completions
    head = _scan(argv, 0, frozenset(), _GLOBALS, stop=True)
    if head is None or head[2] >= len(argv) or argv[head[2]] not in _SHAPES:
        return None
    globals_, _, at = head
    flags, valued, least, most = _SHAPES[argv[at]]
    rest = _scan(argv, at + 1, flags, valued, stop=False)
    if rest is None or not least <= len(rest[1]) <= most:
        return None
    call = Invocation(argv[at], rest[1], rest[0], globals_, environ)
    return call if call.plain() else None


def _execute(call: Invocation) -> None:
    name = call.args[0] if call.args else None
    session, flagged = call.session(), call.options.__contains__
    match call.command:
        case "up":
            commands.up(session, call.args[0])
        case "down":
            commands.down(session, call.args[0])
        case "rekey":
            commands.rekey(session, call.args[0], flagged("--ike"))
        case "status":
            commands.status(session, name, flagged("--json"))
        case "explain":
            commands.explain(session, call.args[0], flagged("--json"))
        case "reload":
            commands.reload(session)
        case "version":
            commands.version(session)
        case "check":
            commands.check(call.config)
        case "daemon":
            socket = call.options.get("--socket") or call.socket
            commands.daemon(call.config, socket, call.options.get("--log-level"))


def run(argv: list[str], environ: "Mapping[str, str]") -> int | None:
    """Run a command line this module handles and return its exit status; None to defer.

    Ctrl-C and a closed stdout end as they do under click: 130 silently, and 1.
    """
    call = parse(argv, environ)
    if call is None:
        return None
    try:
        _execute(call)
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
