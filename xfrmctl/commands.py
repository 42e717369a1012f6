"""The commands both front ends run: the client commands (`up`, `down`, `rekey`, `status`,
`explain`, `reload`, `version`: one request to the daemon, its reply printed) and `daemon`.

Contract: the typer CLI (`xfrmctl.cli`) and the stdlib fast path (`xfrmctl.fastcli`) only
parse the command line and then call these, so they print the same and exit the same: a
command returns for exit 0 or raises SystemExit with a code of docs/control-protocol.md.
Every `xfrmctl up` pays for what this module imports at run time (about 15 times more under the
lab's emulation): stdlib only, and not even typing, pathlib, json (`--json` output aside) or
datetime; nor `__future__`, which `from __future__ import annotations` imports at run time
(so the client's modules quote annotations that name typing-only types).
"""

import os
import sys
import time

from xfrmctl import __version__, lightjson
from xfrmctl.client import ClientError, ControlClient, RemoteError

TYPE_CHECKING = False  # typing costs a few ms per start; mypy still reads the block below
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, NoReturn

DEFAULT_CONFIG = "/etc/xfrmctl/xfrmctl.yaml"
DEFAULT_SOCKET = "/run/xfrmctl/xfrmctl.sock"
DEFAULT_TIMEOUT = 120.0

# Exit codes, documented in docs/control-protocol.md and in --help.
EXIT_OK = 0
EXIT_FAILED = 1  # the operation ran and failed (negotiation, authentication, ...)
EXIT_USAGE = 2  # bad command line or configuration
EXIT_NO_DAEMON = 3  # the daemon is not running or its socket is not reachable


def echo(text: str = "", err: bool = False) -> None:
    """One line to stdout (or stderr), flushed at once as click's echo does: progress lines
    of a long `up` must show while it runs."""
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n")
    stream.flush()


def fail(message: str, code: int) -> "NoReturn":
    echo(f"xfrmctl: {message}", err=True)
    raise SystemExit(code)


def split_name(text: str) -> tuple[str, str | None]:
    name, slash, child = text.partition("/")
    if not name or (slash and not child) or "/" in child:
        fail(f"{text!r} is not CONNECTION or CONNECTION/CHILD", EXIT_USAGE)
    return name, child or None


