"""Traffic-selector narrowing (RFC 7296 §2.9): intersect what the peer asks with our policy."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from xfrmctl.ike.payloads import TrafficSelector


def intersect(a: TrafficSelector, b: TrafficSelector) -> TrafficSelector | None:
    """The common part of `a` and `b`; `a` or `b` itself when it lies within the other (a
    road warrior's /32 inside our range, the usual case): no copy of its addresses is built
    for each Child SA a responder narrows."""
    if a.start.version != b.start.version:
        return None
    if a.ip_proto and b.ip_proto and a.ip_proto != b.ip_proto:
        return None
    start = a.start if int(a.start) >= int(b.start) else b.start
    end = a.end if int(a.end) <= int(b.end) else b.end
    sport = max(a.start_port, b.start_port)
    eport = min(a.end_port, b.end_port)
    if int(start) > int(end) or sport > eport:
        return None
    common = TrafficSelector(start, end, a.ip_proto or b.ip_proto, sport, eport)
    return a if common == a else b if common == b else common


def narrow(
    theirs: Sequence[TrafficSelector], ours: Sequence[TrafficSelector]
) -> tuple[TrafficSelector, ...]:
    """Every non-empty intersection, without duplicates, in the peer's order."""
    out: list[TrafficSelector] = []
    for t in theirs:
        for o in ours:
            x = intersect(t, o)
            if x is not None and x not in out:
                out.append(x)
    return tuple(out)


def covered(narrowed: Sequence[TrafficSelector], offered: Sequence[TrafficSelector]) -> bool:
    """True when each selector the responder returned lies within one we offered."""
    return all(any(intersect(n, o) == n for o in offered) for n in narrowed)


def for_address(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> TrafficSelector:
    """Host selector for transport mode when no selector is configured."""
    return TrafficSelector(addr, addr)
