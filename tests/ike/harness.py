"""In-memory two-peer harness (like aioquic's roundtrip): two engines, a fake clock, and hooks
to drop, delay, duplicate, reorder or NAT the datagrams between them."""

from __future__ import annotations

import dataclasses
import ipaddress
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from xfrmctl.ike.engine import Datagram, EndpointConfig, IkeEndpoint
from xfrmctl.ike.events import Event
from xfrmctl.ike.iana import ProtocolId
from xfrmctl.ike.proposals import parse_proposals
from xfrmctl.ike.spec import (
    Auth,
    ChildSpec,
    ConnectionSpec,
    Identity,
    Mode,
    PskAuth,
    TsSpec,
)

A_IP = ipaddress.ip_address("192.0.2.1")
B_IP = ipaddress.ip_address("198.51.100.2")
NAT_IP = ipaddress.ip_address("203.0.113.9")
PSK = PskAuth(b"correct horse battery staple")


def child_spec(
    name: str = "net",
    local: str = "10.1.0.0/16",
    remote: str = "10.2.0.0/16",
    proposals: tuple[str, ...] = ("aes256gcm16",),
    mode: Mode = Mode.TUNNEL,
    **kw: object,
) -> ChildSpec:
    return ChildSpec(
        name,
        (TsSpec(ipaddress.ip_network(local)),),
        (TsSpec(ipaddress.ip_network(remote)),),
        tuple(parse_proposals(list(proposals), ProtocolId.ESP)),
        mode,
        **kw,  # type: ignore[arg-type]
    )


def conn_spec(
    name: str,
    local_ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
    remote_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
    local_id: str,
    remote_id: str | None,
    children: tuple[ChildSpec, ...],
    auth: Auth = PSK,
    ike: tuple[str, ...] = ("aes256gcm16-prfsha256-x25519",),
    **kw: object,
) -> ConnectionSpec:
    return ConnectionSpec(
        name,
        (local_ip,),
        (remote_ip,) if remote_ip else (),
        Identity.parse(local_id),
        Identity.parse(remote_id) if remote_id else None,
        auth,
        tuple(parse_proposals(list(ike), ProtocolId.IKE)),
        children,
        **kw,  # type: ignore[arg-type]
    )


def mirror(c: ChildSpec) -> ChildSpec:
    from dataclasses import replace

    return replace(c, local_ts=c.remote_ts, remote_ts=c.local_ts)


def pair_specs(**kw: Any) -> tuple[ConnectionSpec, ConnectionSpec]:
    """Matching initiator (A) and responder (B) specs; `a={...}` / `b={...}` override one side."""
    children = kw.pop("children", (child_spec(),))
    a_only = kw.pop("a", {})
    b_only = kw.pop("b", {})
    a_args: dict[str, Any] = {
        "name": "a-to-b",
        "local_ip": A_IP,
        "remote_ip": B_IP,
        "local_id": "a.example",
        "remote_id": "b.example",
        "children": children,
        **kw,
        **a_only,
    }
    b_args: dict[str, Any] = {
        "name": "b-from-a",
        "local_ip": B_IP,
        "remote_ip": None,
        "local_id": "b.example",
        "remote_id": "a.example",
        "children": tuple(mirror(c) for c in children),
        **kw,
        **b_only,
    }
    return conn_spec(**a_args), conn_spec(**b_args)


Hook = Callable[["Flight"], list["Flight"]]


@dataclass
class Flight:
    """A datagram on the wire from one engine to the other."""

    dg: Datagram
    sender: str  # "a" or "b"
    deliver_at: float


@dataclass
class Harness:
    a: IkeEndpoint
    b: IkeEndpoint
    now: float = 1000.0
    latency: float = 0.01
    wire: list[Flight] = field(default_factory=list)
    hook: Hook | None = None
    nat_a: bool = False  # A sits behind a NAT that rewrites its source address and port
    events_a: list[Event] = field(default_factory=list)
    events_b: list[Event] = field(default_factory=list)
    log: list[tuple[str, bytes]] = field(default_factory=list)

    def _collect(self) -> None:
        for name, ep in (("a", self.a), ("b", self.b)):
            for dg in ep.datagrams_to_send():
                self.log.append((name, dg.data))
                flights = [Flight(dg, name, self.now + self.latency)]
                if self.hook is not None:
                    flights = [g for f in flights for g in self.hook(f)]
                self.wire.extend(flights)
        self.events_a.extend(self.a.events())
        self.events_b.extend(self.b.events())

    def _deliver(self, f: Flight) -> None:
        dg = f.dg
        if f.sender == "a":
            remote = dg.local
            if self.nat_a:
                remote = (NAT_IP, 40000 + dg.local[1])
            self.b.receive_datagram(dg.data, dg.remote, remote, self.now)
        else:
            dest = dg.remote
            if self.nat_a:
                if dest[0] != NAT_IP:
                    return
                dest = (A_IP, dest[1] - 40000)
            self.a.receive_datagram(dg.data, dest, dg.local, self.now)

    def run(self, duration: float = 5.0, max_steps: int = 10000) -> None:
        """Advance the fake clock, delivering datagrams and firing timers, for `duration`."""
        end = self.now + duration
        for _ in range(max_steps):
            self._collect()
            times = [f.deliver_at for f in self.wire]
            for ep in (self.a, self.b):
                t = ep.next_timer()
                if t is not None:
                    times.append(t)
            nxt = min(times) if times else None
            if nxt is None or nxt > end:
                self.now = end
                return
            self.now = max(self.now, nxt)
            due = [f for f in self.wire if f.deliver_at <= self.now]
            self.wire = [f for f in self.wire if f.deliver_at > self.now]
            for f in due:
                self._deliver(f)
            self._collect()
            for ep in (self.a, self.b):
                t = ep.next_timer()
                if t is not None and t <= self.now:
                    ep.handle_timer(self.now)
        raise AssertionError("harness did not settle")

    def of(self, side: str, kind: type) -> list:  # type: ignore[type-arg]
        events = self.events_a if side == "a" else self.events_b
        return [e for e in events if isinstance(e, kind)]


def seeded_endpoint(spec: ConnectionSpec, config: EndpointConfig | None, seed: int) -> IkeEndpoint:
    """Deterministic nonces, SPIs and jitter so a failing ordering can be replayed."""
    rng = random.Random(seed)
    # Strict: an engine bug that its last-resort guard would swallow fails the test instead.
    config = dataclasses.replace(config or EndpointConfig(), strict=True)
    return IkeEndpoint(
        [spec],
        config=config,
        random_bytes=rng.randbytes,
        spi_allocator=lambda proto: rng.randrange(0x100, 2**32),
    )


def make_pair(
    config: EndpointConfig | None = None, seed: int = 0, **kw: Any
) -> tuple[Harness, ConnectionSpec, ConnectionSpec]:
    a_spec, b_spec = pair_specs(**kw)
    h = Harness(
        seeded_endpoint(a_spec, config, 2 * seed + 1), seeded_endpoint(b_spec, config, 2 * seed + 2)
    )
    return h, a_spec, b_spec