class Session:
    """The daemon to talk to: the global `--socket` and `--timeout` of every command."""

    def __init__(
        self, socket: str | os.PathLike[str] = DEFAULT_SOCKET, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.socket = socket
        self.timeout = timeout

    def call(
        self, command: str, args: "dict[str, Any] | None" = None, verbose: bool = False
    ) -> "Any":
        """The command's result; a failure is printed and exits 1 (or 3: no daemon)."""
        client = ControlClient(self.socket, timeout=self.timeout)
        try:
            return client.call(command, args, on_event=_print_event if verbose else None)
        except RemoteError as exc:
            what = command + (f" {args['name']}" if args and args.get("name") else "")
            if args and args.get("child"):
                what += f"/{args['child']}"
            echo(f"xfrmctl: {what} failed: {exc.code}: {exc.message}", err=True)
            print_details(exc.details)
            raise SystemExit(EXIT_FAILED) from None
        except ClientError as exc:
            fail(exc.message, exc.exit_code)


def _print_event(event: "dict[str, Any]") -> None:
    message = event.get("message") or event.get("event", "")
    echo(f"  {message}")


def print_details(details: "dict[str, Any]") -> None:
    """The daemon's details; with a diagnosis, that instead of the raw offers it explains."""
    diagnosis = details.get("diagnosis")
    if isinstance(diagnosis, list) and diagnosis:
        for line in diagnosis:
            echo(str(line), err=True)
        return
    for key, value in details.items():
        shown = value if isinstance(value, str) else lightjson.dumps(value)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            shown = "\n    ".join(["", *value]) if len(value) > 1 else ", ".join(value)
        echo(f"  {key}: {shown}", err=True)


# ---------------------------------------------------------------------------- the commands


def up(session: Session, name: str) -> None:
    conn, child = split_name(name)
    echo(f"initiating {name}")
    result = session.call("up", {"name": conn, "child": child}, verbose=True)
    sa = result.get("ike_sa")
    if isinstance(sa, dict):
        echo("\n".join(ike_lines(sa)))
    else:
        echo(f"{name} is up")


def down(session: Session, name: str) -> None:
    conn, child = split_name(name)
    result = session.call("down", {"name": conn, "child": child}, verbose=True)
    ike, children = result.get("deleted_ike_sas", 0), result.get("deleted_child_sas", 0)
    echo(f"{name}: deleted {ike} IKE SA(s) and {children} Child SA(s)")


def rekey(session: Session, name: str, ike: bool) -> None:
    conn, child = split_name(name)
    if ike and child is not None:
        fail(f"{name}: --ike rekeys the whole IKE SA; name the connection only", EXIT_USAGE)
    result = session.call("rekey", {"name": conn, "child": child, "ike": ike})
    ikes, children = result.get("rekeyed_ike_sas", 0), result.get("rekeyed_child_sas", 0)
    what = f"{ikes} IKE SA(s)" if ike else f"{children} Child SA(s)"
    echo(f"{name}: rekeying {what}")


def status(session: Session, name: str | None, json_out: bool) -> None:
    report = session.call("status", {"name": name})
    echo(_indented(report) if json_out else render_status(report))


def explain(session: Session, name: str, json_out: bool) -> None:
    result = session.call("explain", {"name": name})
    if json_out:
        echo(_indented(result))
    else:
        echo("\n".join(str(line) for line in result.get("text") or []))


def _indented(value: "Any") -> str:
    import json  # only for --json: re and enum come with it

    return json.dumps(value, indent=2)


def reload(session: Session) -> None:
    result = session.call("reload")
    for key in ("added", "removed", "changed"):
        if result.get(key):
            echo(f"{key}: {', '.join(result[key])}")
    echo(f"configuration reloaded ({len(result.get('unchanged') or [])} unchanged)")


def version(session: Session) -> None:
    echo(f"xfrmctl {__version__}")
    try:
        reply = ControlClient(session.socket, timeout=2.0).call("version")
    except ClientError:
        return
    echo(f"daemon {reply.get('version')} (control protocol {reply.get('protocol')})")


def without_pydantic_plugins() -> None:
    """Before the configuration models are built: pydantic looks for plugins in every
    installed distribution's entry points at its first model (~18 M instructions per `check`
    or daemon start in the lab's venv); xfrmctl uses none. An operator's own
    PYDANTIC_DISABLE_PLUGINS setting is kept."""
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")


def check(config: str | os.PathLike[str]) -> None:
    """Validate a configuration and its includes: every issue on stderr, exit 2 on errors."""
    from pathlib import Path  # pydantic and pathlib: only for `check` and `daemon`

    without_pydantic_plugins()

    from xfrmctl.config import check_config

    loaded, issues = check_config(Path(config))
    for issue in issues:
        echo(str(issue), err=True)
    if loaded is None:
        errors = sum(1 for i in issues if not i.warning)
        fail(f"{config}: {errors} error(s)", EXIT_USAGE)
    conns = len(loaded.connections)
    echo(f"{config}: OK, {conns} connection(s) in {len(loaded.files)} file(s)")


def daemon(
    config: str | os.PathLike[str], socket: str | os.PathLike[str] | None, log_level: str | None
) -> "NoReturn":
    """Run the daemon until SIGTERM and exit with its status; without `socket` it listens on
    the configuration's settings.socket."""
    import asyncio  # the daemon's own imports: paid by `xfrmctl daemon` only
    from pathlib import Path

    without_pydantic_plugins()
    from xfrmctl.daemon.main import run_daemon

    path = Path(socket) if socket is not None else _configured_socket(Path(config))
    raise SystemExit(asyncio.run(run_daemon(Path(config), path, log_level=log_level)))


def _configured_socket(config: "Path") -> "Path":
    from pathlib import Path  # only for `xfrmctl daemon`, as below

    from xfrmctl.config import check_config  # pydantic: only for `xfrmctl daemon`

    loaded, _ = check_config(config)
    return loaded.settings.socket if loaded is not None else Path(DEFAULT_SOCKET)


# ------------------------------------------------------------------------ the status view


def format_duration(seconds: float) -> str:
    """Short human form (`1h30m`, `45s`) of lifetimes and ages in `up` and `status` output."""
    total = int(seconds)
    if total <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size:
            parts.append(f"{total // size}{unit}")
            total %= size
    return "".join(parts[:2])


def _ago(seconds: float | None) -> str:
    return "" if seconds is None else format_duration(seconds)


def _since(stamp: str | None) -> str:
    if not stamp:
        return ""
    now = time.time()
    age = _age(stamp, now)
    if age is None:
        age = _age_by_datetime(stamp, now)
    return stamp if age is None else f"{format_duration(age)} ago"


_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _age(stamp: str, now: float) -> float | None:
    """Seconds from `stamp` to `now` for the daemon's own form of UTC times (what pydantic
    writes: `2026-12-06T10:14:18Z`, `...18.400000Z`); None for any other form. Without
    datetime, which costs ~7 M instructions to import (every `up` shows an IKE SA's age)."""
    head, tail = stamp[:19], stamp[19:]
    fraction = tail[1:-1] if tail[:1] == "." else ""
    if tail != (f".{fraction}Z" if fraction else "Z") or len(fraction) not in (0, 6):
        return None
    fields = (head[0:4], head[5:7], head[8:10], head[11:13], head[14:16], head[17:19])
    if head[4::3] != "--T::" or not all(f.isascii() and f.isdigit() for f in fields):
        return None
    if fraction and not (fraction.isascii() and fraction.isdigit()):
        return None
    year, month, day, hour, minute, second = (int(f) for f in fields)
    if not _valid_date(year, month, day) or hour > 23 or minute > 59 or second > 59:
        return None
    seconds = _days_since_epoch(year, month, day) * 86400 + hour * 3600 + minute * 60 + second
    return now - (seconds + int(fraction or 0) / 1e6)


def _valid_date(year: int, month: int, day: int) -> bool:
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return (
        year >= 1
        and 1 <= month <= 12
        and 1 <= day <= _MONTH_DAYS[month - 1] + (leap and month == 2)
    )


def _days_since_epoch(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's days_from_civil)."""
    year -= month <= 2
    era = year // 400
    of_era = year - era * 400
    of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    return era * 146097 + of_era * 365 + of_era // 4 - of_era // 100 + of_year - 719468


def _age_by_datetime(stamp: str, now: float) -> float | None:
    """Seconds from any ISO 8601 time to `now`; None if it is not one."""
    from datetime import UTC, datetime

    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (datetime.fromtimestamp(now, UTC) - when).total_seconds()


def _child_lines(child: "dict[str, Any]") -> list[str]:
    uid = f"{{{child['unique_id']}}}" if child.get("unique_id") is not None else ""
    encap = ", UDP-encapsulated" if child.get("encap") else ""
    lines = [
        f"  {child.get('name')}{uid}: {child.get('state')}, {child.get('mode')}, "
        f"{str(child.get('protocol', '')).upper()}{encap}, "
        f"SPIs {child.get('spi_in')}_i {child.get('spi_out')}_o, {child.get('proposal')}",
        f"    {' '.join(child.get('local_ts') or [])} === {' '.join(child.get('remote_ts') or [])}",
    ]
    traffic = (
        f"    in {child.get('bytes_in', 0)} bytes / {child.get('packets_in', 0)} packets, "
        f"out {child.get('bytes_out', 0)} bytes / {child.get('packets_out', 0)} packets"
    )
    if child.get("rekey_in") is not None:
        traffic += f", rekey in {_ago(child['rekey_in'])}"
    lines.append(traffic)
    return lines


def ike_lines(sa: "dict[str, Any]") -> list[str]:
    uid = f"[{sa['unique_id']}]" if sa.get("unique_id") is not None else ""
    lines = [
        f"{sa.get('name')}{uid}: {sa.get('state')}, "
        f"{sa.get('local_addr')}[{sa.get('local_id')}]...{sa.get('remote_addr')}"
        f"[{sa.get('remote_id')}]"
    ]
    facts = [str(sa.get("proposal"))]
    if sa.get("established_at"):
        facts.append(f"established {_since(sa['established_at'])}")
    if sa.get("rekey_in") is not None:
        facts.append(f"rekey in {_ago(sa['rekey_in'])}")
    if sa.get("nat_local") or sa.get("nat_remote"):
        facts.append("behind NAT" if sa.get("nat_local") else "peer behind NAT")
    lines.append("  " + ", ".join(facts))
    for child in sa.get("children") or []:
        lines.extend(_child_lines(child))
    return lines


def render_status(report: "dict[str, Any]") -> str:
    """The human view of a status report (swanctl --list-sas style)."""
    lines: list[str] = []
    for sa in report.get("ike_sas") or []:
        lines.extend(ike_lines(sa))
    idle = [c for c in report.get("connections") or [] if not c.get("active")]
    if idle:
        if lines:
            lines.append("")
        lines.append("Configured, not up:")
        for conn in idle:
            children = ", ".join(
                f"{c.get('name')} (start_action {c.get('start_action')})"
                for c in conn.get("children") or []
            )
            peers = ", ".join(conn.get("remote_addrs") or []) or "%any"
            lines.append(f"  {conn.get('name')}: to {peers}; children: {children or 'none'}")
    if not lines:
        lines.append("No IKE SAs and no connections configured.")
    if report.get("drift_found"):
        kinds = ", ".join(
            f"{k} {n}" for k, n in (report.get("drift") or {}).get("found", {}).items()
        )
        lines.append(
            f"Kernel drift: {report['drift_found']} found ({kinds}), "
            f"{report.get('drift_repaired', 0)} repaired"
        )
    return "\n".join(lines)
