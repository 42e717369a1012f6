"""XFRM interfaces for route-based IPsec: the `xfrm` links, addresses and routes xfrmctl owns.

An XFRM interface (Linux 4.19+, `ip link add NAME type xfrm if_id N`) carries an interface
ID; SAs and policies with the same `if_id` match only packets routed through it, so routing,
not the policy's selectors, decides what is encrypted, and IKE's own packets, routed out of
the physical device, are never caught by a 0.0.0.0/0 policy.

Ownership is written on the objects themselves, so that a restart after `kill -9` finds what
an earlier run made and nothing else: a link xfrmctl creates carries the alias
`xfrmctl:<connection>`, and a route it adds carries the routing protocol `RTPROT_XFRMCTL`.
A link that exists already (made by the operator) is used as it is, if its if_id matches,
and is never removed; only our routes through it are.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyroute2.netlink.exceptions import NetlinkError

from xfrmctl.kernel import rtnl_scan
from xfrmctl.kernel.errors import XfrmError
from xfrmctl.kernel.types import family_of

if TYPE_CHECKING:
    from pyroute2.iproute.linux import IPRoute

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

ALIAS_PREFIX = "xfrmctl:"
RTPROT_XFRMCTL = 157  # not in iproute2's rt_protos; `ip route show proto 157` lists ours


class InterfaceError(XfrmError):
    """An interface could not be set up as configured (the message names it and why)."""


@dataclass(frozen=True)
class XfrmInterface:
    name: str
    if_id: int
    owner: str  # the connection, written in the alias of a link we create
    mtu: int | None = None
    addresses: tuple[Interface, ...] = ()
    routes: tuple[Network, ...] = ()


@dataclass(frozen=True)
class LinkState:
    index: int
    name: str
    kind: str
    if_id: int | None
    alias: str
    up: bool

    @property
    def ours(self) -> bool:
        return self.alias.startswith(ALIAS_PREFIX)


@contextmanager
def _ipr(netns: str | None) -> Iterator[IPRoute]:
    # Imported here: its rtnetlink marshal loads every traffic-control module, and a daemon
    # start with no interface configured and nothing stale never needs it (rtnl_scan).
    from pyroute2.iproute.linux import IPRoute

    with IPRoute(netns=netns) if netns else IPRoute() as ipr:
        yield ipr


def _link_state(link: object) -> LinkState:
    get = link.get_attr  # type: ignore[attr-defined]
    info = get("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
    data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
    if_id = data.get_attr("IFLA_XFRM_IF_ID") if data is not None and kind == "xfrm" else None
    return LinkState(
        index=int(link["index"]),  # type: ignore[index]
        name=str(get("IFLA_IFNAME")),
        kind=str(kind or ""),
        if_id=int(if_id) if if_id is not None else None,
        alias=str(get("IFLA_IFALIAS") or ""),
        up=bool(int(link["flags"]) & 1),  # type: ignore[index]
    )


def _find(ipr: IPRoute, name: str) -> LinkState | None:
    found = ipr.link_lookup(ifname=name)
    if not found:
        return None
    return _link_state(ipr.get_links(found[0])[0])


def ensure(iface: XfrmInterface, netns: str | None = None) -> None:
    """The interface up, with its addresses and our routes; created (and owned) if missing.

    InterfaceError when a link of that name exists but is no XFRM interface or has another
    if_id: using it would send traffic where the configuration does not say.
    """
    try:
        with _ipr(netns) as ipr:
            link = _find(ipr, iface.name)
            if link is None:
                link = _create(ipr, iface)
            elif link.kind != "xfrm" or link.if_id != iface.if_id:
                what = (
                    f"an xfrm interface with if_id {link.if_id}"
                    if link.kind == "xfrm"
                    else (f"a {link.kind or 'plain'} link")
                )
                raise InterfaceError(
                    f"interface {iface.name}: {what} of that name exists; "
                    f"the configuration wants an xfrm interface with if_id {iface.if_id}"
                )
            _configure(ipr, link, iface)
    except NetlinkError as exc:
        raise InterfaceError(f"interface {iface.name}: {exc.args[-1]}") from None


def _create(ipr: IPRoute, iface: XfrmInterface) -> LinkState:
    ipr.link("add", ifname=iface.name, kind="xfrm", xfrm_if_id=iface.if_id)
    index = ipr.link_lookup(ifname=iface.name)[0]
    ipr.link("set", index=index, ifalias=f"{ALIAS_PREFIX}{iface.owner}")
    return _link_state(ipr.get_links(index)[0])


def _configure(ipr: IPRoute, link: LinkState, iface: XfrmInterface) -> None:
    if link.ours:  # an operator's interface keeps its own MTU and addresses
        if iface.mtu is not None:
            ipr.link("set", index=link.index, mtu=iface.mtu)
        for addr in iface.addresses:
            try:
                ipr.addr(
                    "add", index=link.index, address=str(addr.ip), prefixlen=addr.network.prefixlen
                )
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:  # already there from an earlier hold
                    raise
    if not link.up:
        ipr.link("set", index=link.index, state="up")
    for net in iface.routes:
        ipr.route(
            "replace",
            dst=str(net.network_address),
            dst_len=net.prefixlen,
            family=family_of(net),
            oif=link.index,
            proto=RTPROT_XFRMCTL,
        )


def release(name: str, netns: str | None = None) -> None:
    """Undo `ensure`: remove the link if we created it, else only our routes through it."""
    try:
        with _ipr(netns) as ipr:
            link = _find(ipr, name)
            if link is None:
                return
            if link.ours:
                ipr.link("del", index=link.index)  # its addresses and routes go with it
            else:
                _remove_routes(ipr, link.index)
    except NetlinkError as exc:
        raise InterfaceError(f"interface {name}: {exc.args[-1]}") from None


def _remove_routes(ipr: IPRoute, index: int | None, spare: frozenset[int] = frozenset()) -> None:
    """Our routes through `index` (None: through any link but those in `spare`)."""
    for family in (socket.AF_INET, socket.AF_INET6):
        for route in ipr.get_routes(family=family, proto=RTPROT_XFRMCTL):
            oif = route.get_attr("RTA_OIF")
            if (index is None and oif not in spare) or oif == index:
                ipr.route("del", **_route_key(route))


def _route_key(route: object) -> dict[str, object]:
    """The dumped route exactly: without its scope the kernel matches no IPv4 route of scope
    link (one through a device, no gateway) and answers ESRCH."""
    get = route.get_attr  # type: ignore[attr-defined]
    key = {
        "family": route["family"],  # type: ignore[index]
        "dst": get("RTA_DST"),
        "dst_len": route["dst_len"],  # type: ignore[index]
        "oif": get("RTA_OIF"),
        "table": get("RTA_TABLE") or route["table"],  # type: ignore[index]
        "scope": route["scope"],  # type: ignore[index]
        "proto": RTPROT_XFRMCTL,
    }
    if get("RTA_PRIORITY") is not None:
        key["priority"] = get("RTA_PRIORITY")
    return key


def remove_stale(netns: str | None = None, keep: frozenset[str] = frozenset()) -> list[str]:
    """What an earlier run left (after kill -9): our links and our routes, except through
    the interfaces in `keep` (already taken over by this run)."""
    if netns is None and not _maybe_stale():
        return []
    removed: list[str] = []
    try:
        with _ipr(netns) as ipr:
            spare = set()
            for link in ipr.get_links():
                state = _link_state(link)
                if state.name in keep:
                    spare.add(state.index)
                elif state.ours:
                    ipr.link("del", index=state.index)
                    removed.append(state.name)
            _remove_routes(ipr, None, frozenset(spare))
    except NetlinkError as exc:
        raise InterfaceError(f"removing stale interfaces: {exc.args[-1]}") from None
    return removed


def _maybe_stale() -> bool:
    """False only when a cheap scan of this namespace finds no link or route of ours."""
    try:
        return rtnl_scan.ours_present(RTPROT_XFRMCTL)
    except OSError:
        return True  # the full path reports what fails, as before
