"""The `xfrmctl` command line.

Start-up must stay fast (`xfrmctl --help` well under 0.3 s): this module imports neither
pyroute2 nor the crypto stack; commands import what they need inside their bodies.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from xfrmctl import __version__

DEFAULT_CONFIG = Path("/etc/xfrmctl/xfrmctl.yaml")
DEFAULT_SOCKET = Path("/run/xfrmctl/xfrmctl.sock")

# Exit codes, documented in the README.
EXIT_OK = 0
EXIT_FAILED = 1  # the operation ran and failed (negotiation, authentication, ...)
EXIT_USAGE = 2  # bad command line or configuration
EXIT_NO_DAEMON = 3  # the daemon is not running or its socket is not reachable
EXIT_NOT_IMPLEMENTED = 4

app = typer.Typer(
    name="xfrmctl",
    help="IKEv2 keying daemon and CLI: negotiates IPsec SAs and installs them into the "
    "Linux kernel's XFRM layer.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect the configuration format.", no_args_is_help=True)
app.add_typer(config_app, name="config")


class _State:
    socket: Path = DEFAULT_SOCKET


state = _State()


def _not_implemented(what: str) -> NoReturn:
    typer.echo(f"xfrmctl: {what} is not implemented yet", err=True)
    raise typer.Exit(EXIT_NOT_IMPLEMENTED)


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
) -> None:
    state.socket = socket or DEFAULT_SOCKET


@app.command()
def up(name: Annotated[str, typer.Argument(help="CONNECTION or CONNECTION/CHILD")]) -> None:
    """Initiate a connection and wait until it is established or has failed."""
    _not_implemented("up")


@app.command()
def down(name: Annotated[str, typer.Argument(help="CONNECTION or CONNECTION/CHILD")]) -> None:
    """Delete a connection's SAs and wait until the kernel is clean."""
    _not_implemented("down")


@app.command()
def status(
    name: Annotated[str | None, typer.Argument(help="Only this connection")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Stable JSON output")] = False,
) -> None:
    """Show IKE SAs and Child SAs."""
    _not_implemented("status")


@app.command()
def reload() -> None:
    """Reload the configuration without disturbing unchanged connections."""
    _not_implemented("reload")


@app.command()
def check(
    config: Annotated[Path, typer.Option("--config", "-c", help="Configuration file")] = (
        DEFAULT_CONFIG
    ),
) -> None:
    """Validate a configuration file and report every error."""
    _not_implemented("check")


@config_app.command("schema")
def config_schema() -> None:
    """Print the configuration's JSON Schema."""
    _not_implemented("config schema")


@app.command()
def daemon(
    config: Annotated[Path, typer.Option("--config", "-c", help="Configuration file")] = (
        DEFAULT_CONFIG
    ),
    socket: Annotated[
        Path | None, typer.Option("--socket", help="Control socket to listen on")
    ] = None,
) -> None:
    """Run the IKE daemon in the foreground."""
    _not_implemented("daemon")


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(f"xfrmctl {__version__}")


def main() -> None:
    os.environ.setdefault("_TYPER_STANDARD_TRACEBACK", "1")
    app()
