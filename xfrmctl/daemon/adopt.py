"""Graceful restart, daemon side: hand the IKE SAs over on a restart stop, adopt them on start.

Contract: `hand_over` (a restart stop) writes the engine's snapshot (`ike/snapshot.py`) and, per
installed Child SA, its install time and kernel lifetimes to the state file (`state_file.py`);
the kernel keeps every SA and policy and no DELETE is sent. `resume` (start, before the stale
cleanup) takes the file, rebuilds the IKE SAs in the engine and has the kernel glue adopt the
pairs it still holds; the cleanup then spares exactly those. Anything unusable (no file, bad
file, changed connection) leaves today's clean start, logged in one line saying why. Child SAs
the file lists but the kernel lost are returned, for the daemon to delete with the peer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xfrmctl.daemon import state_file
from xfrmctl.daemon.installed import Installed
from xfrmctl.ike import snapshot
from xfrmctl.ike.events import ChildSaReady, Lifetimes
from xfrmctl.ike.proposals import format_proposal
from xfrmctl.ike.sa import ChildSa, IkeSa

if TYPE_CHECKING:
    from xfrmctl.daemon.core import Daemon

log = logging.getLogger("xfrmctl.daemon")


async def hand_over(daemon: Daemon, path: Path) -> bool:
    """Write the state file; False (the caller tears down as usual) when it cannot."""
    loop_deadline = daemon.now() + daemon.stop_timeout
    while daemon.queue.busy and daemon.now() < loop_deadline:
        await asyncio.sleep(0.02)  # a pair half-way into the kernel would not be adoptable
    wall = time.time()
    doc, skipped = snapshot.export(daemon.engine, daemon.now(), wall)
    children = {
        str(spi): {
            "installed_at": entry.installed_at - daemon.now() + wall,
            "lifetimes": list(_lifetimes(entry.ready.lifetimes)),
        }
        for spi, entry in daemon.installed.items()
    }
    try:
        state_file.write(path, {"engine": doc, "children": children}, wall)
    except (OSError, TypeError, ValueError) as exc:
        log.error("restart stop: cannot write the state file %s (%s); tearing down", path, exc)
        return False
    for line in skipped:
        log.warning("restart stop: not handed over, starts afresh: %s", line)
    n_children = sum(len(sa["children"]) for sa in doc["ike_sas"])
    log.info(
        "restart stop: %d IKE SA(s) with %d Child SA(s) handed over in %s; kernel state kept",
        len(doc["ike_sas"]),
        n_children,
        path,
    )
    return True


async def resume(daemon: Daemon, path: Path, max_age: float) -> list[int]:
    """Adopt what the state file hands over; returns spi_in of Child SAs the kernel lost."""
    wall = time.time()
    taken = state_file.take(path, wall, max_age)
    if taken.data is None:
        log.info("clean start: %s", taken.reason)
        return []
    try:
        restored = snapshot.restore(daemon.engine, taken.data["engine"], daemon.now(), wall)
        meta: dict[str, Any] = dict(taken.data["children"])
    except (snapshot.SnapshotError, KeyError, TypeError, ValueError) as exc:
        for sa in list(daemon.engine.sas.values()):
            daemon.engine.forget(sa)
        log.warning("clean start: %s unusable: %s", path, exc)
        return []
    for why in restored.refused:
        log.info("clean start for %s", why)
    readies = [_ready(sa, c, meta.get(str(c.spi_in))) for sa in restored.sas for c in sa.children]
    found = await daemon.kernel.adopt(readies)
    for r in readies:
        if r.spi_in in found:
            at = float(meta.get(str(r.spi_in), {}).get("installed_at", wall))
            daemon.installed[r.spi_in] = Installed(r, at - wall + daemon.now())
    daemon.restarts_adopted += 1 if restored.sas else 0
    lost = [r.spi_in for r in readies if r.spi_in not in found]
    log.info(
        "restart: adopted %d IKE SA(s) and %d of %d Child SA(s) from %s",
        len(restored.sas),
        len(found),
        len(readies),
        taken.reason,
    )
    return lost


def _lifetimes(lt: Lifetimes) -> tuple[int, ...]:
    return (
        lt.soft_seconds,
        lt.hard_seconds,
        lt.soft_bytes,
        lt.hard_bytes,
        lt.soft_packets,
        lt.hard_packets,
    )


def _ready(sa: IkeSa, c: ChildSa, meta: dict[str, Any] | None) -> ChildSaReady:
    """The record the daemon keeps per installed pair, without keys: the kernel has them."""
    lt = [int(x) for x in (meta or {}).get("lifetimes", [0] * 6)]
    return ChildSaReady(
        sa.conn_name,
        c.spec.name,
        c.unique_id,
        sa.id,
        c.mode,
        c.protocol,
        c.spi_in,
        c.spi_out,
        sa.local[0],
        sa.remote[0],
        c.encr,
        c.integ,
        b"",
        b"",
        b"",
        b"",
        c.esn,
        c.local_ts,
        c.remote_ts,
        Lifetimes(*lt),
        sa.encap(),
        c.reqid,
        c.tfc_padding,
        proposal=format_proposal(c.proposal),
        kernel=c.spec.kernel,
        cpi_in=c.cpi_in,
        cpi_out=c.cpi_out,
    )
