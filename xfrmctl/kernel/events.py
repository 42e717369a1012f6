"""Kernel XFRM notifications as typed events, from the XFRM multicast groups.

ACQUIRE (a policy matched traffic but no SA exists), soft/hard EXPIRE of SAs and policies,
MAPPING (the NAT in front of a peer changed its port), and SA/policy add/update/delete/flush.
If the socket overflows the kernel drops notifications; the stream then yields `Overrun` and
reopens, and the consumer should resynchronise by dumping.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from xfrmctl.kernel.echo_filter import attach_echo_filter
from xfrmctl.kernel.errors import XfrmError
from xfrmctl.kernel.fields import DecodeError, get_selector, unpack_addr
from xfrmctl.kernel.marshal import XfrmMarshal
from xfrmctl.kernel.messages import Group, Msg, policy_template_reqids
from xfrmctl.kernel.policy import decode_policy, decode_policy_attr, decode_policy_info
from xfrmctl.kernel.sa import SaKey, decode_sa, decode_sa_attr, deleted_sa_key_in_place
from xfrmctl.kernel.socket import XfrmSocket
from xfrmctl.kernel.types import (
    SA,
    Address,
    Policy,
    Proto,
    SaId,
    Selector,
    Template,
)


@dataclass(frozen=True)
class Acquire:
    """Traffic hit `policy`, whose `template` has no SA: negotiate one (`seq` goes back in it)."""

    policy: Policy
    template: Template | None
    selector: Selector  # the packet's flow
    src: Address
    dst: Address
    proto: Proto
    seq: int


@dataclass(frozen=True)
class Expire:
    sa: SA
    hard: bool


@dataclass(frozen=True)
class PolicyExpire:
    policy: Policy
    hard: bool


@dataclass(frozen=True)
class Mapping:
    """NAT-T: the peer's address/port behind a NAT changed for this SA."""

    sa_id: SaId
    reqid: int
    old_src: Address
    old_sport: int
    new_src: Address
    new_sport: int


@dataclass(frozen=True)
class SaAdded:
    sa: SA
    updated: bool


@dataclass(frozen=True)
class SaDeleted:
    sa: SA


@dataclass(frozen=True)
class SasFlushed:
    proto: int


@dataclass(frozen=True)
class PolicyAdded:
    policy: Policy
    updated: bool


@dataclass(frozen=True)
class PolicyDeleted:
    policy: Policy


@dataclass(frozen=True)
class PoliciesFlushed:
    pass


@dataclass(frozen=True)
class Overrun:
    """Notifications were lost (socket buffer overflow): dump to resynchronise."""


@dataclass(frozen=True)
class Undecodable:
    msg_type: int
    reason: str


Event = (
    Acquire
    | Expire
    | PolicyExpire
    | Mapping
    | SaAdded
    | SaDeleted
    | SasFlushed
    | PolicyAdded
    | PolicyDeleted
    | PoliciesFlushed
    | Overrun
    | Undecodable
)

DEFAULT_GROUPS = (Group.ACQUIRE, Group.EXPIRE, Group.MAPPING)
ALL_GROUPS = (Group.ACQUIRE, Group.EXPIRE, Group.SA, Group.POLICY, Group.MAPPING)


def group_mask(groups: Iterable[Group]) -> int:
    mask = 0
    for g in groups:
        mask |= 1 << (int(g) - 1)
    return mask


def decode_event(msg: Any) -> Event | None:
    """The typed event for one notification; None for types this layer does not report."""
    mtype = msg["header"]["type"]
    try:
        if mtype == Msg.ACQUIRE:
            return _acquire(msg)
        if mtype == Msg.EXPIRE:
            return Expire(decode_sa(msg), bool(msg["hard"]))
        if mtype == Msg.POLEXPIRE:
            return PolicyExpire(decode_policy(msg), bool(msg["hard"]))
        if mtype == Msg.MAPPING:
            family = msg["family"]
            return Mapping(
                SaId(unpack_addr(msg["daddr"], family), msg["spi"], Proto(msg["proto"])),
                msg["reqid"],
                unpack_addr(msg["old_saddr"], family),
                msg["old_sport"],
                unpack_addr(msg["new_saddr"], family),
                msg["new_sport"],
            )
        if mtype in (Msg.NEWSA, Msg.UPDSA):
            return SaAdded(decode_sa(msg), mtype == Msg.UPDSA)
        if mtype == Msg.DELSA:
            return SaDeleted(decode_sa_attr(msg))
        if mtype == Msg.FLUSHSA:
            return SasFlushed(msg["proto"])
        if mtype in (Msg.NEWPOLICY, Msg.UPDPOLICY):
            return PolicyAdded(decode_policy(msg), mtype == Msg.UPDPOLICY)
        if mtype == Msg.DELPOLICY:
            return PolicyDeleted(decode_policy_attr(msg))
        if mtype == Msg.FLUSHPOLICY:
            return PoliciesFlushed()
    except (DecodeError, KeyError, TypeError, ValueError) as exc:
        return Undecodable(mtype, str(exc))
    return None


