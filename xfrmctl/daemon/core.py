"""The daemon's heart: drive the sans-IO engine from sockets, timers and kernel events.

Every engine call is followed by `_pump()`, which sends what the engine queued, turns its
events into kernel work and waiter updates, and re-arms the single engine timer. Kernel work
runs in one ordered queue so that a rekeyed Child SA is always installed before the SA it
replaces is removed (make-before-break).

A rekey loses no packets: the new inbound SA goes in at once, the new outbound SA only when
the old pair is deleted (so a rekey responder never sends on an SA the initiator may not have
yet), and the old inbound SA lingers for `rekeyed_inbound_grace` seconds for packets in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from xfrmctl.daemon.kernel_glue import KernelEvent, KernelGlue
from xfrmctl.daemon.restart import RestartBackoff
from xfrmctl.daemon.sockets import Address, IkeSockets
from xfrmctl.ike import events as ev
from xfrmctl.ike.engine import Datagram, EndpointConfig, IkeEndpoint
from xfrmctl.ike.errors import LocalProtocolError
from xfrmctl.ike.spec import CloseAction, ConnectionSpec, StartAction
from xfrmctl.kernel.errors import XfrmError

log = logging.getLogger("xfrmctl.daemon")

REKEYED_INBOUND_GRACE = 5.0  # strongSwan's delete_rekeyed_delay
OUTBOUND_FALLBACK = 30.0  # install a deferred outbound SA even if the old one never goes
STOP_TIMEOUT = 5.0  # how long SIGTERM waits for peers to answer DELETEs


@dataclass
class Installed:
    """A Child SA pair the kernel holds for us."""

    ready: ev.ChildSaReady
    installed_at: float


@dataclass
class Waiter:
    """An `up`/`down` request waiting for the engine and the kernel to finish."""

    conn: str
    kind: str  # "up" | "down"
    ike_sa_ids: set[int]
    children: set[str]  # child names still to be installed (up) or removed (down)
    future: asyncio.Future[dict[str, Any]]
    progress: Callable[[dict[str, Any]], Awaitable[None]] | None = None
    done_children: list[ev.ChildSaReady] = field(default_factory=list)


class UpFailed(Exception):
    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.details = details or {}


class Daemon:
    def __init__(
        self, specs: list[ConnectionSpec], kernel: KernelGlue, ports: tuple[int, int] = (500, 4500)
    ) -> None:
        self.kernel = kernel
        self.engine = IkeEndpoint(
            specs, config=EndpointConfig(ike_port=ports[0], natt_port=ports[1])
        )
        self.sockets = IkeSockets(self._on_datagram, ports, prepare=kernel.prepare_socket)
        self.installed: dict[int, Installed] = {}  # by spi_in
        self.waiters: list[Waiter] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._kernel_queue: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Future[None]] = set()
        self._kernel_busy = 0  # jobs queued or running
        # old spi_in -> new Child SAs whose outbound SA waits for the old pair to go
        self._pending_out: dict[int, list[ev.ChildSaReady]] = {}
        self.rekeyed_inbound_grace = REKEYED_INBOUND_GRACE
        self.outbound_fallback = OUTBOUND_FALLBACK
        self.stop_timeout = STOP_TIMEOUT
        self.restarts = RestartBackoff()
        self._stopping = False

    # ------------------------------------------------------------------------ life cycle

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("daemon not started")
        return self._loop

    def now(self) -> float:
        return self.loop.time()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        specs = list(self.engine.specs.values())
        # Listen before the cleanup: a packet hitting a trap once the stale SAs are gone raises
        # an ACQUIRE that would otherwise be lost, stalling the flow for the kernel's 30 s.
        await self.kernel.open_events()
        # Traps first, then the stale cleanup (which spares them): a policy an earlier instance
        # left for the same traffic is replaced in place, so no packet passes in cleartext.
        await self.install_traps(specs)
        removed = await self.kernel.cleanup_stale()
        if removed:
            log.info("removed %d stale XFRM objects left by an earlier instance", removed)
        self.sockets.open(self.loop)
        self._tasks.append(asyncio.create_task(self._kernel_worker(), name="kernel-worker"))
        self._tasks.append(asyncio.create_task(self._kernel_events(), name="kernel-events"))
        self.initiate_starts(specs)

    async def install_traps(self, specs: list[ConnectionSpec]) -> None:
        for spec in specs:
            for child in spec.children:
                if child.start_action == StartAction.TRAP:
                    try:
                        await self.kernel.install_trap(
                            spec, child, self.engine.reqid(spec.name, child.name)
                        )
                    except Exception as exc:
                        log.error("%s/%s: cannot install trap: %s", spec.name, child.name, exc)

    async def apply_start_actions(self, specs: list[ConnectionSpec]) -> None:
        await self.install_traps(specs)
        self.initiate_starts(specs)

    def initiate_starts(self, specs: list[ConnectionSpec]) -> None:
        for spec in specs:
            starts = [c.name for c in spec.children if c.start_action == StartAction.START]
            if starts:
                self.call(self.engine.initiate, spec.name, starts)

    async def stop(self) -> None:
        """SIGTERM: tell peers, remove every SA and policy we installed, exit clean.

        Bounded: peers get `stop_timeout` seconds to answer our DELETEs (a dead peer or a
        deleted netns must not hold the shutdown for the engine's ~165 s of retransmissions);
        then our kernel objects go anyway. Errors on the way are logged, never raised.
        """
        if self._loop is None or self._stopping:
            return
        self._stopping = True
        loop = self.loop
        deadline = loop.time() + self.stop_timeout
        try:
            self.call(self.engine.terminate_all)
        except Exception as exc:
            log.error("could not send DELETEs to peers: %s", exc)
        while (self.engine.ike_sas() or self._kernel_busy) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        left = len(self.engine.ike_sas())
        if left:
            log.warning(
                "%d IKE SA(s) not deleted by their peer within %.0f s; removing them anyway",
                left,
                self.stop_timeout,
            )
        self.restarts.cancel_all()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        try:
            self.sockets.close()
        except Exception as exc:
            log.error("closing the IKE sockets failed: %s", exc)
        try:
            await asyncio.wait_for(self.kernel.remove_all(), timeout=self.stop_timeout)
        except TimeoutError:
            log.error("removing our kernel state took over %.0f s; giving up", self.stop_timeout)
        except Exception as exc:
            log.error("removing our kernel state failed: %s", exc)
        self.installed.clear()

    # ------------------------------------------------------------------------ engine pump

    def call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call an engine action with the current time, then act on what it produced."""
        try:
            return method(*args, now=self.now(), **kwargs)
        finally:
            self._pump()

    def _on_datagram(self, data: bytes, local: Address, remote: Address) -> None:
        self.engine.receive_datagram(data, local, remote, self.now())
        self._pump()

    def _on_timer(self) -> None:
        self._timer = None
        self.engine.handle_timer(self.now())
        self._pump()

    def _pump(self) -> None:
        while (event := self.engine.next_event()) is not None:
            try:
                self._on_event(event)
            except Exception:
                log.exception("error handling %s", type(event).__name__)
        dgrams = self.engine.datagrams_to_send()
        if dgrams and self._kernel_busy:
            # Answer only once the kernel holds what the answer announces: a peer acting on
            # our CREATE_CHILD_SA or DELETE response must find our new inbound SA in place.
            self._enqueue(functools.partial(self._send, dgrams))
        else:
            self._send_now(dgrams)
        deadline = self.engine.next_timer()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = self.loop.call_at(max(deadline, self.now()), self._on_timer)

    # ------------------------------------------------------------------------ engine events

    def _on_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.ChildSaReady):
            log.info(
                "%s/%s: Child SA ready, %s spi in %08x out %08x, %s, %s",
                event.conn,
                event.child,
                event.protocol.name,
                event.spi_in,
                event.spi_out,
                event.mode.value,
                event.proposal,
            )
            self._enqueue(functools.partial(self._install, event))
        elif isinstance(event, ev.ChildSaDeleted):
            log.info(
                "%s/%s: Child SA deleted (spi in %08x out %08x): %s",
                event.conn,
                event.child,
                event.spi_in,
                event.spi_out,
                event.reason,
            )
            self._enqueue(functools.partial(self._remove, event))
        elif isinstance(event, ev.IkeSaEstablished):
            log.info(
                "%s: IKE SA #%d established with %s (%s), %s",
                event.conn,
                event.ike_sa_id,
                event.remote[0],
                event.remote_id,
                event.proposal,
            )
            self.restarts.succeeded(event.conn)
            self._progress(
                event.conn,
                {
                    "event": "ike_established",
                    "message": f"IKE SA established with {event.remote_id} "
                    f"at {event.remote[0]} ({event.proposal})",
                    "proposal": event.proposal,
                    "remote_id": event.remote_id,
                },
            )
        elif isinstance(event, ev.IkeSaRekeyed):
            log.info(
                "%s: IKE SA #%d rekeyed to #%d (%s)",
                event.conn,
                event.old_ike_sa_id,
                event.new_ike_sa_id,
                event.proposal,
            )
            for w in self.waiters:
                if event.old_ike_sa_id in w.ike_sa_ids:
                    w.ike_sa_ids.add(event.new_ike_sa_id)
        elif isinstance(event, ev.IkeSaDeleted):
            log.info("%s: IKE SA #%d deleted: %s", event.conn, event.ike_sa_id, event.reason)
            self._enqueue(functools.partial(self._ike_gone, event))
        elif isinstance(event, ev.AuthenticationFailed):
            log.warning(
                "%s: authentication failed with %s: %s", event.conn, event.remote[0], event.reason
            )
            self._fail(
                event.conn,
                event.ike_sa_id,
                "AUTHENTICATION_FAILED",
                f"authentication failed: {event.reason}",
                {"local_id": event.local_id, "remote_id": event.remote_id},
            )
        elif isinstance(event, ev.NegotiationFailed):
            details = {"ours": _offer(event.ours), "theirs": _offer(event.theirs)}
            log.warning(
                "%s: negotiation failed: %s (ours %s, theirs %s)",
                event.conn,
                event.reason,
                details["ours"],
                details["theirs"],
            )
            self._fail(event.conn, event.ike_sa_id, event.reason, _failure_text(event), details)
        elif isinstance(event, ev.PeerDead):
            log.warning("%s: peer %s is dead: %s", event.conn, event.remote[0], event.reason)
            self._fail(event.conn, event.ike_sa_id, "PEER_DEAD", event.reason, {})
            self._dpd_action(event.conn)
        elif isinstance(event, ev.ProtocolViolation):
            log.debug("dropped a message from %s: %s", event.remote[0], event.reason)

    def _dpd_action(self, conn: str) -> None:
        spec = self.engine.specs.get(conn)
        if spec is None or self._stopping:
            return
        restart = [c.name for c in spec.children if c.dpd_action == CloseAction.START]
        traps = [
            c
            for c in spec.children
            if c.dpd_action == CloseAction.TRAP and c.start_action != StartAction.TRAP
        ]
        for child in traps:
            reqid = self.engine.reqid(conn, child.name)
            self._enqueue(functools.partial(self.kernel.install_trap, spec, child, reqid))
        if restart:
            armed = self.restarts.schedule(conn, self.loop, lambda: self._restart(conn, restart))
            if armed is not None:
                delay, attempt = armed
                log.info(
                    "%s: DPD action restart for %s in %g s (attempt %d)",
                    conn,
                    ", ".join(restart),
                    delay,
                    attempt,
                )

    def _restart(self, conn: str, children: list[str]) -> None:
        if conn in self.engine.specs and not self._stopping:
            with contextlib.suppress(LocalProtocolError):
                self.call(self.engine.initiate, conn, children)

    def _send_now(self, dgrams: list[Datagram]) -> None:
        for dgram in dgrams:
            self.sockets.send(dgram.data, dgram.local, dgram.remote)

    async def _send(self, dgrams: list[Datagram]) -> None:
        self._send_now(dgrams)

    # ------------------------------------------------------------------------ kernel work

    def _enqueue(self, job: Callable[[], Awaitable[None]]) -> None:
        self._kernel_busy += 1
        self._kernel_queue.put_nowait(job)

    async def _kernel_worker(self) -> None:
        while True:
            job = await self._kernel_queue.get()
            try:
                await job()
            except (XfrmError, OSError) as exc:
                log.error("kernel operation failed: %s", exc)
            except Exception:
                log.exception("kernel operation failed")
            finally:
                self._kernel_busy -= 1
                self._kernel_queue.task_done()

    async def _install(self, ready: ev.ChildSaReady) -> None:
        old = ready.replaces_spi_in
        defer_out = old is not None and old in self.installed and not self._stopping
        try:
            await self.kernel.install_child(ready, outbound=not defer_out)
        except Exception as exc:
            log.error("%s/%s: installing the Child SA failed: %s", ready.conn, ready.child, exc)
            self._fail(ready.conn, ready.ike_sa_id, "KERNEL_ERROR", str(exc), {})
            with contextlib.suppress(Exception):
                self.call(self.engine.delete_child, ready.spi_in)
            return
        self.installed[ready.spi_in] = Installed(ready, self.now())
        if defer_out and old is not None:
            self._pending_out.setdefault(old, []).append(ready)
            self.loop.call_later(
                self.outbound_fallback,
                lambda: self._enqueue(functools.partial(self._install_outbound, old, ready)),
            )
        self._progress(
            ready.conn,
            {
                "event": "child_installed",
                "message": f"Child SA {ready.child} installed ({ready.proposal}, "
                f"spi in {ready.spi_in:08x} out {ready.spi_out:08x})",
                "child": ready.child,
            },
        )
        for w in list(self.waiters):
            if w.kind == "up" and w.conn == ready.conn and ready.ike_sa_id in w.ike_sa_ids:
                w.children.discard(ready.child)
                w.done_children.append(ready)
                if not w.children:
                    self._resolve(w, {"ike_sa_id": ready.ike_sa_id})

    async def _install_outbound(self, old: int, ready: ev.ChildSaReady) -> None:
        """The deferred outbound SA of a rekey, once (or if) the pair it replaces is gone."""
        pending = self._pending_out.get(old, [])
        if ready not in pending:
            return
        pending.remove(ready)
        if not pending:
            self._pending_out.pop(old, None)
        if ready.spi_in in self.installed and not self._stopping:
            try:
                await self.kernel.install_outbound(ready)
            except Exception as exc:
                log.error(
                    "%s/%s: installing the outbound SA failed: %s", ready.conn, ready.child, exc
                )
                with contextlib.suppress(Exception):
                    self.call(self.engine.delete_child, ready.spi_in)

    async def _remove(self, gone: ev.ChildSaDeleted) -> None:
        for ready in list(self._pending_out.get(gone.spi_in, [])):
            await self._install_outbound(gone.spi_in, ready)
        for old, waiting in list(self._pending_out.items()):
            self._pending_out[old] = [r for r in waiting if r.spi_in != gone.spi_in]
            if not self._pending_out[old]:
                del self._pending_out[old]
        entry = self.installed.pop(gone.spi_in, None)
        if entry is not None:
            replaced = any(e.ready.replaces_spi_in == gone.spi_in for e in self.installed.values())
            if replaced and self.rekeyed_inbound_grace > 0 and not self._stopping:
                # Keep the old inbound SA a moment: the peer may still have packets on it.
                await self.kernel.remove_child(entry.ready, inbound=False)
                self.loop.call_later(
                    self.rekeyed_inbound_grace,
                    lambda: self._enqueue(
                        functools.partial(self.kernel.remove_inbound, entry.ready)
                    ),
                )
            else:
                await self.kernel.remove_child(entry.ready)
        for w in list(self.waiters):
            if w.kind == "down" and w.conn == gone.conn:
                w.children.discard(gone.child)
                if not w.children and not (w.ike_sa_ids & self._live_ike_ids(w.conn)):
                    self._resolve(w, {})

    async def _ike_gone(self, event: ev.IkeSaDeleted) -> None:
        # Children of a vanished IKE SA cannot be rekeyed or deleted any more: remove them.
        # Children an IKE rekey moved to the new IKE SA still live in the engine: keep those.
        live = {c.spi_in for c in self.engine.child_sas()}
        for spi_in, entry in list(self.installed.items()):
            if entry.ready.ike_sa_id == event.ike_sa_id and spi_in not in live:
                self.installed.pop(spi_in, None)
                await self.kernel.remove_child(entry.ready)
        for w in list(self.waiters):
            if event.ike_sa_id not in w.ike_sa_ids:
                continue
            if w.kind == "down":
                if not (w.ike_sa_ids & self._live_ike_ids(w.conn)):
                    self._resolve(w, {})
            elif w.children:
                self._reject(
                    w, UpFailed("IKE_SA_DELETED", f"the IKE SA was deleted: {event.reason}")
                )

    def _live_ike_ids(self, conn: str) -> set[int]:
        return {s.ike_sa_id for s in self.engine.ike_sas() if s.conn == conn}

    async def _kernel_events(self) -> None:
        # A failing subscription must not silently end ACQUIREs and expiries: say so, resubscribe.
        while True:
            try:
                async for kev in self.kernel.events():
                    try:
                        self._on_kernel_event(kev)
                    except Exception:
                        log.exception("error handling kernel event %s", kev)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("kernel notifications failed (%s); subscribing again", exc)
            await asyncio.sleep(1.0)

    def _on_kernel_event(self, kev: KernelEvent) -> None:
        if kev.kind == "acquire":
            target = self.kernel.trap_for_reqid(kev.reqid)
            if target is None:
                return
            conn, child = target
            log.info("%s/%s: kernel ACQUIRE for %s, negotiating", conn, child, kev.detail)
            self.call(
                self.engine.initiate_child, conn, child, traffic_selectors=kev.traffic_selectors
            )
            return
        spi_in = self._spi_in_for(kev.spi)
        if spi_in is None:
            return
        if kev.kind == "soft":
            log.info("Child SA spi %08x reached its soft limit, rekeying", kev.spi)
            with contextlib.suppress(LocalProtocolError, KeyError):
                self.call(self.engine.rekey_child, spi_in)
        elif kev.kind == "hard":
            log.info("Child SA spi %08x reached its hard limit, deleting", kev.spi)
            with contextlib.suppress(LocalProtocolError, KeyError):
                self.call(self.engine.delete_child, spi_in)

    def _spi_in_for(self, spi: int) -> int | None:
        if spi in self.installed:
            return spi
        for spi_in, entry in self.installed.items():
            if entry.ready.spi_out == spi:
                return spi_in
        return None

    # ------------------------------------------------------------------------ waiters

    def add_waiter(self, waiter: Waiter) -> None:
        self.waiters.append(waiter)

    def _progress(self, conn: str, message: dict[str, Any]) -> None:
        for w in self.waiters:
            if w.conn == conn and w.kind == "up" and w.progress is not None:
                task = asyncio.ensure_future(w.progress(message))
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    def _fail(
        self, conn: str, ike_sa_id: int | None, code: str, message: str, details: dict[str, Any]
    ) -> None:
        for w in list(self.waiters):
            if (
                w.kind == "up"
                and w.conn == conn
                and (ike_sa_id is None or ike_sa_id in w.ike_sa_ids)
            ):
                self._reject(w, UpFailed(code, message, details))

    def _resolve(self, w: Waiter, result: dict[str, Any]) -> None:
        if w in self.waiters:
            self.waiters.remove(w)
        if not w.future.done():
            w.future.set_result(result)

    def _reject(self, w: Waiter, exc: Exception) -> None:
        if w in self.waiters:
            self.waiters.remove(w)
        if not w.future.done():
            w.future.set_exception(exc)


def _offer(offer: ev.Offer) -> dict[str, Any]:
    return {
        "proposals": list(offer.proposal_text),
        "local_ts": [str(t) for t in offer.local_ts],
        "remote_ts": [str(t) for t in offer.remote_ts],
        "identity": offer.identity,
        "auth": offer.auth_method,
    }


def _failure_text(event: ev.NegotiationFailed) -> str:
    what = f"child {event.child}" if event.child else "IKE SA"
    if event.reason == "NO_PROPOSAL_CHOSEN":
        return (
            f"{what}: no proposal chosen: we offered {', '.join(event.ours.proposal_text)}"
            f"; the peer offered {', '.join(event.theirs.proposal_text) or 'none we saw'}"
        )
    if event.reason == "TS_UNACCEPTABLE":
        return (
            f"{what}: traffic selectors unacceptable: ours "
            f"{[str(t) for t in event.ours.local_ts]} <-> "
            f"{[str(t) for t in event.ours.remote_ts]}, theirs "
            f"{[str(t) for t in event.theirs.local_ts]} <-> "
            f"{[str(t) for t in event.theirs.remote_ts]}"
        )
    return f"{what}: {event.reason}"
