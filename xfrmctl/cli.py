"""The `xfrmctl` command line.

Start-up must stay fast (`xfrmctl --help` well under 0.3 s): this module imports neither
pyroute2, pydantic nor the crypto stack; commands import what they need inside their bodies.
"""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from xfrmctl import __version__
from xfrmctl.client import ClientError, ControlClient, RemoteError
from xfrmctl.config.units import format_duration

DEFAULT_CONFIG = Path("/etc/xfrmctl/xfrmctl.yaml")
DEFAULT_SOCKET = Path("/run/xfrmctl/xfrmctl.sock")

# Exit codes, documented in docs/control-protocol.md and in --help.
EXIT_OK = 0
EXIT_FAILED = 1  # the operation ran and failed (negotiation, authentication, ...)
EXIT_USAGE = 2  # bad command line or configuration
EXIT_NO_DAEMON = 3  # the daemon is not running or its socket is not reachable

EXIT_CODES = """\b
Exit status:
  0  success
  1  the operation ran and failed (e.g. NO_PROPOSAL_CHOSEN, AUTHENTICATION_FAILED)
  2  bad command line or invalid configuration
  3  the daemon is not running, or permission denied on its socket"""

ENVIRONMENT = """\b
Environment:
  XFRMCTL_SOCKET  control socket (default /run/xfrmctl/xfrmctl.sock)
  XFRMCTL_CONFIG  configuration file (default /etc/xfrmctl/xfrmctl.yaml)"""


def _epilog(examples: str) -> str:
    return f"\b\nExamples:\n{examples}\n\n{EXIT_CODES}"


app = typer.Typer(
    name="xfrmctl",
    help="IKEv2 keying daemon and CLI: negotiates IPsec SAs and installs them into the "
    "Linux kernel's XFRM layer. `xfrmctl daemon` runs the daemon; the other commands talk "
    "to it over its control socket (root only).",
    epilog=f"{ENVIRONMENT}\n\n{EXIT_CODES}",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion, used by the Ansible role and packagers
)
config_app = typer.Typer(
    help="Inspect the configuration format.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(config_app, name="config")


class LogLevel(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


class _State:
    socket: Path = DEFAULT_SOCKET
    socket_given: bool = False
    timeout: float = 120.0


state = _State()

ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config",
        "-c",
        envvar="XFRMCTL_CONFIG",
        help="Configuration file (its settings.include files are read too).",
    ),
]


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"xfrmctl: {message}", err=True)
    raise typer.Exit(code)


def _split_name(text: str) -> tuple[str, str | None]:
    name, slash, child = text.partition("/")
    if not name or (slash and not child) or "/" in child:
        _fail(f"{text!r} is not CONNECTION or CONNECTION/CHILD", EXIT_USAGE)
    return name, child or None


def _print_event(event: dict[str, Any]) -> None:
    message = event.get("message") or event.get("event", "")
    typer.echo(f"  {message}")


def _call(command: str, args: dict[str, Any] | None = None, verbose: bool = False) -> Any:
    client = ControlClient(state.socket, timeout=state.timeout)
    try:
        return client.call(command, args, on_event=_print_event if verbose else None)
    except RemoteError as exc:
        what = command + (f" {args['name']}" if args and args.get("name") else "")
        if args and args.get("child"):
            what += f"/{args['child']}"
        typer.echo(f"xfrmctl: {what} failed: {exc.code}: {exc.message}", err=True)
        _print_details(exc.details)
        raise typer.Exit(EXIT_FAILED) from None
    except ClientError as exc:
        _fail(exc.message, exc.exit_code)


def _print_details(details: dict[str, Any]) -> None:
    """The daemon's details; with a diagnosis, that instead of the raw offers it explains."""
    diagnosis = details.get("diagnosis")
    if isinstance(diagnosis, list) and diagnosis:
        for line in diagnosis:
            typer.echo(str(line), err=True)
        return
    for key, value in details.items():
        shown = value if isinstance(value, str) else json.dumps(value)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            shown = "\n    ".join(["", *value]) if len(value) > 1 else ", ".join(value)
        typer.echo(f"  {key}: {shown}", err=True)


