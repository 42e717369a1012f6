"""`IkeEndpoint`: the sans-IO IKEv2 engine a daemon drives (like aioquic's QuicConnection).

The host feeds datagrams and the time in, and takes datagrams, events and the next timer
deadline out. Nothing here reads a clock, opens a socket or logs: the host does all I/O.
"""

from __future__ import annotations

import secrets
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from xfrmctl.ike import (
    child_create,
    child_rekey,
    connect,
    create_child_sa,
    delete,
    ike_auth,
    ike_init,
    ike_rekey,
    invalid_spi,
    revocation_wait,
    sa_index,
    timers,
)
from xfrmctl.ike.cookies import CookieJar
from xfrmctl.ike.crypto.revocation_data import FetchResult
from xfrmctl.ike.errors import LocalProtocolError, ProtocolError
from xfrmctl.ike.events import (
    DELETED_BY_PEER,
    ChildSaDeleted,
    ChildSaReady,
    Event,
    IkeSaReauthenticated,
    IkeSaRekeyed,
    MessageTrace,
    ProtocolViolation,
)
from xfrmctl.ike.exchanges import IkeState
from xfrmctl.ike.half_open import HalfOpen
from xfrmctl.ike.iana import ExchangeType, ProtocolId
from xfrmctl.ike.message import Message, decode_message
from xfrmctl.ike.payloads import Payload, SkfPayload, SkPayload, TrafficSelector
from xfrmctl.ike.ratelimit import RateLimiter
from xfrmctl.ike.reqids import ReqidKey, ReqidTable, selector_set, selectors_of
from xfrmctl.ike.revocation_state import Revocations
from xfrmctl.ike.sa import Address, ChildSa, ChildState, IkeSa, RequestHandler
from xfrmctl.ike.settings import IKE_PORT, EndpointConfig
from xfrmctl.ike.spec import ConnectionSpec
from xfrmctl.ike.status import (
    ChildSaStatus,
    IkeSaBrief,
    IkeSaStatus,
    child_status,
    ike_brief,
    ike_status,
)
from xfrmctl.ike.trace import format_message

__all__ = ["IKE_PORT", "Address", "Datagram", "EndpointConfig", "IkeEndpoint"]

# Incoming requests by exchange, once the state table has let them through.
REQUEST_HANDLERS: dict[ExchangeType, RequestHandler] = {
    ExchangeType.IKE_AUTH: ike_auth.handle_request,
    ExchangeType.CREATE_CHILD_SA: create_child_sa.handle_request,
    ExchangeType.INFORMATIONAL: delete.handle_informational,
}

NATT_KEEPALIVE = b"\xff"


@dataclass(frozen=True)
class Datagram:
    data: bytes
    local: Address
    remote: Address
    keepalive: bool = False  # a NAT-T keepalive (RFC 3948 §2.3): 0xFF, no non-ESP marker


def _default_spi(protocol: ProtocolId) -> int:
    return 0x100 + secrets.randbelow(0xFFFFFFFF - 0x100)


