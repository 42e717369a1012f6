"""One IKE SA: its keys, message IDs, window of one request, retransmissions and response cache.

Exchanges are tasks (as in strongSwan): a queue of requests we want to make, at most one in
flight (window size 1, RFC 7296 §2.3). Incoming requests go to the handler the endpoint keeps
for their exchange, once the state table in `exchanges.py` allows them; incoming responses go
to the task that sent the request. When each lifetime falls due is `timers.py`'s business.

This module sits below every exchange: it knows tasks only through `Task`, and the endpoint
only through `Host`, so no exchange module is imported here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Protocol

from xfrmctl.ike.cookies import CookieJar
from xfrmctl.ike.crypto.algorithms import Encr, Integ, Prf
from xfrmctl.ike.crypto.keys import IkeKeys
from xfrmctl.ike.errors import MalformedMessage, RemoteProtocolError
from xfrmctl.ike.events import Event, IkeSaDeleted, ProtocolViolation, UdpEncap
from xfrmctl.ike.exchanges import (
    Dispatch,
    IkeState,
    Transition,
    check_payloads,
    dispatch_for,
    next_state,
)
from xfrmctl.ike.half_open import HalfOpen
from xfrmctl.ike.iana import ExchangeType, NotifyType, ProtocolId
from xfrmctl.ike.message import Message
from xfrmctl.ike.payloads import (
    DeletePayload,
    NotifyPayload,
    Payload,
    SkfPayload,
    TrafficSelector,
)
from xfrmctl.ike.ratelimit import RateLimiter
from xfrmctl.ike.settings import EndpointConfig
from xfrmctl.ike.sk import Reassembly, SkKeys, decode_inner, protect, unprotect
from xfrmctl.ike.spec import ChildSpec, ConnectionSpec, Mode
from xfrmctl.ike.transforms import Proposal, Transform

if TYPE_CHECKING:
    from xfrmctl.ike.revocation_state import Revocations

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Address = tuple[IPAddress, int]


NO_CERTREQ: frozenset[bytes] = frozenset()  # shared: an empty frozenset is 216 bytes


class Task:
    """One exchange we initiate: `build` the request, then `on_response` or `on_give_up`.

    Subclasses override what they need; the class attributes are the options an exchange
    may declare (read by the IKE SA, never probed with getattr).
    """

    exchange: ExchangeType
    # Moves to the successor IKE SA when this one is rekeyed while the task waits.
    follows_rekey = False
    # Give up this long after the first transmission, if sooner than retransmissions would.
    give_up_after: float | None = None

    def build(self, sa: IkeSa, now: float) -> list[Payload] | None:
        """Request payloads, or None when the task has become moot."""
        raise NotImplementedError

    def on_response(self, sa: IkeSa, payloads: list[Payload], now: float) -> None:
        """The peer answered (payloads already decrypted and checked against the rules)."""

    def on_give_up(self, sa: IkeSa, now: float) -> None:
        """No answer after every retransmission."""

    def on_dropped(self, sa: IkeSa, now: float) -> None:
        """The IKE SA is dropped while this task is in flight (e.g. a rekey collision lost)."""


class Host(Protocol):
    """What an IKE SA and its exchanges use of the endpoint that owns them (`IkeEndpoint`)."""

    config: EndpointConfig
    random: Callable[[int], bytes]
    allocate_spi: Callable[[ProtocolId], int]
    wall_clock: Callable[[], datetime]
    specs: dict[str, ConnectionSpec]
    sas: dict[bytes, IkeSa]
    half_open: HalfOpen[IkeSa]
    cookies: CookieJar
    invalid_spi_limiter: RateLimiter
    revocations: Revocations  # CRL/OCSP cache and the IKE SAs waiting for a fetch

    def next_id(self) -> int: ...
    def reserve_ids(self, ids: Sequence[int]) -> None: ...
    def reqid(
        self,
        conn: str,
        child: str,
        local_ts: Sequence[TrafficSelector],
        remote_ts: Sequence[TrafficSelector],
        now: float | None = None,
    ) -> int: ...
    def trap_reqid(self, conn: str, child: str, now: float | None = None) -> int: ...
    def new_spi(self) -> bytes: ...
    def jitter(self, spread: float) -> float: ...
    def emit(self, event: Event) -> None: ...
    def count(self, what: str) -> None: ...
    def send(self, packets: list[bytes], local: Address, remote: Address) -> None: ...
    def send_keepalive(self, local: Address, remote: Address) -> None: ...
    def trace_message(
        self,
        direction: str,
        msg: Message,
        payloads: Sequence[Payload],
        local: Address,
        remote: Address,
        ike_sa_id: int | None = None,
    ) -> None: ...
    def trace_note(self, remote: Address, ike_sa_id: int | None, text: str) -> None: ...
    def register(self, sa: IkeSa) -> None: ...
    def forget(self, sa: IkeSa) -> None: ...
    def touch(self, sa: IkeSa) -> None: ...
    def candidates(self, local: Address, remote: Address) -> list[ConnectionSpec]: ...
    def request_handler(self, exchange: int) -> RequestHandler: ...
    def remove_child(
        self, sa: IkeSa, child: ChildSa, now: float, reason: str, notify_peer: bool
    ) -> None: ...


class ChildState(Enum):
    INSTALLED = "installed"
    REKEYING = "rekeying"
    REKEYED = "rekeyed"  # replaced; deleted once the peer has the new one
    DELETING = "deleting"


@dataclass(eq=False, slots=True)
class ChildSa:
    spec: ChildSpec
    unique_id: int
    reqid: int
    protocol: ProtocolId
    spi_in: int
    spi_out: int
    proposal: Proposal
    encr: Transform | None
    integ: Transform | None
    esn: bool
    mode: Mode
    local_ts: tuple[TrafficSelector, ...]
    remote_ts: tuple[TrafficSelector, ...]
    rekey_at: float | None
    expire_at: float
    state: ChildState = ChildState.INSTALLED
    tfc_padding: bool = True
    # the lower nonce of the rekey that made it, for collisions (RFC 7296 §2.8.1); else None
    lowest_nonce: bytes | None = field(default=None, repr=False)
    replaced_by: ChildSa | None = None
    cpi_in: int = 0  # IPComp CPIs (RFC 3173); 0: no IPComp
    cpi_out: int = 0


@dataclass(slots=True)
class Outstanding:
    task: Task
    exchange: ExchangeType
    message_id: int
    packets: list[bytes]
    tries: int
    next_at: float
    first_sent: float


@dataclass(slots=True)
class IkeCrypto:
    prf: Prf
    integ: Integ | None
    encr: Encr
    keys: IkeKeys = field(repr=False)
    initiator: bool  # original initiator of this IKE SA: picks the key direction

    def out_keys(self) -> SkKeys:
        k = self.keys
        if self.initiator:
            return SkKeys(self.encr, self.integ, k.sk_ei, k.sk_ai)
        return SkKeys(self.encr, self.integ, k.sk_er, k.sk_ar)

    def in_keys(self) -> SkKeys:
        k = self.keys
        if self.initiator:
            return SkKeys(self.encr, self.integ, k.sk_er, k.sk_ar)
        return SkKeys(self.encr, self.integ, k.sk_ei, k.sk_ai)


RequestHandler = Callable[["IkeSa", Message, list[Payload], float], list[Payload]]


class TaskQueue(list[Task]):
    """An IKE SA's queued exchanges: the deque methods the tasks use, on a list (an empty
    deque costs 624 bytes, an empty list 56; queues hold a few tasks at most)."""

    __slots__ = ()

    def appendleft(self, task: Task) -> None:
        self.insert(0, task)

    def popleft(self) -> Task:
        return self.pop(0)

    def extendleft(self, tasks: Iterable[Task]) -> None:
        """As deque.extendleft: each goes to the front in turn, so they end up reversed."""
        for task in tasks:
            self.insert(0, task)


class IkeSa:
    # One per IKE SA, thousands per daemon: no per-instance __dict__ (about 1.5 KiB each).
    __slots__ = (
        "adopted",
        "candidates",
        "children",
        "close_after_response",
        "created",
        "crypto",
        "dpd_at",
        "ep",
        "established_at",
        "expire_at",
        "hard_at",
        "id",
        "init_request",
        "init_response",
        "initiator",
        "invalid_spi_hint_at",
        "keepalive_sent",
        "last_inbound",
        "last_response",
        "local",
        "lowest_nonce",
        "my_mid",
        "nat_local",
        "nat_remote",
        "ni",
        "nr",
        "on_abandoned",
        "outstanding",
        "peer_certreq",
        "peer_fragmentation",
        "peer_hash_algorithms",
        "peer_id",
        "peer_mid",
        "pending_children",
        "proposal",
        "reassembly",
        "reauth_at",
        "reauth_by",
        "reauth_of",
        "rekey_at",
        "remote",
        "replaced_by",
        "retry_at",
        "spec",
        "spi_i",
        "spi_r",
        "state",
        "tasks",
    )

    def __init__(
        self,
        ep: Host,
        spec: ConnectionSpec | None,
        initiator: bool,
        spi_i: bytes,
        spi_r: bytes,
        local: Address,
        remote: Address,
        now: float,
        resumed: bool = False,  # rebuilt ESTABLISHED from a snapshot (`snapshot.py`)
    ) -> None:
        self.ep = ep
        self.id = ep.next_id()
        self.spec = spec
        self.initiator = initiator
        self.spi_i = spi_i
        self.spi_r = spi_r
        self.local = local
        self.remote = remote
        self.state = (
            IkeState.ESTABLISHED
            if resumed
            else IkeState.INIT_SENT
            if initiator
            else IkeState.INIT_RESPONDED
        )
        self.created = now
        self.crypto: IkeCrypto | None = None
        self.proposal: Proposal | None = None
        self.ni = b""
        self.nr = b""
        self.init_request = b""
        self.init_response = b""
        self.peer_id: str = ""
        self.children: list[ChildSa] = []
        self.my_mid = 0
        self.peer_mid = 0
        self.outstanding: Outstanding | None = None
        self.tasks = TaskQueue()
        self.last_response: tuple[int, list[bytes]] | None = None
        self.reassembly: dict[bool, Reassembly] | None = None  # made by a first fragment
        self.nat_local = False
        self.nat_remote = False
        self.peer_fragmentation = False
        self.peer_hash_algorithms: list[int] | None = None
        self.peer_certreq = NO_CERTREQ  # CA key hashes (RFC 7296 §3.7)
        self.rekey_at: float | None = None
        self.reauth_at: float | None = None
        self.hard_at: float | None = None  # over_time past the first rekey/reauth: delete
        self.reauth_of: IkeSa | None = None  # on a new IKE SA made to reauthenticate this one
        # Called when this IKE SA is dropped before it took over (a reauthentication's).
        self.on_abandoned: Callable[[IkeSa, float], None] | None = None
        self.reauth_by: IkeSa | None = None  # on the old IKE SA while that is under way
        self.dpd_at: float | None = None
        self.invalid_spi_hint_at: float | None = None  # last liveness check INVALID_IKE_SPI began
        self.last_inbound = now
        self.keepalive_sent = now  # NAT-T keepalives are due keep_alive after this
        self.established_at: float | None = None  # engine clock, for status
        self.retry_at: float | None = None
        self.expire_at: float | None = None  # drop silently then (redundant rekey SAs)
        self.close_after_response = ""
        self.lowest_nonce: bytes | None = None  # of the rekey that made it (§2.8.2)
        self.replaced_by: IkeSa | None = None
        self.candidates: tuple[ConnectionSpec, ...] = ()  # responder, until authenticated
        # Children to set up with the IKE SA; a shared empty tuple once none (most SAs).
        self.pending_children: Sequence[tuple[str, tuple[TrafficSelector, ...] | None]] = ()
        self.adopted = resumed

    # -------------------------------------------------------------------------------- identity

    @property
    def our_spi(self) -> bytes:
        return self.spi_i if self.initiator else self.spi_r

    @property
    def conn_name(self) -> str:
        return self.spec.name if self.spec else ""

    @property
    def nat(self) -> bool:
        return self.nat_local or self.nat_remote

    def encap(self) -> UdpEncap | None:
        return UdpEncap(self.local[1], self.remote[1]) if self.nat else None

    def keepalive_due(self) -> float | None:
        """When the next NAT-T keepalive is due: only while established behind a NAT of ours.

        RFC 3948 §4: the host behind the NAT keeps its UDP mapping alive, so the peer outside
        can still reach it after a long silence (the kernel's ESP does not count: we cannot
        see it, and one byte every `keep_alive` seconds costs nothing).
        """
        interval = self.spec.keep_alive if self.spec is not None else 0.0
        if self.state != IkeState.ESTABLISHED or not self.nat_local or interval <= 0:
            return None
        return self.keepalive_sent + interval

    def lookup_children(self) -> list[ChildSa]:
        """Our children and, after an IKE rekey, those that moved to the new IKE SA."""
        out = list(self.children)
        heir = self.replaced_by
        while heir is not None:
            out += heir.children
            heir = heir.replaced_by
        return out

    def _hand_over(self, now: float) -> None:
        """Requests about Child SAs still pending on a rekeyed IKE SA go to its successor."""
        heir = self.replaced_by
        while heir is not None and heir.state == IkeState.DEAD:
            heir = heir.replaced_by
        if heir is None or heir.state != IkeState.ESTABLISHED:
            return
        pending = [self.outstanding.task] if self.outstanding else []
        pending += list(self.tasks)
        for task in reversed(pending):
            if task.follows_rekey:
                heir.tasks.appendleft(task)
        heir.kick(now)

    def adopt(self, sa_id: int, child_ids: Sequence[int]) -> None:
        """Register a resumed IKE SA under the ID it had in the previous daemon."""
        self.ep.reserve_ids([sa_id, *child_ids])
        self.id = sa_id
        self.adopted = True
        self.ep.register(self)

    def transition(self, transition: Transition) -> None:
        """The only way to change state (the table in `exchanges.py` says which moves exist)."""
        self.state = next_state(self.state, transition)

    def emit(self, event: Event) -> None:
        self.ep.emit(event)

    def violation(self, reason: str) -> None:
        self.emit(ProtocolViolation(self.remote, reason, self.id))

    # -------------------------------------------------------------------------------- sending

    def _template(self, exchange: int, mid: int, response: bool) -> Message:
        return Message(self.spi_i, self.spi_r, exchange, mid, response, self.initiator)

    def _encode(
        self, exchange: int, mid: int, response: bool, payloads: list[Payload]
    ) -> list[bytes]:
        template = self._template(exchange, mid, response)
        self.ep.trace_message("out", template, payloads, self.local, self.remote, self.id)
        if exchange == ExchangeType.IKE_SA_INIT:
            msg = Message(
                self.spi_i, self.spi_r, exchange, mid, response, self.initiator, tuple(payloads)
            )
            return [msg.encode()]
        if self.crypto is None:
            raise RemoteProtocolError("no keys yet for a protected exchange", notify=None)
        frag = (
            self.ep.config.fragment_size
            if self.peer_fragmentation and self.spec is not None and self.spec.fragmentation
            else None
        )
        return protect(self.crypto.out_keys(), self.ep.random, template, payloads, frag)

    def queue(self, task: Task, now: float, front: bool = False) -> None:
        if front:
            self.tasks.appendleft(task)
        else:
            self.tasks.append(task)
        self.kick(now)

    def kick(self, now: float) -> None:
        """Start the next queued exchange if none is in flight."""
        while self.outstanding is None and self.tasks and self.state != IkeState.DEAD:
            if self.retry_at is not None and now < self.retry_at:
                return
            self.retry_at = None
            task = self.tasks.popleft()
            payloads = task.build(self, now)
            if payloads is None:
                continue
            packets = self._encode(task.exchange, self.my_mid, False, payloads)
            if task.exchange == ExchangeType.IKE_SA_INIT:
                self.init_request = packets[0]
            timeout = self.ep.config.retransmit_timeout
            self.outstanding = Outstanding(
                task, task.exchange, self.my_mid, packets, 0, now + timeout, now
            )
            self.ep.send(packets, self.local, self.remote)

    def send_response(self, request: Message, payloads: list[Payload]) -> None:
        # The request's own exchange type, even one we do not know (answered INVALID_SYNTAX).
        packets = self._encode(request.exchange, request.message_id, True, payloads)
        self.last_response = (request.message_id, packets)
        self.ep.send(packets, self.local, self.remote)

    # -------------------------------------------------------------------------------- receiving

    def _open(self, msg: Message, data: bytes) -> list[Payload] | None:
        if msg.exchange == ExchangeType.IKE_SA_INIT:
            return list(msg.payloads)
        if self.crypto is None:
            raise RemoteProtocolError("protected message before keys exist", notify=None)
        inner_next, plain = unprotect(self.crypto.in_keys(), data, msg)
        last = msg.payloads[-1]
        if isinstance(last, SkfPayload):
            if msg.exchange == ExchangeType.IKE_SA_INIT:
                raise MalformedMessage("fragment in IKE_SA_INIT", notify=None)
            if self.reassembly is None:
                self.reassembly = {}
            r = self.reassembly.get(msg.is_response)
            if r is None or r.message_id != msg.message_id:
                r = Reassembly(msg.message_id, last.total)
                self.reassembly[msg.is_response] = r
            if not r.add(last.number, last.total, inner_next, plain):
                return None
            del self.reassembly[msg.is_response]
            if not self.reassembly:
                self.reassembly = None
            self.peer_fragmentation = True
            return r.payloads()
        return decode_inner(inner_next, plain)

    def receive(
        self, msg: Message, data: bytes, local: Address, remote: Address, now: float
    ) -> None:
        if msg.is_response:
            self._receive_response(msg, data, now)
        else:
            self._receive_request(msg, data, local, remote, now)

    def _receive_response(self, msg: Message, data: bytes, now: float) -> None:
        o = self.outstanding
        if o is None or msg.message_id != o.message_id or msg.exchange != o.exchange:
            # Not an answer to our request in flight (late duplicate, or forged): drop it
            # before spending a decryption on it (RFC 7296 §2.3).
            self.ep.count("unexpected_response")
            self.violation(f"unexpected response {msg.describe()}")
            return
        try:
            payloads = self._open(msg, data)
            if payloads is None:
                return
            if msg.exchange != ExchangeType.IKE_SA_INIT:
                self.ep.trace_message("in", msg, payloads, self.local, self.remote, self.id)
            check_payloads(msg.exchange, True, payloads)
        except RemoteProtocolError as exc:
            self.violation(str(exc))
            if exc.notify is None:
                return  # forged or corrupt: keep waiting for the real response
            self.outstanding = None
            self.delete(now, f"bad {msg.describe()}: {exc}", notify_peer=False)
            return
        self.last_inbound = now
        if dispatch_for(self.state, msg.exchange, True) != Dispatch.HANDLE:
            self.violation(f"response {msg.describe()} in state {self.state.value}")
            return
        self.outstanding = None
        self.my_mid += 1
        if msg.exchange == ExchangeType.IKE_SA_INIT:
            self.init_response = data
        o.task.on_response(self, payloads, now)
        self._forget_auth_inputs()
        self.kick(now)

    def _receive_request(
        self, msg: Message, data: bytes, local: Address, remote: Address, now: float
    ) -> None:
        # Window size 1 (RFC 7296 §2.3): the only acceptable requests are the next one
        # (peer_mid) and a retransmission of the last one we answered.
        if self.last_response and msg.message_id == self.last_response[0]:
            # A retransmitted request gets the identical response; for fragmented requests
            # only fragment 1 triggers it (RFC 7383 §2.6.1).
            last = msg.payloads[-1] if msg.payloads else None
            if not (isinstance(last, SkfPayload) and last.number != 1):
                self.ep.count("retransmitted_request")
                self.ep.trace_note(
                    remote, self.id, f"in {msg.describe()} again: sent the same response again"
                )
                self.ep.send(self.last_response[1], self.local, self.remote)
            return
        if msg.message_id != self.peer_mid:
            # Outside the window: dropped silently, as §2.3 allows. We do not send
            # INVALID_MESSAGE_ID (optional, §3.10.1): it would need decrypting every such
            # message and a rate-limited request of our own, for a peer that is broken anyway.
            self.ep.count("request_outside_window")
            self.violation(f"request {msg.describe()} but expected message ID {self.peer_mid}")
            return
        try:
            payloads = self._open(msg, data)
        except RemoteProtocolError as exc:
            self.violation(str(exc))
            return
        if payloads is None:
            return
        if msg.exchange != ExchangeType.IKE_SA_INIT:
            self.ep.trace_message("in", msg, payloads, local, remote, self.id)
        # Authenticated: follow the peer's address and port (NAT mappings change, RFC 7296 §2.23).
        self.last_inbound = now
        if msg.exchange != ExchangeType.IKE_SA_INIT:
            self.local, self.remote = local, remote
        try:
            check_payloads(msg.exchange, False, payloads)
            action = dispatch_for(self.state, msg.exchange, False)
            if action == Dispatch.DROP:
                self.violation(f"request {msg.describe()} in state {self.state.value}")
                return
            if action == Dispatch.TEMPORARY_FAILURE:
                response: list[Payload] = [NotifyPayload(NotifyType.TEMPORARY_FAILURE)]
            elif action == Dispatch.INVALID_SYNTAX:
                response = [NotifyPayload(NotifyType.INVALID_SYNTAX)]
            else:
                response = self.ep.request_handler(msg.exchange)(self, msg, payloads, now)
        except RemoteProtocolError as exc:
            self.violation(f"{msg.describe()}: {exc}")
            if exc.notify is None:
                return
            response = [NotifyPayload(exc.notify, exc.notify_data)]
            if msg.exchange == ExchangeType.IKE_AUTH and self.state == IkeState.INIT_RESPONDED:
                self.close_after_response = f"IKE_AUTH failed: {exc}"
        self.peer_mid += 1
        self.send_response(msg, response)
        self._forget_auth_inputs()
        if self.close_after_response:
            self.delete(now, self.close_after_response, notify_peer=False)

    def _forget_auth_inputs(self) -> None:
        """Once authenticated, what only IKE_AUTH needed: the IKE_SA_INIT messages and nonces
        (signed into AUTH, RFC 7296 §2.15; the nonces also key the first Child SA, §2.17; the
        half-open retransmission check), the responder's candidate connections, and SK_pi
        and SK_pr, which key nothing but the AUTH payloads (§2.15; a rekeyed IKE SA never
        uses its own). About 900 bytes per SA, and two secrets fewer in memory."""
        if self.state != IkeState.ESTABLISHED:
            return
        if self.init_request:
            self.init_request = self.init_response = self.ni = self.nr = b""
            self.candidates = ()
        crypto = self.crypto
        if crypto is not None and crypto.keys.sk_pi:
            crypto.keys = replace(crypto.keys, sk_pi=b"", sk_pr=b"")

    # -------------------------------------------------------------------------------- teardown

    def give_up_at(self) -> float | None:
        """When the request in flight is abandoned short of its retransmissions, if ever."""
        o = self.outstanding
        if o is None or not o.task.give_up_after:
            return None
        return o.first_sent + o.task.give_up_after

    def retransmit(self, now: float) -> bool:
        """Send the request in flight again; False when it is time to give up on it."""
        o = self.outstanding
        if o is None:
            return True
        cfg = self.ep.config
        limit = self.give_up_at()
        if o.tries >= cfg.retransmit_tries or (limit is not None and now >= limit):
            self.outstanding = None
            o.task.on_give_up(self, now)
            return False
        o.tries += 1
        self.ep.count("retransmission_sent")
        o.next_at = now + cfg.retransmit_timeout * cfg.retransmit_base**o.tries
        self.ep.trace_note(
            self.remote,
            self.id,
            f"out {o.exchange.name} request mid={o.message_id} "
            f"retransmission {o.tries}/{cfg.retransmit_tries}",
        )
        self.ep.send(o.packets, self.local, self.remote)
        return True

    # -------------------------------------------------------------------------------- teardown

    def delete(self, now: float, reason: str, notify_peer: bool) -> None:
        """Drop this IKE SA and its children; tell the peer first when asked and possible."""
        if self.state == IkeState.DEAD:
            return
        if (
            notify_peer
            and self.crypto is not None
            and self.state in (IkeState.ESTABLISHED, IkeState.REKEYED)
        ):
            self.transition(Transition.CLOSING)
            self.tasks.clear()
            self.rekey_at = self.dpd_at = None
            self.queue(IkeDeleteTask(reason), now)
            return
        if self.outstanding is not None:
            self.outstanding.task.on_dropped(self, now)
        for c in list(self.children):
            self.ep.remove_child(self, c, now, reason, notify_peer=False)
        self._hand_over(now)
        abandoned, self.on_abandoned = self.on_abandoned, None
        if abandoned is not None:
            abandoned(self, now)
        was_up = self.state in (IkeState.ESTABLISHED, IkeState.REKEYED, IkeState.DELETING)
        self.transition(Transition.DROPPED)
        self.outstanding = None
        self.tasks.clear()
        self.ep.forget(self)
        if was_up or self.initiator:
            self.emit(IkeSaDeleted(self.conn_name, self.id, reason))


class IkeDeleteTask(Task):
    """The INFORMATIONAL carrying our Delete of this IKE SA (RFC 7296 §1.4.1); then it goes."""

    exchange = ExchangeType.INFORMATIONAL

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def build(self, sa: IkeSa, now: float) -> list[Payload] | None:
        return [DeletePayload(ProtocolId.IKE)]

    def on_response(self, sa: IkeSa, payloads: list[Payload], now: float) -> None:
        sa.delete(now, self.reason, notify_peer=False)

    def on_give_up(self, sa: IkeSa, now: float) -> None:
        sa.delete(now, self.reason, notify_peer=False)
