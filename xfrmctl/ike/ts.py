"""Traffic-selector narrowing (RFC 7296 §2.9): intersect what the peer asks with our policy."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from xfrmctl.ike.payloads import TrafficSelector


def intersect(a: TrafficSelector, b: TrafficSelector) -> TrafficSelector | None:
    if a.start.version != b.start.version:
        return None
    lo = max(int(a.start), int(b.start))
    hi = min(int(a.end), int(b.end))
    if lo > hi:
        return None
    start = ipaddress.ip_address(lo) if a.start.version == 4 else ipaddress.IPv6Address(lo)
    end = ipaddress.ip_address(hi) if a.start.version == 4 else ipaddress.IPv6Address(hi)
    if a.ip_proto and b.ip_proto and a.ip_proto != b.ip_proto:
        return None
    proto = a.ip_proto or b.ip_proto
    sport = max(a.start_port, b.start_port)
    eport = min(a.end_port, b.end_port)
    if sport > eport:
        return None
    return TrafficSelector(start, end, proto, sport, eport)


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