class IkeEndpoint:
    """Owns every IKE SA of one daemon, keyed by our SPI."""

    def __init__(
        self,
        specs: Sequence[ConnectionSpec] = (),
        *,
        config: EndpointConfig | None = None,
        spi_allocator: Callable[[ProtocolId], int] | None = None,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
        wall_clock: Callable[[], datetime] | None = None,
        trace: bool = False,
    ) -> None:
        self.config = config or EndpointConfig()
        self.trace = trace  # emit a MessageTrace event per message sent and received
        self.random = random_bytes
        self.allocate_spi = spi_allocator or _default_spi
        # Certificate validity needs calendar time; the host may inject it for tests.
        self.wall_clock = wall_clock or (lambda: datetime.now(UTC))
        self.specs: dict[str, ConnectionSpec] = {}
        self.update_specs(specs)
        self.sas: dict[bytes, IkeSa] = {}
        self.half_open: HalfOpen[IkeSa] = HalfOpen()
        # Deadlines by SA; `_touched` SAs (and all after a `_rescan`) are re-filed before the
        # next timer question, as only they can have moved a deadline earlier.
        self._timers = timers.TimerIndex()
        self._touched: dict[int, IkeSa] = {}
        self._rescan = False
        self.cookies = CookieJar(self.random, self.config.cookie_secret_period)
        self.revocations = Revocations()
        self._events: deque[Event] = deque()
        self._out: list[Datagram] = []
        self._ids = 0
        self.reqid_table = ReqidTable(self._reqids_in_use)  # ike/reqids.py
        self.index = sa_index.SaIndex()  # by ID, connection and Child SA: no scans per event
        # Dropped and answered-without-state messages, by kind, for the host's statistics.
        self.counters: Counter[str] = Counter()
        cfg = self.config
        self.invalid_spi_limiter = RateLimiter(
            cfg.invalid_spi_rate,
            cfg.invalid_spi_burst,
            cfg.invalid_spi_total_rate,
            cfg.invalid_spi_total_burst,
            cfg.rate_limit_peers,
        )

    # -------------------------------------------------------------------------------- host API

    def update_specs(self, specs: Sequence[ConnectionSpec]) -> None:
        """Replace the configuration; existing SAs keep the spec they were made with."""
        new: dict[str, ConnectionSpec] = {}
        for s in specs:
            s.check()
            if s.name in new:
                raise LocalProtocolError(f"connection name {s.name!r} used twice")
            new[s.name] = s
        self.specs = new

    def receive_datagram(self, data: bytes, local: Address, remote: Address, now: float) -> None:
        """One UDP payload (non-ESP marker already stripped by the host on port 4500)."""
        try:
            msg = decode_message(data)
        except ProtocolError as exc:
            self.emit(ProtocolViolation(remote, f"undecodable datagram: {exc}"))
            return
        sa: IkeSa | None
        our_spi = msg.spi_r if msg.from_initiator else msg.spi_i
        last = msg.payloads[-1] if msg.payloads else None
        if self.trace and not isinstance(last, SkPayload | SkfPayload):
            known = self.sas.get(our_spi)
            sa_id = known.id if known is not None else None
            self.trace_message("in", msg, msg.payloads, local, remote, sa_id)
        if (
            msg.exchange == ExchangeType.IKE_SA_INIT
            and not msg.is_response
            and msg.spi_r == bytes(8)
        ):
            try:
                ike_init.handle_request(self, msg, data, local, remote, now)
            except ProtocolError as exc:
                self.emit(ProtocolViolation(remote, f"IKE_SA_INIT: {exc}"))
            except Exception as exc:  # a bug must cost one request, never the process
                if self.config.strict:
                    raise
                self.emit(ProtocolViolation(remote, f"internal error {type(exc).__name__}: {exc}"))
            return
        sa = self.sas.get(our_spi)
        if sa is not None:
            self._touch(sa)
        if sa is None or (sa.spi_i != msg.spi_i and sa.state != IkeState.INIT_SENT):
            self.emit(ProtocolViolation(remote, f"no IKE SA for {msg.describe()}"))
            if isinstance(last, SkPayload | SkfPayload):
                self.trace_message("in", msg, msg.payloads, local, remote)  # still encrypted
            invalid_spi.answer_unknown_spi(self, msg, local, remote, now)
            return
        if invalid_spi.is_unprotected_invalid_spi(msg):
            sa.violation(f"unauthenticated INVALID_IKE_SPI from {remote[0]}: checking liveness")
            invalid_spi.on_invalid_spi(sa, now)
            return
        if sa.state == IkeState.INIT_SENT and msg.exchange == ExchangeType.IKE_SA_INIT:
            sa.spi_r = msg.spi_r  # learnt from the response (zero for COOKIE/INVALID_KE)
        try:
            sa.receive(msg, data, local, remote, now)
        except revocation_wait.RevocationPending:
            pass  # IKE_AUTH parked until the host hands in the revocation fetches
        except ProtocolError as exc:
            sa.violation(str(exc))
        except Exception as exc:  # a bug must cost one SA, never the process
            if self.config.strict:
                raise
            sa.violation(f"internal error {type(exc).__name__}: {exc}")
            sa.delete(now, f"internal error handling {msg.describe()}", notify_peer=False)

    def datagrams_to_send(self) -> list[Datagram]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def events(self) -> list[Event]:
        out = list(self._events)
        self._events.clear()
        return out

    def next_timer(self) -> float | None:
        self._reindex()
        return self._timers.earliest()

    def handle_timer(self, now: float) -> None:
        self._reindex()
        due = self._timers.pop_due(now)
        for sa in due:  # re-filed even if one raises, with the links they have now
            self._touch(sa)
        for sa in due:
            if sa.state == IkeState.DEAD:
                continue
            try:
                timers.fire(sa, now)
            except ProtocolError as exc:
                sa.violation(str(exc))

    def revocation_fetched(
        self, ike_sa_id: int, results: Sequence[FetchResult], now: float
    ) -> None:
        """The answers to a RevocationFetchNeeded (data or error per URI): IKE_AUTH resumes.
        An IKE SA gone meanwhile is ignored."""
        sa = self.index.by_id.get(ike_sa_id)
        if sa is None or sa.state == IkeState.DEAD:
            return
        self._touch(sa)
        try:
            revocation_wait.fetched(sa, results, now)
        except ProtocolError as exc:
            sa.violation(str(exc))

    def initiate(
        self,
        conn_name: str,
        child_names: Sequence[str] | None = None,
        now: float = 0.0,
        *,
        local: Address | None = None,
        remote: Address | None = None,
        traffic_selectors: tuple[TrafficSelector, ...] | None = None,
    ) -> int:
        """Start IKE_SA_INIT; the first child goes in IKE_AUTH, others via CREATE_CHILD_SA."""
        spec = self._spec(conn_name)
        names = [c.name for c in spec.children] if child_names is None else list(child_names)
        for n in names:
            spec.child(n)
        if local is None:
            if not spec.local_addrs:
                raise LocalProtocolError(f"connection {conn_name!r}: no local address to use")
            local = (spec.local_addrs[0], self.config.ike_port)
        if remote is None:
            if not spec.remote_addrs:
                raise LocalProtocolError(f"connection {conn_name!r}: no remote address to use")
            remote = (spec.remote_addrs[0], spec.remote_port)
        wanted = [(n, traffic_selectors if i == 0 else None) for i, n in enumerate(names)]
        return connect.initiate(self, spec, local, remote, wanted, now).id

    def initiate_child(
        self,
        conn_name: str,
        child_name: str,
        now: float,
        traffic_selectors: tuple[TrafficSelector, ...] | None = None,
    ) -> int:
        """New Child SA on an established IKE SA of the connection, or a new IKE SA for it.

        `traffic_selectors` are the packet's (from an ACQUIRE): sent first so the peer can
        narrow to the right policy (RFC 7296 §2.9).
        """
        spec = self._spec(conn_name)
        spec.child(child_name)
        for sa in self.index.of_conn(conn_name):
            if sa.spec is not None and sa.state in (
                IkeState.ESTABLISHED,
                IkeState.INIT_SENT,
                IkeState.AUTH_SENT,
            ):
                self._touch(sa)
                if sa.state == IkeState.ESTABLISHED:
                    sa.queue(child_create.CreateChildTask(child_name, traffic_selectors), now)
                else:
                    sa.pending_children = [*sa.pending_children, (child_name, traffic_selectors)]
                return sa.id
        return self.initiate(conn_name, [child_name], now, traffic_selectors=traffic_selectors)

    def rekey_child(self, spi_in: int, now: float) -> None:
        sa, child = self._child(spi_in)
        if child.state == ChildState.INSTALLED:
            child_rekey.start(sa, child, now)

    def delete_child(self, spi_in: int, now: float) -> None:
        sa, child = self._child(spi_in)
        self.remove_child(sa, child, now, "deleted by request", notify_peer=True)

    def peer_port_changed(self, spi_in: int, remote: Address, now: float) -> bool:
        """The peer's NAT moved it to another port (the kernel saw authenticated ESP of this
        Child SA arrive from `remote`, RFC 3948): send IKE there too, as strongSwan does on
        XFRM_MSG_MAPPING. Only the port may change; True when the IKE SA moved."""
        sa, _ = self._child(spi_in)
        if not sa.nat_remote or sa.remote[0] != remote[0] or sa.remote == remote:
            return False
        sa.remote = remote
        return True

    def rekey_ike(self, ike_sa_id: int, now: float) -> None:
        sa = self._sa(ike_sa_id)
        if sa.state == IkeState.ESTABLISHED:
            ike_rekey.start(sa, now)

    def delete_ike(self, ike_sa_id: int, now: float) -> None:
        self._sa(ike_sa_id).delete(now, "deleted by request", notify_peer=True)

    def terminate_all(self, now: float) -> None:
        self._rescan = True
        for sa in list(self.sas.values()):
            sa.delete(now, "terminating", notify_peer=True)

    def ike_sas(self, conn: str | None = None) -> list[IkeSaStatus]:
        """Snapshots of every IKE SA, or only of connection `conn`'s: a snapshot formats
        proposals and selectors, so one connection's must not cost every SA's."""
        sas = self.sas.values() if conn is None else self.index.of_conn(conn)
        return [ike_status(sa) for sa in sas]

    def ike_briefs(self) -> list[IkeSaBrief]:
        return [ike_brief(sa) for sa in self.sas.values()]

    def child_sas(self) -> list[ChildSaStatus]:
        return [child_status(sa, c) for sa in self.sas.values() for c in sa.children]

    # Cheap questions for the host's bookkeeping: no snapshot formatted, no scan of all SAs.

    def ike_ids(self, conn: str, state: IkeState | None = None) -> list[int]:
        """IDs of connection `conn`'s IKE SAs (in `state` only, if given)."""
        return [s.id for s in self.index.of_conn(conn) if state is None or s.state == state]

    def child_spis(
        self, conn: str, child: str | None = None, state: ChildState | None = None
    ) -> list[int]:
        """Inbound SPIs of connection `conn`'s Child SAs (of config `child`, in `state`)."""
        return [
            c.spi_in
            for s in self.index.of_conn(conn)
            for c in s.children
            if child in (None, c.spec.name) and state in (None, c.state)
        ]

    def has_child(self, spi_in: int) -> bool:
        """Whether a live IKE SA holds the Child SA with inbound SPI `spi_in`."""
        return self.index.owner(spi_in, self.sas.values()) is not None

    # -------------------------------------------------------------------------------- for SAs

    def next_id(self) -> int:
        self._ids += 1
        return self._ids

    def reserve_ids(self, ids: Sequence[int]) -> None:
        """IDs taken by SAs resumed from a snapshot: new ones are counted after them."""
        self._ids = max(self._ids, *ids)

    def reqid(
        self,
        conn: str,
        child: str,
        local_ts: Sequence[TrafficSelector],
        remote_ts: Sequence[TrafficSelector],
        now: float | None = None,
    ) -> int:
        """One reqid per child config and selector set, kept across rekeys (as strongSwan).

        The kernel picks an outbound SA by its policy template's reqid, and checks that an
        inbound packet came through an SA of the reqid its policy names. Two Child SAs of one
        config narrowed to different selectors (a peer's /32 children under our /24) must not
        share one, or each direction may take the other's SA and the peer drops the packet.
        A child agreed on exactly its configured selectors gets its trap's reqid. Raises
        ReqidsExhausted when every reqid is taken (ike/reqids.py).
        """
        return self.reqid_table.get(_reqid_key(conn, child, local_ts, remote_ts), now)

    def trap_reqid(self, conn: str, child: str, now: float | None = None) -> int:
        """The reqid of `child`'s configured selectors: its trap policies' and ACQUIREs'."""
        return self.reqid_table.get(self._trap_key(conn, child), now)

    def _trap_key(self, conn: str, child: str) -> ReqidKey:
        cfg = next(c for c in self.specs[conn].children if c.name == child)
        local = [ts.to_selector() for ts in cfg.local_ts]
        return _reqid_key(conn, child, local, [ts.to_selector() for ts in cfg.remote_ts])

    def _reqids_in_use(self) -> tuple[set[int], set[ReqidKey]]:
        """What keeps a reqid: a Child SA that carries it, or a configured child (its trap)."""
        live = {c.reqid for sa in self.sas.values() for c in sa.children}
        kept = {self._trap_key(n, c.name) for n, spec in self.specs.items() for c in spec.children}
        return live, kept

    def reqids(self) -> dict[ReqidKey, int]:
        return self.reqid_table.items()

    def adopt_reqids(self, reqids: dict[ReqidKey, int]) -> None:
        """Keep a previous daemon's reqids, as its kernel policies and states carry them."""
        self.reqid_table.adopt(
            {
                (c, ch, selector_set(selectors_of(lts)), selector_set(selectors_of(rts))): r
                for (c, ch, lts, rts), r in reqids.items()
            }
        )

    def emit(self, event: Event) -> None:
        if isinstance(event, ChildSaReady):
            self.index.child_ready(event.spi_in, event.ike_sa_id)
        elif isinstance(event, ChildSaDeleted):
            self.index.child_gone(event.spi_in)
        elif isinstance(event, IkeSaRekeyed | IkeSaReauthenticated):
            # Children and tasks moved between the two IKE SAs: file both (and their links).
            for sa_id in (event.old_ike_sa_id, event.new_ike_sa_id):
                if (sa := self.index.by_id.get(sa_id)) is not None:
                    self._touch(sa)
        self._events.append(event)

    def count(self, what: str) -> None:
        self.counters[what] += 1

    def send(self, packets: list[bytes], local: Address, remote: Address) -> None:
        self._out.extend(Datagram(p, local, remote) for p in packets)

    def send_keepalive(self, local: Address, remote: Address) -> None:
        self._out.append(Datagram(NATT_KEEPALIVE, local, remote, keepalive=True))

    def trace_message(
        self,
        direction: str,
        msg: Message,
        payloads: Sequence[Payload],
        local: Address,
        remote: Address,
        ike_sa_id: int | None = None,
    ) -> None:
        """Emit a MessageTrace when tracing is on; formatting costs nothing otherwise."""
        if not self.trace:
            return
        try:
            lines = format_message(msg, payloads, direction, local, remote)
        except Exception as exc:  # a debugging aid must never cost a message
            lines = (f"{direction} {msg.describe()}: cannot trace: {type(exc).__name__}",)
        self.emit(MessageTrace(direction, remote, ike_sa_id, lines))

    def trace_note(self, remote: Address, ike_sa_id: int | None, text: str) -> None:
        """A one-line MessageTrace for a retransmission, which has no new content to decode."""
        if self.trace:
            direction = text.split(" ", 1)[0]
            self.emit(MessageTrace(direction, remote, ike_sa_id, (text,)))

    def jitter(self, spread: float) -> float:
        """Uniform in [0, spread) from the injected randomness."""
        if spread <= 0:
            return 0.0
        return int.from_bytes(self.random(4), "big") / 2**32 * spread

    def new_spi(self) -> bytes:
        while True:
            spi = self.random(8)
            if spi != bytes(8) and spi not in self.sas:
                return spi

    def register(self, sa: IkeSa) -> None:
        self.sas[sa.our_spi] = sa
        self.index.add(sa)
        self._touch(sa)

    def forget(self, sa: IkeSa) -> None:
        if self.sas.get(sa.our_spi) is sa:
            del self.sas[sa.our_spi]
        self.index.remove(sa)
        self.half_open.remove(sa)
        self._timers.remove(sa)
        revocation_wait.forget(sa)
        # Dropping an IKE SA hands its tasks to a successor (sa.delete): file the SAs still
        # linked to it. The reauthenticated one it re-arms was touched when the call began
        # (`_touch` files an SA's links as they are then), before the link was cut.
        self._touch(sa)

    def touch(self, sa: IkeSa) -> None:
        """`sa` may have an earlier deadline than the timer index holds: file it again."""
        self._touch(sa)

    def half_open_count(self) -> int:
        return len(self.half_open)

    def candidates(self, local: Address, remote: Address) -> list[ConnectionSpec]:
        """Specs a responder may use for a peer, by addresses only (IDs come in IKE_AUTH)."""
        return [
            s
            for s in self.specs.values()
            if (not s.local_addrs or local[0] in s.local_addrs)
            and (not s.remote_addrs or remote[0] in s.remote_addrs)
        ]

    def request_handler(self, exchange: int) -> RequestHandler:
        return REQUEST_HANDLERS[ExchangeType(exchange)]

    def remove_child(
        self, sa: IkeSa, child: ChildSa, now: float, reason: str, notify_peer: bool
    ) -> None:
        """Delete a Child SA, through an INFORMATIONAL exchange when `notify_peer`."""
        # After an IKE rekey the child may live on the new IKE SA: find its current owner.
        found = self.index.owner(child.spi_in, self.sas.values())
        if found is not None and found[1] is child:
            sa = found[0]
        if notify_peer and sa.state == IkeState.ESTABLISHED:
            if child.state != ChildState.DELETING:
                child.state = ChildState.DELETING
                sa.queue(delete.DeleteChildTask(child, reason), now)
            return
        if child in sa.children:
            sa.children.remove(child)
            self.emit(
                ChildSaDeleted(
                    sa.conn_name,
                    child.spec.name,
                    child.unique_id,
                    child.protocol,
                    child.spi_in,
                    child.spi_out,
                    sa.local[0],
                    sa.remote[0],
                    reason,
                    by_peer=reason == DELETED_BY_PEER,
                )
            )

    # -------------------------------------------------------------------------------- timers

    def _touch(self, sa: IkeSa) -> None:
        """`sa`, or one it is linked with, may get an earlier deadline in this call."""
        for s in _linked(sa):
            self._touched[s.id] = s
            self.index.touch(s)

    def _reindex(self) -> None:
        """File the touched SAs' deadlines (every SA's after a rescan)."""
        touched, self._touched = self._touched, {}
        if self._rescan:
            self._rescan = False
            self._timers.rebuild(self.sas.values())
        else:
            for sa in touched.values():
                for s in _linked(sa):  # links made during the call
                    if self.sas.get(s.our_spi) is s:
                        self._timers.update(s)
                    else:
                        self._timers.remove(s)
        if self.config.strict:
            self._check_timer_index()
            self.index.check(self.sas.values())

    def _check_timer_index(self) -> None:
        """Tests run strict: a deadline the index missed fails them instead of a late timer."""
        for sa in self.sas.values():
            actual = timers.next_deadline(sa) if sa.state != IkeState.DEAD else None
            recorded = self._timers.recorded(sa)
            if actual is not None and (recorded is None or recorded > actual):
                raise AssertionError(
                    f"timer index: IKE SA #{sa.id} ({sa.state.value}) due at {actual}, "
                    f"filed at {recorded}"
                )

    # -------------------------------------------------------------------------------- lookups

    def _spec(self, name: str) -> ConnectionSpec:
        try:
            return self.specs[name]
        except KeyError:
            raise LocalProtocolError(f"no connection named {name!r}") from None

    def _sa(self, ike_sa_id: int) -> IkeSa:
        sa = self.index.by_id.get(ike_sa_id)
        if sa is None:
            raise LocalProtocolError(f"no IKE SA with id {ike_sa_id}")
        self._touch(sa)
        return sa

    def _child(self, spi_in: int) -> tuple[IkeSa, ChildSa]:
        found = self.index.owner(spi_in, self.sas.values())
        if found is None:
            raise LocalProtocolError(f"no Child SA with inbound SPI {spi_in:#010x}")
        self._touch(found[0])
        return found


def _linked(sa: IkeSa) -> Iterator[IkeSa]:
    """`sa` and the IKE SAs its exchanges may change: its successors after rekeys, and the
    other side of a reauthentication."""
    yield sa
    heir = sa.replaced_by
    while heir is not None:
        yield heir
        heir = heir.replaced_by
    for other in (sa.reauth_of, sa.reauth_by):
        if other is not None:
            yield other


def _reqid_key(
    conn: str, child: str, local: Iterable[TrafficSelector], remote: Iterable[TrafficSelector]
) -> ReqidKey:
    return conn, child, selector_set(local), selector_set(remote)