def _acquire(msg: Any) -> Acquire:
    policy = decode_policy_info(msg, msg, prefix="pol_")
    proto = Proto(msg["id_proto"])
    template = next((t for t in policy.templates if t.proto == proto), None)
    family = msg["sel_family"] or policy.selector.family
    if template is not None and template.dst is not None:
        family = 2 if template.dst.version == 4 else 10
    return Acquire(
        policy=policy,
        template=template,
        selector=get_selector(msg),
        src=unpack_addr(msg["saddr"], family),
        dst=unpack_addr(msg["id_daddr"], family),
        proto=proto,
        seq=msg["seq"],
    )


SA_ADDS = frozenset({int(Msg.NEWSA), int(Msg.UPDSA)})
_POLICY_ADDS = frozenset({int(Msg.NEWPOLICY), int(Msg.UPDPOLICY)})
_SA_DELETE = int(Msg.DELSA)


class NotificationMarshal(XfrmMarshal):
    """Leaves undecoded what the consumer said it will not look at: the types in `ignore`,
    policy adds whose templates all carry reqids `owned` accepts (the echo of our own
    installs), and SA deletions whose (destination, SPI, protocol) `held` rejects (the echo
    of our own removals). Decoding is most of a notification's cost, and a busy daemon is
    told of every SA and policy it installs or removes itself (issue 15)."""

    def __init__(
        self,
        ignore: frozenset[int],
        owned: Callable[[int], bool] | None,
        held: Callable[[SaKey], bool] | None = None,
    ) -> None:
        super().__init__()
        self.ignore, self.owned, self.held = ignore, owned, held

    def parse_one_message(
        self, key: int, flags: int, sequence_number: int, data: bytes, offset: int, length: int
    ) -> Any:
        if key in self.ignore:
            return None
        if key in _POLICY_ADDS and self.owned is not None:
            reqids = policy_template_reqids(data, offset, length)
            if reqids and all(map(self.owned, reqids)):
                return None
        if key == _SA_DELETE and self.held is not None:
            sa_key = deleted_sa_key_in_place(data, offset, length)
            if sa_key is not None and not self.held(sa_key):
                return None
        return super().parse_one_message(key, flags, sequence_number, data, offset, length)


class EventStream:
    """`async with EventStream(netns) as events: async for event in events: ...`

    `ignore`: message types never reported (nor decoded). `owned_reqid`: policy adds whose
    templates' reqids it accepts are not reported either; a policy with any other template,
    or none, still is. `held_sa`: SA deletions are reported only for (destination, SPI,
    protocol) it accepts, asked when the notification arrives. `echo_of`: the netlink port id
    our requests carry; the kernel itself then drops the echo of the SA and policy changes
    they make (`kernel.echo_filter`), before anything is read."""

    def __init__(
        self,
        netns: str | None = None,
        groups: Iterable[Group] = DEFAULT_GROUPS,
        ignore: frozenset[int] = frozenset(),
        owned_reqid: Callable[[int], bool] | None = None,
        held_sa: Callable[[SaKey], bool] | None = None,
        echo_of: int | None = None,
    ) -> None:
        self.netns = netns
        self.mask = group_mask(groups)
        self.ignore, self.owned_reqid, self.held_sa = ignore, owned_reqid, held_sa
        self.echo_of = echo_of
        self.sock: XfrmSocket | None = None

    async def open(self) -> None:
        sock = XfrmSocket(netns=self.netns)
        if self.ignore or self.owned_reqid is not None or self.held_sa is not None:
            sock.set_marshal(NotificationMarshal(self.ignore, self.owned_reqid, self.held_sa))
        try:
            await sock.bind(groups=self.mask)
        except OSError as exc:
            sock.close()
            raise XfrmError(f"cannot subscribe to XFRM notifications: {exc}") from exc
        if self.echo_of is not None:
            # A kernel without socket filters only costs the reads: the marshal's filters
            # above still leave our echo undecoded.
            with contextlib.suppress(OSError):
                attach_echo_filter(sock.socket, self.echo_of)
        self.sock = sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    async def __aenter__(self) -> EventStream:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        if self.sock is None:
            await self.open()
        while True:
            sock = self.sock
            if sock is None:
                return
            lost = False
            try:
                # One get() returns one datagram's messages; keep asking.
                async for msg in sock.get():
                    event = decode_event(msg)
                    if event is not None:
                        yield event
            except (NetlinkError, OSError) as exc:
                code = getattr(exc, "code", None) or getattr(exc, "errno", None)
                if code not in (errno.ENOBUFS, errno.ECOMM):
                    raise XfrmError(f"XFRM notification socket failed: {exc}") from exc
                lost = True
            if lost:
                self.close()
                await self.open()
                yield Overrun()
