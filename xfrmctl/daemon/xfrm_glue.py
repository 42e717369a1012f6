"""The daemon's kernel side on real XFRM: Child SAs, trap policies, counters, upcalls.

Ownership: every SA and policy template we install carries a reqid in [REQID_BASE,
REQID_BASE + 0xFFFF], so a restarted daemon removes exactly its own leftovers and never
touches objects that other software (or an admin with `ip xfrm`) installed.

Every install and removal goes through `xfrmctl.kernel.transaction`, the one definition of
the safe order (SAs, then in/fwd/out policies; removal the other way round, with rollback).
Removals are best effort: what the kernel refuses is logged, never raised, so a shutdown or a
peer's DELETE always finishes.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

from xfrmctl.daemon import ipcomp
from xfrmctl.daemon.glue_index import ChildTable, PolicyHolders, TrapTable
from xfrmctl.daemon.interfaces import InterfaceHolders
from xfrmctl.daemon.kernel_glue import (
    ChildCounters,
    KernelDrift,
    KernelEvent,
    KernelGlue,
    MissingPair,
    NatMapping,
)
from xfrmctl.daemon.offload import fall_back, offload_device
from xfrmctl.daemon.transforms import sa_algorithms
from xfrmctl.daemon.xfrm_records import (
    kept_record,
    kernel_mode,
    kernel_proto,
    policies_for,
    replace_ports,
    selector_of,
    spec_selector,
    state_flags,
    traffic_selector,
)
from xfrmctl.ike.events import ChildSaReady
from xfrmctl.ike.spec import ChildSpec, ConnectionSpec
from xfrmctl.ike.spec import Offload as OffloadMode
from xfrmctl.kernel import events as kev
from xfrmctl.kernel import reconcile as drift
from xfrmctl.kernel import sa as ksa
from xfrmctl.kernel import transaction as tx
from xfrmctl.kernel.bypass import bypass_socket
from xfrmctl.kernel.errors import XfrmError
from xfrmctl.kernel.links import Device
from xfrmctl.kernel.socket import Connection
from xfrmctl.kernel.transaction import DEFAULT_OWNERSHIP, ChildSA
from xfrmctl.kernel.types import (
    SA,
    Encap,
    Lifetime,
    Offload,
    Policy,
    PolicyId,
)
from xfrmctl.kernel.types import Mode as KMode

log = logging.getLogger("xfrmctl.kernel")

REQID_BASE = DEFAULT_OWNERSHIP.base  # the kernel layer's one definition of "ours"
REQID_SPAN = DEFAULT_OWNERSHIP.size


def ours(reqid: int) -> bool:
    return DEFAULT_OWNERSHIP.owns_reqid(reqid)


class XfrmGlue(KernelGlue):
    def __init__(self, netns: str | None = None) -> None:
        self.conn = Connection(netns)
        self._opened = False
        self.traps = TrapTable()  # reqid -> (connection, child), by connection too
        self._trap_policies: dict[int, list[Policy]] = {}
        self._trap_held = PolicyHolders()  # _trap_policies by policy identity
        self._children = ChildTable()  # by spi_in, with their policies, reqids and SAs indexed
        self._lingering: dict[int, ChildSA] = {}  # rekeyed inbound SAs in their grace time
        self._no_outbound: set[int] = set()  # spi_in of pairs whose outbound SA waits (rekey)
        # By spi_in, the offload device of each Child SA offloaded; the usual pair, in
        # software, has no entry (one fewer per Child SA: issue 15).
        self.offloaded: dict[int, str] = {}
        self._netns = netns
        self._stream: kev.EventStream | None = None
        self.interfaces = InterfaceHolders(netns)

    async def _open(self) -> None:
        if not self._opened:
            await self.conn.open()
            self._opened = True

    def prepare_socket(self, sock: socket.socket, family: int) -> None:
        try:
            bypass_socket(sock)
        except XfrmError as exc:
            raise OSError(exc.code, str(exc)) from exc

    def _reqid(self, engine_reqid: int) -> int:
        return REQID_BASE + (engine_reqid % REQID_SPAN)

    async def cleanup_stale(self) -> int:
        """Remove our reqids' leftovers, sparing what this instance already installed."""
        await self._open()
        keep_pol = {(p.selector, p.dir) for pols in self._trap_policies.values() for p in pols}
        keep_sa = set()
        for c in self._children.values():
            keep_pol |= {(p.selector, p.dir) for p in c.policies}
            keep_sa |= {s.id for s in (c.inbound, c.outbound, c.comp_in, c.comp_out) if s}

        def keep(obj: SA | Policy) -> bool:
            if isinstance(obj, Policy):
                return (obj.selector, obj.dir) in keep_pol
            return obj.id in keep_sa

        report = await tx.cleanup_stale(self.conn, DEFAULT_OWNERSHIP, keep)
        for err in report.errors:
            log.warning("stale cleanup: %s", err)
        links = await self.interfaces.remove_stale()
        if links:
            log.info("removed interfaces an earlier instance left: %s", ", ".join(links))
        return len(report.sas) + len(report.policies) - len(report.errors) + len(links)

    async def install_trap(self, spec: ConnectionSpec, child: ChildSpec, reqid: int) -> None:
        await self._open()
        if not spec.local_addrs or not spec.remote_addrs:
            raise XfrmError(f"{spec.name}/{child.name}: trap needs local and remote addresses")
        kreqid = self._reqid(reqid)
        selectors = [spec_selector(lt, rt) for lt in child.local_ts for rt in child.remote_ts]
        policies = policies_for(
            selectors,
            kernel_mode(child.mode),
            kernel_proto(child.protocol),
            kreqid,
            spec.local_addrs[0],
            spec.remote_addrs[0],
            child.kernel,
        )
        await self.interfaces.hold(("trap", kreqid), child.kernel.interface, spec.name)
        try:
            await tx.install_policies(self.conn, policies)
        except XfrmError:
            await self.interfaces.release(("trap", kreqid))
            raise
        self.traps[kreqid] = (spec.name, child.name)
        self._trap_policies[kreqid] = policies
        self._trap_held.put(kreqid, policies)
        log.info("%s/%s: trap policies installed (%d)", spec.name, child.name, len(policies))

    async def remove_traps(self, conn: str) -> None:
        await self._open()
        for kreqid, (name, child) in self.traps.of_conn(conn):
            del self.traps[kreqid]
            policies = self._trap_policies.pop(kreqid, [])
            self._trap_held.drop(kreqid)
            await self.interfaces.release(("trap", kreqid))
            if self._reqid_in_use(kreqid):
                continue  # the Child SA's removal takes the policies
            policies = [p for p in policies if self._held(p.id) is None]  # a live child's now
            await self._best_effort(f"{name}/{child}: trap removal", tx.remove_policies, policies)
            log.info("%s/%s: trap policies removed", name, child)

    def _reqid_in_use(self, kreqid: int) -> bool:
        return self._children.reqid_in_use(kreqid)

    def _held(self, pid: PolicyId) -> Policy | None:
        """The policy the traps and the live Child SAs stand on for a kernel identity (a live
        child's over a trap's). A Child SA's policy may have replaced one of these (same
        selector, another reqid): removing the child must put it back, not leave the
        selector without a policy, where its packets would go out in the clear."""
        mine = self._children.policies.get(pid)
        return mine if mine is not None else self._trap_held.get(pid)

    def _held_policies(self) -> dict[PolicyId, Policy]:
        """Every policy `_held` would answer, by identity (a reconcile's dump compares all)."""
        return {**self._trap_held.all(), **self._children.policies.all()}

    def trap_for_reqid(self, reqid: int) -> tuple[str, str] | None:
        return self.traps.get(reqid)

    async def _best_effort(
        self, what: str, op: Callable[..., Awaitable[None]], *args: Any, **kwargs: Any
    ) -> None:
        """Removal that logs what the kernel refused: a stop or a DELETE must always finish."""
        try:
            await op(self.conn, *args, **kwargs)
        except XfrmError as exc:
            log.error("%s: %s", what, exc)

    def _child(
        self, ready: ChildSaReady, offload: int | None = None, keyless: bool = False
    ) -> ChildSA:
        """The kernel objects of one Child SA; `offload` is the ifindex to offload to.

        `keyless` (adoption, whose `ready` has no keys): placeholder SAs the caller replaces.
        """
        reqid = self._reqid(ready.reqid)
        if keyless:
            sa_in = sa_out = SA(src=ready.remote, dst=ready.local, spi=ready.spi_in)
        else:
            sa_in, sa_out = self._sas(ready, reqid, offload)
        comp_in, comp_out = ipcomp.comp_sas(ready, kernel_mode(ready.mode), reqid)
        selectors = [selector_of(lt, rt) for lt in ready.local_ts for rt in ready.remote_ts]
        policies = policies_for(
            selectors,
            kernel_mode(ready.mode),
            kernel_proto(ready.protocol),
            reqid,
            ready.local,
            ready.remote,
            ready.kernel,
            ipcomp.uses_ipcomp(ready),
        )
        return ChildSA(sa_in, sa_out, tuple(policies), False, comp_in=comp_in, comp_out=comp_out)

    def _sas(self, r: ChildSaReady, reqid: int, offload: int | None) -> tuple[SA, SA]:
        """The ESP/AH pair; under IPComp in transport mode (the IPComp SA does the tunnel)."""
        mode, proto = kernel_mode(r.mode), kernel_proto(r.protocol)
        if ipcomp.uses_ipcomp(r):
            mode = KMode.TRANSPORT
        lt = r.lifetimes

        def limit(v: int) -> int | None:
            return v or None

        lifetime = Lifetime(
            soft_bytes=limit(lt.soft_bytes),
            hard_bytes=limit(lt.hard_bytes),
            soft_packets=limit(lt.soft_packets),
            hard_packets=limit(lt.hard_packets),
            soft_seconds=limit(lt.soft_seconds),
            hard_seconds=limit(lt.hard_seconds),
        )
        encr_id = r.encr.id if r.encr else None
        encr_bits = r.encr.key_length if r.encr else None
        integ_id = r.integ.id if r.integ else None
        opts = r.kernel
        packet = opts.hw_offload == OffloadMode.PACKET
        sas = []
        marks = {True: None, False: ipcomp.mark(opts.mark_out)}  # swanctl: no mark_in on SAs
        for src, dst, spi, ekey, ikey, encap, if_id, inbound in (
            (
                r.remote,
                r.local,
                r.spi_in,
                r.encr_key_in,
                r.integ_key_in,
                Encap(r.encap.remote_port, r.encap.local_port) if r.encap else None,
                opts.if_id_in,
                True,
            ),
            (
                r.local,
                r.remote,
                r.spi_out,
                r.encr_key_out,
                r.integ_key_out,
                Encap(r.encap.local_port, r.encap.remote_port) if r.encap else None,
                opts.if_id_out,
                False,
            ),
        ):
            aead, crypt, auth = sa_algorithms(encr_id, encr_bits, integ_id, ekey, ikey)
            sas.append(
                SA(
                    src=src,
                    dst=dst,
                    spi=spi,
                    proto=proto,
                    mode=mode,
                    reqid=reqid,
                    aead=aead,
                    crypt=crypt,
                    auth=auth,
                    lifetime=lifetime,
                    replay_window=opts.replay_window,
                    esn=r.esn,
                    encap=encap,
                    if_id=if_id,
                    mark=marks[inbound],
                    offload=None if offload is None else Offload(offload, inbound, packet),
                    flags=state_flags(mode, proto, src),
                )
            )
        return sas[0], sas[1]

    async def adopt(self, readies: list[ChildSaReady]) -> set[int]:
        """The kernel's own SAs (keys included) stand in for the ones we would have built."""
        await self._open()
        present = {(sa.dst, sa.spi, sa.proto): sa async for sa in ksa.dump_sas(self.conn)}
        found: set[int] = set()
        for r in readies:
            reqid, proto = self._reqid(r.reqid), kernel_proto(r.protocol)
            sa_in = present.get((r.local, r.spi_in, proto))
            sa_out = present.get((r.remote, r.spi_out, proto))
            if sa_in is None or sa_out is None or sa_in.reqid != reqid or sa_out.reqid != reqid:
                continue
            built = self._child(r, keyless=True)
            self._children[r.spi_in] = replace(built, inbound=sa_in, outbound=sa_out)
            self.offloaded.pop(r.spi_in, None)
            await self.interfaces.hold(("child", r.spi_in), r.kernel.interface, r.conn)
            found.add(r.spi_in)
        return found

    async def install_child(self, ready: ChildSaReady, outbound: bool = True) -> None:
        await self._open()
        device = None
        if ready.kernel.hw_offload != OffloadMode.NO:
            # pyroute2's blocking IPRoute runs an event loop of its own: not on ours. And only
            # here: a thread hop on every install would tax the common, software case.
            device = await asyncio.to_thread(offload_device, ready, self._netns)
        holder = ("child", ready.spi_in)
        await self.interfaces.hold(holder, ready.kernel.interface, ready.conn)
        try:
            child = await self._install_pair(ready, outbound, device)
        except BaseException:
            await self.interfaces.release(holder)
            raise
        # A pair whose outbound SA waits keeps it whole until `install_outbound`.
        self._children[ready.spi_in] = kept_record(child) if outbound else child
        if not outbound:
            self._no_outbound.add(ready.spi_in)
        if device and child.inbound.offload:
            self.offloaded[ready.spi_in] = device.name
        else:
            self.offloaded.pop(ready.spi_in, None)

    async def _install_pair(
        self, ready: ChildSaReady, outbound: bool, device: Device | None
    ) -> ChildSA:
        child = self._child(ready, device.index if device else None)
        try:
            await tx.install_child(self.conn, child, outbound=outbound, known=self._held)
        except XfrmError as exc:
            if device is None:
                raise
            fall_back(ready, device, exc)  # raises unless hw_offload is auto
            child = self._child(ready)
            await tx.install_child(self.conn, child, outbound=outbound, known=self._held)
        return child

    async def install_outbound(self, ready: ChildSaReady) -> None:
        await self._open()
        kept = self._children.get(ready.spi_in)
        child = self._full(ready, kept) if kept is not None else self._child(ready)
        await tx.install_outbound(self.conn, child)
        self._no_outbound.discard(ready.spi_in)
        if kept is not None and ready.spi_in in self._children:
            self._children[ready.spi_in] = kept_record(child)

    async def remove_child(self, ready: ChildSaReady, inbound: bool = True) -> None:
        await self._open()
        child = self._children.pop(ready.spi_in, None) or self._child(ready)
        self.offloaded.pop(ready.spi_in, None)
        self._no_outbound.discard(ready.spi_in)
        reqid = child.inbound.reqid
        if not inbound:
            self._lingering[ready.spi_in] = child
        # Policies shared with a trap or with the Child SA that replaced this one stay.
        keep = reqid in self.traps or self._reqid_in_use(reqid)
        if not keep:
            child = await self._restore_held(ready, child)
        await self._best_effort(
            f"{ready.conn}/{ready.child}: removing the Child SA",
            tx.remove_child,
            child,
            keep_policies=keep,
            keep_inbound=not inbound,
        )
        await self.interfaces.release(("child", ready.spi_in))

    async def _restore_held(self, ready: ChildSaReady, child: ChildSA) -> ChildSA:
        """Put back the trap's or other child's policies this child's replaced (before its SAs
        go, so the selector is never without one); returns the child without them."""
        held = {p.id: h for p in child.policies if (h := self._held(p.id)) is not None}
        restore = [held[p.id] for p in child.policies if p.id in held]
        if restore:
            await self._best_effort(
                f"{ready.conn}/{ready.child}: restoring shared policies",
                tx.install_policies,
                restore,
            )
        return replace(child, policies=tuple(p for p in child.policies if p.id not in held))

    async def remove_inbound(self, ready: ChildSaReady) -> None:
        await self._open()
        child = self._lingering.pop(ready.spi_in, None) or self._child(ready)
        await self._best_effort(
            f"{ready.conn}/{ready.child}: removing the old inbound SA", tx.remove_inbound, child
        )

    async def update_encap(self, ready: ChildSaReady) -> None:
        await self._open()
        child = self._children.get(ready.spi_in)
        if child is None or ready.encap is None:
            return
        e = ready.encap
        full = self._full(ready, child)
        sa_in = replace(
            full.inbound, encap=replace_ports(full.inbound.encap, e.remote_port, e.local_port)
        )
        sa_out = replace(
            full.outbound, encap=replace_ports(full.outbound.encap, e.local_port, e.remote_port)
        )
        for sa in (sa_in, sa_out):
            await ksa.update_sa(self.conn, sa)
        updated = replace(full, inbound=sa_in, outbound=sa_out)
        self._children[ready.spi_in] = updated if full is child else kept_record(updated)

    def _full(self, ready: ChildSaReady, kept: ChildSA) -> ChildSA:
        """`kept` with its SAs whole: as kept when they are (adopted from the kernel, or an
        outbound SA still waiting), else rebuilt from `ready`, on the same offload device."""
        if not kept.inbound.larval:
            return kept
        offload = kept.inbound.offload
        built = self._child(ready, offload.ifindex if offload is not None else None)
        return replace(built, policies=kept.policies, inbound_larval=kept.inbound_larval)

    def offload_of(self, spi_in: int) -> str:
        return self.offloaded.get(spi_in, "")

    async def counters(self, ready: ChildSaReady) -> ChildCounters:
        await self._open()
        child = self._children.get(ready.spi_in) or self._child(ready)
        try:
            # The SAs' own ids: a marked SA is only found with its mark.
            cin = await ksa.get_counters(self.conn, child.inbound.id, ready.remote)
            cout = await ksa.get_counters(self.conn, child.outbound.id, ready.local)
        except XfrmError:
            return ChildCounters()
        return ChildCounters(cin.bytes, cin.packets, cout.bytes, cout.packets)

    async def counters_all(self, readies: list[ChildSaReady]) -> dict[int, ChildCounters]:
        """One SA dump for all pairs (a metrics scrape), not two GETAE requests per pair."""
        await self._open()
        try:
            dumped = {key: counters async for key, counters in ksa.dump_sa_counters(self.conn)}
        except XfrmError:
            return {}
        found: dict[int, ChildCounters] = {}
        for ready in readies:
            child = self._children.get(ready.spi_in)
            if child is None:
                continue
            i, o = child.inbound, child.outbound
            cin, cout = dumped.get((i.dst, i.spi, i.proto)), dumped.get((o.dst, o.spi, o.proto))
            if cin is not None and cout is not None:
                found[ready.spi_in] = ChildCounters(
                    cin.bytes,
                    cin.packets,
                    cout.bytes,
                    cout.packets,
                    cin.replay_errors,
                    cin.integrity_failures,
                )
        return found

    async def remove_all(self) -> None:
        self.traps.clear()
        self._trap_policies.clear()
        self._trap_held.clear()
        self._children.clear()
        self._lingering.clear()
        self._no_outbound.clear()
        self.offloaded.clear()
        await self.interfaces.release_all()
        await self.cleanup_stale()  # with nothing to spare any more: everything of ours

    async def open_events(self) -> None:
        if self._stream is None:
            # SA/policy groups: drift. Never read: the echo of our own requests (the kernel
            # drops it). Never decoded: SA adds (drift is about removals), policy adds of our
            # reqids and the removals of SAs we no longer hold (what `_drift_detail` would
            # drop anyway).
            await self._open()
            stream = kev.EventStream(
                self._netns,
                kev.ALL_GROUPS,
                ignore=kev.SA_ADDS,
                owned_reqid=ours,
                held_sa=self._holds_sa,
                echo_of=self.conn.portid,
            )
            await stream.open()
            self._stream = stream

    async def events(self) -> AsyncIterator[KernelEvent]:
        await self.open_events()
        stream, self._stream = self._stream, None
        if stream is None:
            return
        try:
            async for event in stream:
                if isinstance(event, kev.Acquire):
                    tmpl = event.template
                    reqid = tmpl.reqid if tmpl is not None else 0
                    if not ours(reqid):
                        continue
                    sel = event.selector
                    ts = (
                        traffic_selector(sel.src, sel.proto, sel.sport),
                        traffic_selector(sel.dst, sel.proto, sel.dport),
                    )
                    yield KernelEvent("acquire", reqid=reqid, traffic_selectors=ts, detail=f"{sel}")
                elif isinstance(event, kev.Expire):
                    if ours(event.sa.reqid):
                        yield KernelEvent(
                            "hard" if event.hard else "soft", spi=event.sa.spi, reqid=event.sa.reqid
                        )
                elif (detail := self._drift_detail(event)) is not None:
                    yield KernelEvent("drift", detail=detail)
                elif isinstance(event, kev.Mapping) and ours(event.reqid):
                    yield KernelEvent(
                        "mapping",
                        reqid=event.reqid,
                        spi=event.sa_id.spi,
                        detail=f"{event.new_src}:{event.new_sport}",
                        mapping=NatMapping(
                            (event.old_src, event.old_sport), (event.new_src, event.new_sport)
                        ),
                    )
        finally:
            stream.close()

    # ------------------------------------------------------------------------ drift

    def _owned(self) -> tuple[dict[drift.SaKey, tuple[int, SA]], dict[PolicyId, Policy]]:
        """The SAs (key -> spi_in, SA) and policies (by id) we installed and still own."""
        sas: dict[drift.SaKey, tuple[int, SA]] = {}
        for spi_in, c in self._children.items():
            outs = () if spi_in in self._no_outbound else (c.outbound, c.comp_out)
            for sa in (c.inbound, c.comp_in, *outs):
                if sa is not None:
                    sas[drift.sa_key(sa)] = (spi_in, sa)
        return sas, self._held_policies()

    def _holds_sa(self, key: drift.SaKey) -> bool:
        return self._children.owner_of_sa(key, self._no_outbound) is not None

    def _drift_detail(self, event: kev.Event) -> str | None:
        """What a notification changed of ours, or None: our own removals are not drift (we
        forget an object before deleting it), nor our own installs (they match what we own)."""
        if isinstance(event, kev.SasFlushed | kev.PoliciesFlushed | kev.Overrun):
            return type(event).__name__
        if isinstance(event, kev.SaDeleted) and ours(event.sa.reqid):
            if self._holds_sa(drift.sa_key(event.sa)):
                return f"{event.sa.id} deleted"
        elif isinstance(event, kev.PolicyDeleted | kev.PolicyAdded):
            if isinstance(event, kev.PolicyDeleted) != DEFAULT_OWNERSHIP.owns_policy(event.policy):
                return None  # an add of ours, or a delete of someone else's
            mine = self._held(event.policy.id)
            if mine is None:
                return None
            if isinstance(event, kev.PolicyDeleted) and drift.same_policy(mine, event.policy):
                return f"{event.policy} deleted"
            if isinstance(event, kev.PolicyAdded):
                return f"foreign {event.policy} over ours"
        return None

    async def reconcile(self) -> KernelDrift:
        """One dump each; what is missing both before and after it is drift (a trap installed
        or removed while the dump ran is not)."""
        await self._open()
        before_sas, before_pols = self._owned()
        found = await drift.reconcile(
            self.conn, [sa for _, sa in before_sas.values()], before_pols.values()
        )
        after_sas, after_pols = self._owned()
        pairs: dict[int, list[str]] = {}
        for sa in found.missing_sas:
            key = drift.sa_key(sa)
            if key in after_sas:
                spi_in = after_sas[key][0]
                child = self._children[spi_in]
                inbound = key in {drift.sa_key(x) for x in (child.inbound, child.comp_in) if x}
                way = "inbound" if inbound else "outbound"
                pairs.setdefault(spi_in, []).append(f"{way} {sa.proto.label} spi {sa.spi:#010x}")

        def still(pols: list[Policy]) -> tuple[Policy, ...]:
            return tuple(after_pols[p.id] for p in pols if after_pols.get(p.id) == p)

        return KernelDrift(
            pairs=tuple(
                MissingPair(spi, self._children[spi].inbound.reqid, tuple(what))
                for spi, what in pairs.items()
            ),
            missing_policies=still(found.missing_policies),
            altered_policies=still(found.altered_policies),
            shadowed=tuple(f"{s.ours} shadowed by foreign {s.theirs}" for s in found.shadows),
        )

    async def repair_policies(self, policies: tuple[Policy, ...]) -> None:
        await self._open()
        await tx.install_policies(self.conn, policies)
