"""`xfrmctl daemon`: load the configuration, open sockets, serve until SIGTERM, clean up."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from xfrmctl.daemon import state_file
from xfrmctl.daemon.control import ControlServer, ControlSocketError
from xfrmctl.daemon.core import Daemon
from xfrmctl.daemon.handler import DaemonHandler
from xfrmctl.daemon.kernel_glue import KernelGlue
from xfrmctl.daemon.metrics import MetricsServer
from xfrmctl.daemon.restart_request import systemd_restart_pending
from xfrmctl.daemon.sdnotify import notify
from xfrmctl.daemon.specs import SpecError, build_specs, endpoint_config
from xfrmctl.ike.spec import ConnectionSpec

if TYPE_CHECKING:
    from xfrmctl.config.loader import LoadedConfig

log = logging.getLogger("xfrmctl.daemon")


def _setup_logging(level: str) -> None:
    # journald adds timestamps; a terminal user gets them from the format.
    fmt = "%(levelname)s %(name)s: %(message)s"
    if sys.stderr.isatty():
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=level.upper(), format=fmt, stream=sys.stderr, force=True)
    # Gather per record only what the format shows (the logging HOWTO's "Optimization"): no
    # caller lookup (a walk up the stack), thread or process names. A third of a record's
    # cost, and a busy daemon logs two per IKE SA set up (issue 15).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # pyroute2's own debug output is netlink plumbing, not IKE; keep it out of --log-level debug.
    logging.getLogger("pyroute2").setLevel(max(logging.WARNING, logging.root.level))


def _load(config_path: Path) -> tuple[list[ConnectionSpec], LoadedConfig]:
    from xfrmctl.config import ConfigError, load_config
    from xfrmctl.config.selectors import parsed_once

    with parsed_once():  # validation and the specs read the same selectors
        try:
            loaded = load_config(config_path)
        except ConfigError as exc:
            raise SpecError(str(exc)) from None
        return build_specs(loaded), loaded


def _metrics_address(loaded: LoadedConfig) -> tuple[str, int] | None:
    block = loaded.settings.metrics
    return None if block is None else block.address()


def freeze_startup_heap() -> None:
    """Leave what start-up built (modules, classes, the configuration) out of the cyclic GC's
    full collections, which otherwise walk it all again each time: about a third of their
    cost at 1000 IKE SAs (issue 15). Reference counting still frees any of it; only a cycle
    made of start-up objects would stay, and those live as long as the daemon anyway."""
    gc.collect()
    gc.freeze()


def preload_replies() -> None:
    """Import the control replies' models (`daemon.status`) once the daemon is ready: left
    out of the start so that "ready" comes sooner, they would otherwise load in the first
    `up` after every start, the one a boot or a playbook runs (half a second of it under the
    lab's emulation, issue 15)."""
    import xfrmctl.daemon.status  # noqa: F401


def default_kernel() -> KernelGlue:
    from xfrmctl.daemon.xfrm_glue import XfrmGlue

    return XfrmGlue()


async def run_daemon(
    config_path: Path,
    socket_path: Path | None,
    kernel: KernelGlue | None = None,
    log_level: str | None = None,
) -> int:
    """`log_level` (e.g. from `--log-level`) overrides `settings.log_level`; at `debug` every
    IKE message is logged decoded, one line per payload, with sizes instead of secrets."""
    try:
        specs, loaded = _load(config_path)
    except (SpecError, OSError) as exc:
        print(f"xfrmctl daemon: {exc}", file=sys.stderr)
        return 2
    # What start-up reads, and not the models of every connection (~5 KiB each), which the
    # specs have replaced: this frame lives as long as the daemon (issue 15).
    settings, warnings, metrics_at = loaded.settings, loaded.warnings, _metrics_address(loaded)
    del loaded
    _setup_logging(log_level or settings.log_level)
    for warning in warnings:
        log.warning("%s", warning)
    socket_path = socket_path or settings.socket
    daemon = Daemon(
        specs,
        kernel or default_kernel(),
        (settings.port, settings.port_nat_t),
        limits=endpoint_config(settings),
    )
    count = len(specs)
    del specs  # a reload replaces the daemon's; this list would keep the first ones
    daemon.state_path = settings.restart_state or state_file.default_path(Path(socket_path))
    daemon.state_max_age = settings.restart_state_max_age

    daemon.drift.interval = settings.reconcile_interval
    daemon.starts.window = settings.start_window
    metrics = MetricsServer(daemon)

    def reload_specs() -> list[ConnectionSpec]:
        specs, loaded = _load(config_path)
        metrics.bind(_metrics_address(loaded))  # OSError: the reload is refused, saying why
        handler.key_export = loaded.settings.key_export
        daemon.drift.interval = loaded.settings.reconcile_interval
        daemon.starts.window = loaded.settings.start_window
        return specs

    handler = DaemonHandler(daemon, reload_specs, key_export=settings.key_export)
    server = ControlServer(Path(socket_path), handler)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    how = {"signal": signal.SIGTERM, "keep": False}

    def on_stop(sig: signal.Signals) -> None:
        how["signal"] = sig
        stop.set()

    def on_usr2() -> None:
        how["keep"] = True
        log.info("SIGUSR2: the next stop is a restart stop (tunnels kept, IKE SAs handed over)")

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop, sig)
    loop.add_signal_handler(signal.SIGUSR2, on_usr2)

    async def on_hup() -> None:
        try:
            result = await handler.reload()
            log.info("configuration reloaded: %s", result)
        except Exception as exc:
            log.error("reload failed: %s", exc)

    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(on_hup()))
    freeze_startup_heap()  # before start: no IKE SA (adopted ones included) is frozen
    try:
        # IKE sockets first: a client that sees the control socket can use `up` at once.
        await daemon.start()
        metrics.bind(metrics_at)
        await server.start()
    except (ControlSocketError, OSError) as exc:
        log.error("cannot start: %s", exc)
        await metrics.close()
        await daemon.stop()
        await server.close()
        return 1
    log.info("xfrmctl daemon ready: %d connections, control socket %s", count, socket_path)
    notify("READY=1\nSTATUS=running")
    loop.call_soon(preload_replies)
    await stop.wait()
    notify("STOPPING=1")
    keep = bool(how["keep"]) or (
        how["signal"] == signal.SIGTERM and await systemd_restart_pending()
    )
    if not keep:
        log.info("shutting down: deleting SAs and removing kernel state")
    try:
        await server.close()
    except OSError as exc:
        log.error("closing the control socket failed: %s", exc)
    await metrics.close()
    await daemon.stop(keep=keep)  # bounded, and logs what fails
    log.info("stopped")
    return 0