def _ago(seconds: float | None) -> str:
    return "" if seconds is None else format_duration(seconds)


def _since(stamp: str | None) -> str:
    if not stamp:
        return ""
    from datetime import UTC, datetime

    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    age = (datetime.now(UTC) - when).total_seconds()
    return f"{format_duration(age)} ago"


def _child_lines(child: dict[str, Any]) -> list[str]:
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


def _ike_lines(sa: dict[str, Any]) -> list[str]:
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


def render_status(report: dict[str, Any]) -> str:
    """The human view of a status report (swanctl --list-sas style)."""
    lines: list[str] = []
    for sa in report.get("ike_sas") or []:
        lines.extend(_ike_lines(sa))
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


@app.callback()
def _global(
    socket: Annotated[
        Path | None,
        typer.Option(
            "--socket",
            envvar="XFRMCTL_SOCKET",
            help="Control socket of the daemon to talk to.",
            show_default=str(DEFAULT_SOCKET),
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for each daemon message.")
    ] = 120.0,
) -> None:
    state.socket = socket or DEFAULT_SOCKET
    state.socket_given = socket is not None
    state.timeout = timeout


@app.command(
    epilog=_epilog(
        "  xfrmctl up site-b          # IKE SA and every child\n"
        "  xfrmctl up site-b/lan      # only the child 'lan'"
    )
)
def up(
    name: Annotated[str, typer.Argument(metavar="NAME[/CHILD]", help="Connection[/child]")],
) -> None:
    """Initiate a connection and wait until it is established or has failed.

    Progress is printed as the exchanges happen; on success the negotiated algorithms,
    SPIs and traffic selectors are shown. On failure the reason is printed in words,
    with the daemon's details (e.g. both sides' proposals for NO_PROPOSAL_CHOSEN).
    """
    conn, child = _split_name(name)
    typer.echo(f"initiating {name}")
    result = _call("up", {"name": conn, "child": child}, verbose=True)
    sa = result.get("ike_sa")
    if isinstance(sa, dict):
        typer.echo("\n".join(_ike_lines(sa)))
    else:
        typer.echo(f"{name} is up")


@app.command(epilog=_epilog("  xfrmctl down site-b\n  xfrmctl down site-b/lan"))
def down(
    name: Annotated[str, typer.Argument(metavar="NAME[/CHILD]", help="Connection[/child]")],
) -> None:
    """Delete a connection's SAs (or one child's) and wait until the kernel is clean."""
    conn, child = _split_name(name)
    result = _call("down", {"name": conn, "child": child}, verbose=True)
    ike, children = result.get("deleted_ike_sas", 0), result.get("deleted_child_sas", 0)
    typer.echo(f"{name}: deleted {ike} IKE SA(s) and {children} Child SA(s)")


@app.command(
    epilog=_epilog(
        "  xfrmctl rekey site-b\n  xfrmctl rekey site-b/lan\n  xfrmctl rekey --ike site-b"
    )
)
def rekey(
    name: Annotated[str, typer.Argument(metavar="NAME[/CHILD]", help="Connection[/child]")],
    ike: Annotated[bool, typer.Option("--ike", help="Rekey the IKE SA, not the Child SAs")] = False,
) -> None:
    """Start rekeying a connection's Child SAs (or one child's, or with --ike its IKE SA).

    Returns once the exchanges are started, as `swanctl --rekey`; `xfrmctl status` shows the
    new SPIs, and `xfrmctl explain NAME` a failure.
    """
    conn, child = _split_name(name)
    if ike and child is not None:
        _fail(f"{name}: --ike rekeys the whole IKE SA; name the connection only", EXIT_USAGE)
    result = _call("rekey", {"name": conn, "child": child, "ike": ike})
    ikes, children = result.get("rekeyed_ike_sas", 0), result.get("rekeyed_child_sas", 0)
    what = f"{ikes} IKE SA(s)" if ike else f"{children} Child SA(s)"
    typer.echo(f"{name}: rekeying {what}")


@app.command(
    epilog=_epilog(
        "  xfrmctl status\n  xfrmctl status site-b\n"
        "  xfrmctl status --json | jq '.ike_sas[].children[].bytes_in'"
    )
)
def status(
    name: Annotated[str | None, typer.Argument(help="Only this connection")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Stable JSON output")] = False,
) -> None:
    """Show IKE SAs, their Child SAs, and configured connections that are not up.

    --json prints the daemon's status report unchanged; its fields are documented in
    docs/control-protocol.md and only ever gain new keys within one schema_version.
    """
    report = _call("status", {"name": name})
    if json_out:
        typer.echo(json.dumps(report, indent=2))
    else:
        typer.echo(render_status(report))


@app.command(
    epilog=_epilog(
        "  xfrmctl explain site-b\n  xfrmctl explain site-b --json | jq '.failure.suggestions'"
    )
)
def explain(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Connection")],
    json_out: Annotated[bool, typer.Option("--json", help="JSON output")] = False,
) -> None:
    """Why the last negotiation of a connection failed, and the change that would fix it.

    Shows both sides' offers side by side (proposals, traffic selectors, identities, auth
    methods, NAT), marks the mismatch with '!', says what the protocol did not reveal, and
    suggests configuration changes. The daemon keeps one failure per connection, cleared
    when the connection comes up.
    """
    result = _call("explain", {"name": name})
    if json_out:
        typer.echo(json.dumps(result, indent=2))
    else:
        typer.echo("\n".join(str(line) for line in result.get("text") or []))


SECRETS_FLAG = "--i-know-this-writes-secrets"


@app.command(
    epilog=_epilog(
        f"  xfrmctl keys --wireshark /root/ipsec-keys {SECRETS_FLAG}\n"
        "  WIRESHARK_CONFIG_DIR=/root/ipsec-keys tshark -r capture.pcap \\\n"
        "      -o esp.enable_encryption_decode:TRUE -V"
    )
)
def keys(
    wireshark: Annotated[
        Path,
        typer.Option(
            "--wireshark",
            metavar="DIR",
            help="Existing directory, not world-writable, to write esp_sa and "
            "ikev2_decryption_table into (mode 0600; earlier ones are replaced).",
        ),
    ],
    secrets_ok: Annotated[
        bool,
        typer.Option(
            SECRETS_FLAG,
            help="Required: confirms that whoever reads the files can decrypt the traffic.",
        ),
    ] = False,
) -> None:
    """Write the live SAs' keys as Wireshark key tables, to decrypt a capture (root only).

    Off unless the daemon's configuration has settings.key_export: true, and refused without
    --i-know-this-writes-secrets. One esp_sa line per ESP SA and direction, one
    ikev2_decryption_table line per IKE SA; an SA whose algorithm Wireshark cannot decrypt
    is left out and named. Only live SAs are exported: run it while the tunnel is up.
    """
    if not secrets_ok:
        _fail(
            f"refusing to write secret keys without {SECRETS_FLAG}: whoever reads the files "
            "can decrypt this host's IPsec traffic",
            EXIT_USAGE,
        )
    if os.geteuid() != 0:
        _fail("keys: only root may export keys", EXIT_USAGE)
    from xfrmctl.daemon import keys as keyfiles

    try:
        os.close(keyfiles.open_directory(wireshark))  # refuse before fetching any key
    except keyfiles.KeyFileError as exc:
        _fail(str(exc), EXIT_USAGE)
    result = _call("keys")
    for line in result.get("skipped") or []:
        typer.echo(f"xfrmctl: left out {line}", err=True)
    try:
        tables = keyfiles.check_tables(result.get("tables"))
        paths = keyfiles.write_tables(wireshark, tables, _key_header())
    except keyfiles.KeyFileError as exc:
        _fail(str(exc), EXIT_FAILED)
    esp, ike = (len(tables[p.name]) for p in paths)
    typer.echo(
        f"wrote {paths[0]} ({esp} ESP SAs) and {paths[1]} ({ike} IKE SAs), mode 0600: "
        "they hold secret keys, delete them after use"
    )


def _key_header() -> str:
    from datetime import UTC, datetime

    when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"xfrmctl keys {when}: secret keys of the live SAs; delete this file after use"


@app.command(epilog=_epilog("  xfrmctl check && xfrmctl reload"))
def reload() -> None:
    """Reload the configuration without disturbing unchanged connections.

    An invalid configuration is refused as a whole and the running one stays.
    """
    result = _call("reload")
    for key in ("added", "removed", "changed"):
        if result.get(key):
            typer.echo(f"{key}: {', '.join(result[key])}")
    typer.echo(f"configuration reloaded ({len(result.get('unchanged') or [])} unchanged)")


@app.command(
    epilog=_epilog(
        "  xfrmctl check\n  xfrmctl check --config ./xfrmctl.yaml\n"
        "  XFRMCTL_CONFIG=/srv/ipsec.yaml xfrmctl check"
    )
)
def check(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Validate a configuration file and its includes, reporting every error.

    Each error names the file, the line and the key, e.g.
    `xfrmctl.yaml:12: connections.site-b.children.lan.mode: 'tunel' is not one of
    tunnel, transport`. Secret files are opened to check their permissions.
    """
    from xfrmctl.config import check_config

    loaded, issues = check_config(config)
    for issue in issues:
        typer.echo(str(issue), err=True)
    if loaded is None:
        errors = sum(1 for i in issues if not i.warning)
        _fail(f"{config}: {errors} error(s)", EXIT_USAGE)
    conns = len(loaded.connections)
    typer.echo(f"{config}: OK, {conns} connection(s) in {len(loaded.files)} file(s)")


@config_app.command(
    "schema", epilog=_epilog("  xfrmctl config schema > /etc/xfrmctl/xfrmctl.schema.json")
)
def config_schema() -> None:
    """Print the configuration's JSON Schema (draft 2020-12) for editor completion."""
    from xfrmctl.config import json_schema

    typer.echo(json.dumps(json_schema(), indent=2))


@app.command(
    epilog=_epilog(
        "  xfrmctl daemon\n  xfrmctl daemon --config ./xfrmctl.yaml --socket /tmp/x.sock"
    )
)
def daemon(
    config: ConfigOption = DEFAULT_CONFIG,
    socket: Annotated[
        Path | None,
        typer.Option("--socket", help="Control socket to listen on (default: settings.socket)"),
    ] = None,
    log_level: Annotated[
        LogLevel | None,
        typer.Option(
            "--log-level",
            case_sensitive=False,
            help="Log level (default: settings.log_level). debug also logs every IKE message "
            "decoded, one line per payload, with sizes instead of keys, nonces and AUTH data.",
        ),
    ] = None,
) -> None:
    """Run the IKE daemon in the foreground until SIGTERM."""
    import asyncio

    from xfrmctl.daemon.main import run_daemon

    path = socket or (state.socket if state.socket_given else _configured_socket(config))
    level = log_level.value if log_level else None
    raise typer.Exit(asyncio.run(run_daemon(config, path, log_level=level)))


def _configured_socket(config: Path) -> Path:
    from xfrmctl.config import check_config

    loaded, _ = check_config(config)
    return loaded.settings.socket if loaded is not None else DEFAULT_SOCKET


@app.command()
def version() -> None:
    """Print the version of this CLI and, when reachable, of the running daemon."""
    typer.echo(f"xfrmctl {__version__}")
    try:
        reply = ControlClient(state.socket, timeout=2.0).call("version")
    except ClientError:
        return
    typer.echo(f"daemon {reply.get('version')} (control protocol {reply.get('protocol')})")


def main() -> None:
    os.environ.setdefault("_TYPER_STANDARD_TRACEBACK", "1")
    app()


if __name__ == "__main__":
    main()
