"""The daemon's heart: drive the sans-IO engine from sockets, timers and kernel events.

Every engine call is followed by `_pump()`, which sends what the engine queued, turns its
events into kernel work (`KernelQueue`, one ordered queue; the rekey handover is in
`handover.py`) and waiter updates (`waiters.py`), and re-arms the single engine timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from xfrmctl.daemon import adopt, state_file
from xfrmctl.daemon.drift import DriftWatch
from xfrmctl.daemon.failures import FailureLog
from xfrmctl.daemon.handover import ChildHandover
from xfrmctl.daemon.installed import InstalledTable
from xfrmctl.daemon.kernel_glue import KernelEvent, KernelGlue, NatMapping
from xfrmctl.daemon.kernel_queue import KernelQueue
from xfrmctl.daemon.metrics import Stats
from xfrmctl.daemon.nat_mapping import port_change, remap
from xfrmctl.daemon.restart import RestartBackoff
from xfrmctl.daemon.revocation import RevocationFetcher
from xfrmctl.daemon.sockets import Address, IkeSockets
from xfrmctl.daemon.starts import StartQueue
from xfrmctl.daemon.tracing import MessageLog, tracing_wanted
from xfrmctl.daemon.waiters import Waiter, Waiters, failure_text, offer_details
from xfrmctl.ike import events as ev
from xfrmctl.ike.crypto.prime import prime
from xfrmctl.ike.engine import Datagram, EndpointConfig, IkeEndpoint
from xfrmctl.ike.errors import LocalProtocolError
from xfrmctl.ike.spec import CloseAction, ConnectionSpec, StartAction

log = logging.getLogger("xfrmctl.daemon")

STOP_TIMEOUT = 5.0  # how long SIGTERM waits for peers to answer DELETEs


class Daemon:
    def __init__(
        self,
        specs: list[ConnectionSpec],
        kernel: KernelGlue,
        ports: tuple[int, int] = (500, 4500),
        trace: bool | None = None,
        limits: EndpointConfig | None = None,
    ) -> None:
        """`trace` (default: whether `xfrmctl.daemon.trace` logs at DEBUG) logs every IKE
        message decoded, one line per payload, secrets shown only as sizes. `limits`: the
        engine's settings (half-open limits...); `ports` override its ports."""
        self.kernel = kernel
        if trace is None:
            trace = tracing_wanted()
        config = dataclasses.replace(
            limits or EndpointConfig(), ike_port=ports[0], natt_port=ports[1]
        )
        self.engine = IkeEndpoint(specs, config=config, trace=trace)
        self.messages = MessageLog(self.engine.ike_sas)
        self.sockets = IkeSockets(self._on_datagram, ports, prepare=kernel.prepare_socket)
        self.queue = KernelQueue()
        self.handover = ChildHandover(kernel, self.queue, self._delete_child)
        self.waiters = Waiters()
        self.failures = FailureLog()  # the last failed negotiation per connection (explain)
        self.stats = Stats()  # event counters for the metrics endpoint
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None  # the engine deadline it was set for
        self._tasks: list[asyncio.Task[None]] = []
        self.stop_timeout = STOP_TIMEOUT
        self.restarts = RestartBackoff()
        self.fetcher = RevocationFetcher()  # CRL/OCSP fetches the engine asked for
        self._stopping = False
        self.drift = DriftWatch(self)  # others' changes to our kernel objects, repaired
        self.starts = StartQueue(self.engine, self._start)  # start_action: start, in turn
        # Graceful restart (adopt.py): where a restart stop leaves the IKE SAs for the next
        # daemon, how old a state file may be, and how many starts adopted IKE SAs.
        self.state_path: Path | None = None
        self.state_max_age = state_file.MAX_AGE
        self.restarts_adopted = 0

    @property
    def installed(self) -> InstalledTable:
        """The Child SA pairs the kernel holds for us, by inbound SPI."""
        return self.handover.installed

    @property
    def rekeyed_inbound_grace(self) -> float:
        return self.handover.grace

    @rekeyed_inbound_grace.setter
    def rekeyed_inbound_grace(self, seconds: float) -> None:
        self.handover.grace = seconds

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
        prime(p for spec in specs for p in spec.ike_proposals)
        # Listen before the cleanup: a packet hitting a trap once the stale SAs are gone raises
        # an ACQUIRE that would otherwise be lost, stalling the flow for the kernel's 30 s.
        await self.kernel.open_events()
        # Traps first, then the stale cleanup (which spares them): a policy an earlier instance
        # left for the same traffic is replaced in place, so no packet passes in cleartext.
        await self.install_traps(specs)
        lost: list[int] = []
        if self.state_path is not None:  # adopted pairs are then spared by the cleanup
            lost = await adopt.resume(self, self.state_path, self.state_max_age)
        removed = await self.kernel.cleanup_stale()
        if removed:
            log.info("removed %d stale XFRM objects left by an earlier instance", removed)
        self.sockets.open(self.loop)
        self._tasks.append(asyncio.create_task(self.queue.run(), name="kernel-worker"))
        self._tasks.append(asyncio.create_task(self._kernel_events(), name="kernel-events"))
        self._tasks.append(asyncio.create_task(self.drift.run(), name="drift-reconcile"))
        for spi_in in lost:  # listed in the state file, gone from the kernel: tell the peer
            with contextlib.suppress(LocalProtocolError):
                self.call(self.engine.delete_child, spi_in)
        resumed = {s.conn for s in self.engine.ike_sas()}
        self.initiate_starts([s for s in specs if s.name not in resumed])
        self._pump()  # arm the resumed IKE SAs' timers

    async def install_traps(self, specs: list[ConnectionSpec]) -> None:
        for spec in specs:
            for child in spec.children:
                if child.start_action == StartAction.TRAP:
                    try:
                        await self.kernel.install_trap(
                            spec, child, self.engine.trap_reqid(spec.name, child.name, self.now())
                        )
                    except Exception as exc:
                        log.error("%s/%s: cannot install trap: %s", spec.name, child.name, exc)

    async def apply_start_actions(self, specs: list[ConnectionSpec]) -> None:
        prime(p for spec in specs for p in spec.ike_proposals)  # a reload's new algorithms
        await self.install_traps(specs)
        self.initiate_starts(specs)

    def initiate_starts(self, specs: list[ConnectionSpec]) -> None:
        """start_action: start, through the start window (daemon/starts.py)."""
        for spec in specs:
            starts = [c.name for c in spec.children if c.start_action == StartAction.START]
            if starts:
                self.starts.add(spec.name, starts)
        self._pump()

    async def stop(self, keep: bool = False) -> None:
        """SIGTERM: tell peers, remove every SA and policy we installed, exit clean.

        Bounded: peers get `stop_timeout` seconds to answer our DELETEs (a dead peer or a
        deleted netns must not hold the shutdown for the engine's ~165 s of retransmissions);
        then our kernel objects go anyway. Errors on the way are logged, never raised.
        `keep` (a restart stop): hand the IKE SAs to the next daemon and leave the kernel
        state in place instead, unless the state file cannot be written.
        """
        if self._loop is None or self._stopping:
            return
        if keep and self.state_path is not None and await adopt.hand_over(self, self.state_path):
            self._stopping = self.handover.stopping = True
            self.starts.clear()
            await self._halt_io()
            return
        self._stopping = self.handover.stopping = True
        self.starts.clear()
        loop = self.loop
        deadline = loop.time() + self.stop_timeout
        try:
            self.call(self.engine.terminate_all)
        except Exception as exc:
            log.error("could not send DELETEs to peers: %s", exc)
        while (self.engine.sas or self.queue.busy) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        left = len(self.engine.sas)
        if left:
            log.warning(
                "%d IKE SA(s) not deleted by their peer within %.0f s; removing them anyway",
                left,
                self.stop_timeout,
            )
        await self._halt_io()
        try:
            await asyncio.wait_for(self.kernel.remove_all(), timeout=self.stop_timeout)
        except TimeoutError:
            log.error("removing our kernel state took over %.0f s; giving up", self.stop_timeout)
        except Exception as exc:
            log.error("removing our kernel state failed: %s", exc)
        self.installed.clear()

    async def _halt_io(self) -> None:
        """Stop timers, the kernel worker and event tasks, and close the IKE sockets."""
        self.restarts.cancel_all()
        self.fetcher.cancel_all()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in self._tasks:
            task.cancel()
        # Before the first await: after a restart stop's snapshot nothing may reach the engine.
        try:
            self.sockets.close()
        except Exception as exc:
            log.error("closing the IKE sockets failed: %s", exc)
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    # ------------------------------------------------------------------------ engine pump

    def call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call an engine action with the current time, then act on what it produced."""
        try:
            return method(*args, now=self.now(), **kwargs)
        finally:
            self._pump()

    def _on_datagram(self, data: bytes, local: Address, remote: Address) -> None:
        self.stats.messages["in"] += 1
        self.engine.receive_datagram(data, local, remote, self.now())
        self._pump()

    def _on_timer(self) -> None:
        self._timer = None
        self.engine.handle_timer(self.now())
        self._pump()

    def _pump(self) -> None:
        self._handle_events()
        if self.starts.waiting and not self._stopping:
            self.starts.fill(self.now())  # an event may have freed room in the window
            self._handle_events()
        dgrams = self.engine.datagrams_to_send()
        if dgrams and self.queue.busy:
            # Answer only once the kernel holds what the answer announces: a peer acting on
            # our CREATE_CHILD_SA or DELETE response must find our new inbound SA in place.
            self._enqueue(functools.partial(self._send, dgrams))
        else:
            self._send_now(dgrams)
        self._arm(self.engine.next_timer())

    def _handle_events(self) -> None:
        while (event := self.engine.next_event()) is not None:
            try:
                self._on_event(event)
            except Exception:
                log.exception("error handling %s", type(event).__name__)

    def _start(self, conn: str, children: list[str]) -> int:
        return self.engine.initiate(conn, children, now=self.now())

    def _arm(self, deadline: float | None) -> None:
        """One loop timer, at the engine's next deadline. Most events leave that deadline
        where it was: the timer then stays (a new TimerHandle per event adds up, issue 15)."""
        if self._timer is not None:
            if deadline == self._timer_at:
                return
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            self._timer = self.loop.call_at(max(deadline, self.now()), self._on_timer)

    # ------------------------------------------------------------------------ engine events

    def _on_event(self, event: ev.Event) -> None:
        """What each engine event does here: one method each, as aioquic's frame handlers."""
        handler = self._EVENT_HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)

    def _on_trace(self, event: ev.MessageTrace) -> None:
        self.messages.log(event)

    def _on_child_ready(self, event: ev.ChildSaReady) -> None:
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
        self._enqueue(functools.partial(self._install, event, self.now()))

    def _on_child_deleted(self, event: ev.ChildSaDeleted) -> None:
        log.info(
            "%s/%s: Child SA deleted (spi in %08x out %08x): %s",
            event.conn,
            event.child,
            event.spi_in,
            event.spi_out,
            event.reason,
        )
        self._close_action(event)  # a trap goes in before the SA's policies go
        self._enqueue(functools.partial(self._remove, event))

    def _on_ike_established(self, event: ev.IkeSaEstablished) -> None:
        log.info(
            "%s: IKE SA #%d established with %s (%s), %s",
            event.conn,
            event.ike_sa_id,
            event.remote[0],
            event.remote_id,
            event.proposal,
        )
        self.stats.on_event(event)
        self.starts.settled(event.ike_sa_id)
        self.restarts.succeeded(event.conn)
        self.failures.succeeded(event.conn)
        self.waiters.progress(
            event.conn,
            lambda: {
                "event": "ike_established",
                "message": f"IKE SA established with {event.remote_id} "
                f"at {event.remote[0]} ({event.proposal})",
                "proposal": event.proposal,
                "remote_id": event.remote_id,
            },
        )

    def _on_ike_rekeyed(self, event: ev.IkeSaRekeyed) -> None:
        log.info(
            "%s: IKE SA #%d rekeyed to #%d (%s)",
            event.conn,
            event.old_ike_sa_id,
            event.new_ike_sa_id,
            event.proposal,
        )
        self.stats.on_event(event)
        self.waiters.ike_rekeyed(event.old_ike_sa_id, event.new_ike_sa_id)

    def _on_ike_reauthenticated(self, event: ev.IkeSaReauthenticated) -> None:
        log.info(
            "%s: IKE SA #%d reauthenticated as #%d",
            event.conn,
            event.old_ike_sa_id,
            event.new_ike_sa_id,
        )

    def _on_ike_deleted(self, event: ev.IkeSaDeleted) -> None:
        log.info("%s: IKE SA #%d deleted: %s", event.conn, event.ike_sa_id, event.reason)
        self.messages.forget(event.ike_sa_id)
        self.starts.settled(event.ike_sa_id)
        self._enqueue(functools.partial(self._ike_gone, event))

    def _on_authentication_failed(self, event: ev.AuthenticationFailed) -> None:
        log.warning(
            "%s: authentication failed with %s: %s", event.conn, event.remote[0], event.reason
        )
        self.stats.on_event(event)
        diagnosis = self.failures.record(event, self.engine.specs)
        self.waiters.fail(
            event.conn,
            event.ike_sa_id,
            "AUTHENTICATION_FAILED",
            f"authentication failed: {event.reason}",
            {
                "local_id": event.local_id,
                "remote_id": event.remote_id,
                "diagnosis": diagnosis.lines()[1:],
            },
        )

    def _on_negotiation_failed(self, event: ev.NegotiationFailed) -> None:
        self.stats.on_event(event)
        details: dict[str, Any] = {
            "ours": offer_details(event.ours),
            "theirs": offer_details(event.theirs),
            "diagnosis": self.failures.record(event, self.engine.specs).lines()[1:],
        }
        log.warning(
            "%s: negotiation failed: %s (ours %s, theirs %s)",
            event.conn,
            event.reason,
            details["ours"],
            details["theirs"],
        )
        self.waiters.fail(event.conn, event.ike_sa_id, event.reason, failure_text(event), details)

    def _on_peer_dead(self, event: ev.PeerDead) -> None:
        log.warning("%s: peer %s is dead: %s", event.conn, event.remote[0], event.reason)
        self.stats.on_event(event)
        self.waiters.fail(event.conn, event.ike_sa_id, "PEER_DEAD", event.reason, {})
        self._dpd_action(event.conn)

    def _on_violation(self, event: ev.ProtocolViolation) -> None:
        log.debug("dropped a message from %s: %s", event.remote[0], event.reason)

    def _on_revocation_fetch(self, event: ev.RevocationFetchNeeded) -> None:
        self.fetcher.start(
            event, lambda sa_id, results: self.call(self.engine.revocation_fetched, sa_id, results)
        )

    _EVENT_HANDLERS: ClassVar[dict[type[ev.Event], Callable[[Daemon, Any], None]]] = {
        ev.MessageTrace: _on_trace,
        ev.ChildSaReady: _on_child_ready,
        ev.ChildSaDeleted: _on_child_deleted,
        ev.IkeSaEstablished: _on_ike_established,
        ev.IkeSaRekeyed: _on_ike_rekeyed,
        ev.IkeSaReauthenticated: _on_ike_reauthenticated,
        ev.IkeSaDeleted: _on_ike_deleted,
        ev.AuthenticationFailed: _on_authentication_failed,
        ev.NegotiationFailed: _on_negotiation_failed,
        ev.PeerDead: _on_peer_dead,
        ev.ProtocolViolation: _on_violation,
        ev.RevocationFetchNeeded: _on_revocation_fetch,
    }

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
            reqid = self.engine.trap_reqid(conn, child.name, self.now())
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

    def _close_action(self, gone: ev.ChildSaDeleted) -> None:
        """swanctl's close_action when the peer closed a Child SA (or its IKE SA) for good:
        not when a rekey or reauthentication replaced it (another SA of the child lives on)."""
        spec = self.engine.specs.get(gone.conn)
        if not gone.by_peer or spec is None or self._stopping:
            return
        child = next((c for c in spec.children if c.name == gone.child), None)
        if child is None or child.close_action == CloseAction.NONE:
            return
        if any(spi != gone.spi_in for spi in self.engine.child_spis(gone.conn, gone.child)):
            return
        log.info(
            "%s/%s: closed by the peer, close_action %s",
            gone.conn,
            gone.child,
            child.close_action.value,
        )
        if child.close_action == CloseAction.TRAP:
            if child.start_action != StartAction.TRAP:  # a trap child's policies stay anyway
                reqid = self.engine.trap_reqid(gone.conn, child.name, self.now())
                self._enqueue(functools.partial(self.kernel.install_trap, spec, child, reqid))
        else:
            self.loop.call_soon(self._reinitiate, gone.conn, child.name)

    def _reinitiate(self, conn: str, child: str) -> None:
        if conn in self.engine.specs and not self._stopping:
            with contextlib.suppress(LocalProtocolError):
                self.call(self.engine.initiate_child, conn, child)

    def _restart(self, conn: str, children: list[str]) -> None:
        if conn in self.engine.specs and not self._stopping:
            with contextlib.suppress(LocalProtocolError):
                self.call(self.engine.initiate, conn, children)

    def _send_now(self, dgrams: list[Datagram]) -> None:
        for dgram in dgrams:
            if dgram.keepalive:
                self.sockets.send_keepalive(dgram.local, dgram.remote)
            else:
                self.stats.messages["out"] += 1
                self.sockets.send(dgram.data, dgram.local, dgram.remote)

    async def _send(self, dgrams: list[Datagram]) -> None:
        self._send_now(dgrams)

    # ------------------------------------------------------------------------ kernel work

    def _enqueue(self, job: Callable[[], Any]) -> None:
        self.queue.put(job)

    def _delete_child(self, spi_in: int) -> None:
        self.call(self.engine.delete_child, spi_in)

    async def _install(self, ready: ev.ChildSaReady, agreed_at: float | None = None) -> None:
        try:
            await self.handover.install(ready)
        except Exception as exc:
            log.error("%s/%s: installing the Child SA failed: %s", ready.conn, ready.child, exc)
            self.stats.failed(ready.conn, ready.child, "KERNEL_ERROR")
            self.waiters.fail(ready.conn, ready.ike_sa_id, "KERNEL_ERROR", str(exc), {})
            with contextlib.suppress(Exception):
                self._delete_child(ready.spi_in)
            return
        if agreed_at is not None:
            self.stats.installed(ready, self.now() - agreed_at)
        self.waiters.progress(
            ready.conn,
            lambda: {
                "event": "child_installed",
                "message": f"Child SA {ready.child} installed ({ready.proposal}, "
                f"spi in {ready.spi_in:08x} out {ready.spi_out:08x})",
                "child": ready.child,
            },
        )
        self.failures.succeeded(ready.conn, ready.child)
        self.waiters.child_installed(ready)

    async def _remove(self, gone: ev.ChildSaDeleted) -> None:
        await self.handover.remove(gone)
        self.waiters.child_removed(gone, self._live_ike_ids)

    async def _ike_gone(self, event: ev.IkeSaDeleted) -> None:
        await self.handover.ike_gone(event.ike_sa_id, self.engine.has_child)
        self.waiters.ike_gone(event, self._live_ike_ids)

    def _live_ike_ids(self, conn: str) -> set[int]:
        return set(self.engine.ike_ids(conn))

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
        if self.drift.on_kernel_event(kev):
            return
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
        spi_in = self.handover.spi_in_for(kev.spi)
        if spi_in is None:
            return
        if kev.kind == "mapping" and kev.mapping is not None:
            self._on_mapping(spi_in, kev.mapping)
        elif kev.kind == "soft":
            log.info("Child SA spi %08x reached its soft limit, rekeying", kev.spi)
            with contextlib.suppress(LocalProtocolError, KeyError):
                self.call(self.engine.rekey_child, spi_in)
        elif kev.kind == "hard":
            log.info("Child SA spi %08x reached its hard limit, deleting", kev.spi)
            with contextlib.suppress(LocalProtocolError, KeyError):
                self.call(self.engine.delete_child, spi_in)

    def _on_mapping(self, spi_in: int, mapping: NatMapping) -> None:
        if not port_change(mapping):
            return
        with contextlib.suppress(LocalProtocolError):
            self.call(self.engine.peer_port_changed, spi_in, mapping.new)
        for ready in remap(self.installed, mapping):
            self._enqueue(functools.partial(self.kernel.update_encap, ready))

    # ------------------------------------------------------------------------ waiters

    def add_waiter(self, waiter: Waiter) -> None:
        self.waiters.add(waiter)
