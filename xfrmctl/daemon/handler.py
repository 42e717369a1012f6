"""The control socket's commands (up, down, status, reload, explain, keys) on top of the
running daemon."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from xfrmctl.daemon import heap
from xfrmctl.daemon.control import ControlError, Progress
from xfrmctl.daemon.core import Daemon
from xfrmctl.daemon.keys import export_tables
from xfrmctl.daemon.waiters import UpFailed, Waiter
from xfrmctl.ike.errors import LocalProtocolError
from xfrmctl.ike.exchanges import IkeState
from xfrmctl.ike.sa import ChildState
from xfrmctl.ike.spec import ConnectionSpec
from xfrmctl.ike.status import ChildSaStatus as EngineChildSa
from xfrmctl.ike.status import IkeSaStatus as EngineIkeSa

if TYPE_CHECKING:
    # The status reply's pydantic models load at the first `status` or `up` reply: building
    # them costs every daemon start (~37 M instructions), and a daemon serves before either.
    from xfrmctl.daemon.status import ChildSaStatus, ConnectionStatus, IkeSaStatus, StatusReport

UP_TIMEOUT = 180.0  # longer than the engine's retransmission give-up (~165 s)
DOWN_TIMEOUT = 30.0

# The engine's IKE SA states as docs/control-protocol.md names them for users.
IKE_STATES = {
    IkeState.INIT_SENT.value: "CONNECTING",
    IkeState.AUTH_SENT.value: "CONNECTING",
    IkeState.INIT_RESPONDED.value: "CONNECTING",
    IkeState.ESTABLISHED.value: "ESTABLISHED",
    IkeState.REKEYED.value: "REKEYED",
    IkeState.DELETING.value: "DELETING",
    IkeState.DEAD.value: "DELETED",
}

log = logging.getLogger("xfrmctl.daemon")


class DaemonHandler:
    def __init__(
        self,
        daemon: Daemon,
        reload: Callable[[], list[ConnectionSpec]],
        key_export: bool = False,
    ) -> None:
        self.daemon = daemon
        self._reload_specs = reload
        self._key_export = False
        self.key_export = key_export

    @property
    def key_export(self) -> bool:
        """settings.key_export: whether `keys` may hand out the SAs' secret keys."""
        return self._key_export

    @key_export.setter
    def key_export(self, allowed: bool) -> None:
        if allowed and not self._key_export:
            log.warning("settings.key_export is on: root may export the SAs' keys (xfrmctl keys)")
        self._key_export = allowed

    def _spec(self, name: str) -> ConnectionSpec:
        spec = self.daemon.engine.specs.get(name)
        if spec is None:
            known = ", ".join(sorted(self.daemon.engine.specs)) or "none"
            raise ControlError(
                "UNKNOWN_CONNECTION", f"no connection named {name!r} (configured: {known})"
            )
        return spec

    @staticmethod
    def _check_child(spec: ConnectionSpec, child: str | None) -> None:
        names = [c.name for c in spec.children]
        if child is not None and child not in names:
            raise ControlError(
                "UNKNOWN_CHILD",
                f"connection {spec.name!r} has no child {child!r} "
                f"(children: {', '.join(names) or 'none'})",
            )

    async def up(self, name: str, child: str | None, progress: Progress) -> dict[str, Any]:
        spec = self._spec(name)
        self._check_child(spec, child)
        names = [c.name for c in spec.children] if child is None else [child]
        installed = {e.ready.child for e in self.daemon.installed.of_conn(name)}
        if names and set(names) <= installed:
            return await self._up_result(name)
        loop = asyncio.get_running_loop()
        waiter = Waiter(name, "up", set(), set(names), loop.create_future(), progress)
        try:
            if self.daemon.engine.ike_ids(name, IkeState.ESTABLISHED):
                ids = {
                    self.daemon.call(self.daemon.engine.initiate_child, name, n)
                    for n in names
                    if n not in installed
                }
            else:
                ids = {
                    self.daemon.call(
                        self.daemon.engine.initiate, name, [n for n in names if n not in installed]
                    )
                }
        except LocalProtocolError as exc:
            raise ControlError("CONFIG", str(exc)) from None
        waiter.ike_sa_ids |= ids
        waiter.children -= installed
        self.daemon.add_waiter(waiter)
        await progress(
            {
                "event": "initiating",
                "message": f"initiating {name} (children: {', '.join(names) or 'none'})",
                "connection": name,
                "children": names,
            }
        )
        try:
            await asyncio.wait_for(waiter.future, UP_TIMEOUT)
        except TimeoutError:
            raise ControlError(
                "TIMEOUT", f"{name}: not established after {UP_TIMEOUT:.0f} s"
            ) from None
        except UpFailed as exc:
            raise ControlError(exc.code, exc.args[0], exc.details) from None
        return await self._up_result(name, frozenset(r.spi_in for r in waiter.done_children))

    async def _up_result(self, name: str, fresh: frozenset[int] = frozenset()) -> dict[str, Any]:
        """The connection's first IKE SA as `status` shows it (built for that one only).

        The pairs this request just installed (`fresh`, by inbound SPI) show the counters they
        were installed with, zero, instead of the kernel's: asking costs two netlink round
        trips (GETAE) per child between the install and the reply the user waits for.
        """
        clock = _Clock(self.daemon.now(), time.time())
        ike = next(iter(self.daemon.engine.ike_sas(name)), None)
        if ike is None:
            return {}
        return {"ike_sa": (await self._ike_status(ike, clock, fresh)).model_dump(mode="json")}

    async def down(self, name: str, child: str | None, progress: Progress) -> dict[str, Any]:
        self._check_child(self._spec(name), child)
        loop = asyncio.get_running_loop()
        engine = self.daemon.engine
        if child is not None:
            spis = [
                e.ready.spi_in
                for e in self.daemon.installed.of_conn(name)
                if e.ready.child == child
            ]
            if not spis:
                return {"deleted_ike_sas": 0, "deleted_child_sas": 0}
            waiter = Waiter(name, "down", set(), {child}, loop.create_future(), progress)
            self.daemon.add_waiter(waiter)
            for spi in spis:
                self.daemon.call(engine.delete_child, spi)
            result = {"deleted_ike_sas": 0, "deleted_child_sas": len(spis)}
        else:
            ids = set(engine.ike_ids(name))
            children = len(self.daemon.installed.of_conn(name))
            if not ids:
                return {"deleted_ike_sas": 0, "deleted_child_sas": 0}
            waiter = Waiter(name, "down", set(ids), set(), loop.create_future(), progress)
            self.daemon.add_waiter(waiter)
            for ike_id in ids:
                self.daemon.call(engine.delete_ike, ike_id)
            result = {"deleted_ike_sas": len(ids), "deleted_child_sas": children}
        try:
            await asyncio.wait_for(waiter.future, DOWN_TIMEOUT)
        except TimeoutError:
            raise ControlError(
                "TIMEOUT", f"{name}: not torn down after {DOWN_TIMEOUT:.0f} s"
            ) from None
        return result

    async def status(self, name: str | None) -> StatusReport:
        from xfrmctl.daemon.status import DriftStatus, StatusReport

        clock = _Clock(self.daemon.now(), time.time())
        ike_list = [await self._ike_status(ike, clock) for ike in self.daemon.engine.ike_sas(name)]
        active = {s.name for s in ike_list}
        conns = [
            _connection_status(spec, spec.name in active)
            for spec in self.daemon.engine.specs.values()
            if name is None or spec.name == name
        ]
        drift = DriftStatus(**self.daemon.drift.counts())
        return StatusReport(
            ike_sas=ike_list,
            connections=conns,
            drift_found=sum(drift.found.values()),
            drift_repaired=sum(drift.repaired.values()),
            drift=drift,
        )

    async def _ike_status(
        self, ike: EngineIkeSa, clock: _Clock, fresh: frozenset[int] = frozenset()
    ) -> IkeSaStatus:
        from xfrmctl.daemon.status import IkeSaStatus

        return IkeSaStatus(
            name=ike.conn,
            unique_id=ike.ike_sa_id,
            state=IKE_STATES.get(ike.state, ike.state.upper()),
            initiator=ike.initiator,
            local_addr=str(ike.local[0]),
            local_port=ike.local[1],
            remote_addr=str(ike.remote[0]),
            remote_port=ike.remote[1],
            local_id=ike.local_id,
            remote_id=ike.remote_id,
            proposal=ike.proposal,
            nat_local=ike.nat_local,
            nat_remote=ike.nat_remote,
            established_at=clock.wall(ike.established_at),
            rekey_in=clock.seconds_until(ike.rekey_at),
            reauth_in=clock.seconds_until(ike.reauth_at),
            adopted=ike.adopted,
            children=[await self._child_status(c, clock, c.spi_in in fresh) for c in ike.children],
        )

    async def _child_status(
        self, c: EngineChildSa, clock: _Clock, fresh: bool = False
    ) -> ChildSaStatus:
        """The engine's view of a Child SA, with the kernel's counters (unless `fresh`: just
        installed, so zero) and timers once the pair is installed."""
        from xfrmctl.daemon.status import ChildSaStatus, child_kernel_fields

        entry = self.daemon.installed.get(c.spi_in)
        counters = await self.daemon.kernel.counters(entry.ready) if entry and not fresh else None
        return ChildSaStatus(
            name=c.name,
            unique_id=c.unique_id,
            state=c.state.upper(),
            mode=c.mode,
            protocol=c.protocol,
            spi_in=f"{c.spi_in:08x}",
            spi_out=f"{c.spi_out:08x}",
            local_ts=list(c.local_ts),
            remote_ts=list(c.remote_ts),
            proposal=c.proposal,
            encap=c.encap,
            bytes_in=counters.bytes_in if counters else 0,
            bytes_out=counters.bytes_out if counters else 0,
            packets_in=counters.packets_in if counters else 0,
            packets_out=counters.packets_out if counters else 0,
            installed_at=clock.wall(entry.installed_at) if entry else None,
            rekey_in=clock.seconds_until(entry.rekey_at()) if entry else None,
            expires_in=clock.seconds_until(entry.expire_at()) if entry else None,
            **child_kernel_fields(
                entry.ready if entry else None, self.daemon.kernel.offload_of(c.spi_in)
            ),
        )

    async def explain(self, name: str) -> dict[str, Any]:
        """The last failed negotiation of `name`, diagnosed, or `failure: null`."""
        self._spec(name)
        failures = self.daemon.failures
        failures.forget_except(self.daemon.engine.specs)
        last = failures.get(name)
        if last is None:
            text = [f"{name}: no failed negotiation on record (none since start or last success)"]
            return {"connection": name, "failure": None, "text": text}
        failure = last.to_json()
        return {"connection": name, "failure": failure, "text": failure["text"]}

    async def rekey(self, name: str, child: str | None, ike: bool) -> dict[str, Any]:
        """Start rekeying `name`'s installed Child SAs (or one child's), or with `ike` its IKE
        SAs. Like `swanctl --rekey`, it returns once the exchanges are started: `status`
        shows the new SPIs, and a failure is logged and kept for `explain`."""
        self._check_child(self._spec(name), child)
        engine = self.daemon.engine
        if ike:
            ids = engine.ike_ids(name, IkeState.ESTABLISHED)
            spis: list[int] = []
        else:
            ids = []
            spis = engine.child_spis(name, child, ChildState.INSTALLED)
        if not ids and not spis:
            what = "IKE SA" if ike else "installed Child SA"
            target = f"{name}/{child}" if child else name
            raise ControlError("NOT_UP", f"{target}: no established {what} to rekey")
        for ike_id in ids:
            self.daemon.call(engine.rekey_ike, ike_id)
        for spi in spis:
            self.daemon.call(engine.rekey_child, spi)
        return {"rekeyed_ike_sas": len(ids), "rekeyed_child_sas": len(spis)}

    async def keys(self) -> dict[str, Any]:
        """Every live SA's keys as Wireshark table lines, if settings.key_export allows."""
        if not self.key_export:
            raise ControlError(
                "KEY_EXPORT_DISABLED",
                "key export is disabled in the daemon's configuration; to allow it, set "
                "settings.key_export: true and run `xfrmctl reload`",
            )
        children = [entry.ready for entry in self.daemon.installed.values()]
        tables = export_tables(list(self.daemon.engine.sas.values()), children)
        log.warning(
            "exported the keys of %d IKE SA(s) and %d ESP SA(s) to a control client",
            len(tables.ikev2),
            len(tables.esp_sa),
        )
        return tables.to_json()

    async def reload(self) -> dict[str, Any]:
        try:
            specs = self._reload_specs()
        except Exception as exc:
            errors = [str(i) for i in getattr(exc, "errors", [])] or [str(exc)]
            raise ControlError(
                "CONFIG_INVALID", "configuration not reloaded", {"errors": errors}
            ) from None
        heap.release_free_memory()  # the parse's pages: the file, its tree, its models
        old = self.daemon.engine.specs
        new = {s.name: s for s in specs}
        added = sorted(set(new) - set(old))
        removed = sorted(set(old) - set(new))
        changed = sorted(n for n in set(old) & set(new) if old[n] != new[n])
        unchanged = sorted(n for n in set(old) & set(new) if old[n] == new[n])
        self.daemon.engine.update_specs(specs)
        for name in removed + changed:
            # Forget the old traps first, so that deleting the SAs also takes their policies.
            await self.daemon.kernel.remove_traps(name)
            for ike_id in self.daemon.engine.ike_ids(name):  # not a snapshot of every SA
                self.daemon.call(self.daemon.engine.delete_ike, ike_id)
        await self.daemon.apply_start_actions([new[n] for n in added + changed])
        return {"added": added, "removed": removed, "changed": changed, "unchanged": unchanged}


@dataclass(frozen=True)
class _Clock:
    """The daemon's monotonic time and the wall time, read once per status report."""

    now: float
    wall_now: float

    def seconds_until(self, deadline: float | None) -> int | None:
        return None if deadline is None else max(0, int(deadline - self.now))

    def wall(self, at: float | None) -> datetime | None:
        """A monotonic time as UTC wall time."""
        return None if at is None else datetime.fromtimestamp(self.wall_now - (self.now - at), UTC)


def _connection_status(spec: ConnectionSpec, active: bool) -> ConnectionStatus:
    from xfrmctl.daemon.status import ChildConfigStatus, ConnectionStatus

    return ConnectionStatus(
        name=spec.name,
        local_addrs=[str(a) for a in spec.local_addrs],
        remote_addrs=[str(a) for a in spec.remote_addrs],
        active=active,
        children=[
            ChildConfigStatus(
                name=c.name,
                mode=c.mode.value,
                protocol=c.protocol.name.lower(),
                start_action=c.start_action.value,
                local_ts=[str(t.network) for t in c.local_ts],
                remote_ts=[str(t.network) for t in c.remote_ts],
            )
            for c in spec.children
        ],
    )
