"""The `xfrmctl` command line (typer): help, completion, usage errors and every command.

The console entry point is `xfrmctl.fastcli`, which runs the common client commands without
importing this module and hands every other command line here. Both call the same bodies in
`xfrmctl.commands`, so they print and exit the same (tests/cli/test_fastcli.py runs each
command line through both). Start-up must stay fast (`xfrmctl --help` well under 0.3 s): this
module imports neither pyroute2, pydantic nor the crypto stack; commands import what they need
inside their bodies.
"""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from xfrmctl import commands
from xfrmctl.commands import EXIT_FAILED, EXIT_USAGE, echo, fail, render_status

__all__ = ["app", "main", "render_status"]

DEFAULT_CONFIG = Path(commands.DEFAULT_CONFIG)
DEFAULT_SOCKET = Path(commands.DEFAULT_SOCKET)

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


class _State(commands.Session):
    """The global options, as the callback parsed them for the command that follows."""

    socket_given: bool = False


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
    commands.up(state, name)


@app.command(epilog=_epilog("  xfrmctl down site-b\n  xfrmctl down site-b/lan"))
def down(
    name: Annotated[str, typer.Argument(metavar="NAME[/CHILD]", help="Connection[/child]")],
) -> None:
    """Delete a connection's SAs (or one child's) and wait until the kernel is clean."""
    commands.down(state, name)


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
    commands.rekey(state, name, ike)


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
    commands.status(state, name, json_out)


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
    commands.explain(state, name, json_out)


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
        fail(
            f"refusing to write secret keys without {SECRETS_FLAG}: whoever reads the files "
            "can decrypt this host's IPsec traffic",
            EXIT_USAGE,
        )
    if os.geteuid() != 0:
        fail("keys: only root may export keys", EXIT_USAGE)
    from xfrmctl.daemon import keys as keyfiles

    try:
        os.close(keyfiles.open_directory(wireshark))  # refuse before fetching any key
    except keyfiles.KeyFileError as exc:
        fail(str(exc), EXIT_USAGE)
    result = state.call("keys")
    for line in result.get("skipped") or []:
        echo(f"xfrmctl: left out {line}", err=True)
    try:
        tables = keyfiles.check_tables(result.get("tables"))
        paths = keyfiles.write_tables(wireshark, tables, _key_header())
    except keyfiles.KeyFileError as exc:
        fail(str(exc), EXIT_FAILED)
    esp, ike = (len(tables[p.name]) for p in paths)
    echo(
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
    commands.reload(state)


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
    commands.check(config)


@config_app.command(
    "schema", epilog=_epilog("  xfrmctl config schema > /etc/xfrmctl/xfrmctl.schema.json")
)
def config_schema() -> None:
    """Print the configuration's JSON Schema (draft 2020-12) for editor completion."""
    from xfrmctl.config import json_schema

    echo(json.dumps(json_schema(), indent=2))


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
    given = socket or (state.socket if state.socket_given else None)
    commands.daemon(config, given, log_level.value if log_level else None)


@app.command()
def version() -> None:
    """Print the version of this CLI and, when reachable, of the running daemon."""
    commands.version(state)


def main(args: list[str] | None = None) -> None:
    """Run the typer app on `args` (default: sys.argv[1:]); exits the process."""
    os.environ.setdefault("_TYPER_STANDARD_TRACEBACK", "1")
    app(args=args)


if __name__ == "__main__":
    main()
