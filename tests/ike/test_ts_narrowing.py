"""Traffic-selector narrowing (RFC 7296 §2.9, `ike/ts.py`): the intersection of every pair
agrees with a reference over integers, and a selector lying within the other comes back as
the very object the peer sent (a responder keeps thousands of narrowed Child SAs)."""

from __future__ import annotations

import ipaddress
import random

from xfrmctl.ike.payloads import TrafficSelector
from xfrmctl.ike.ts import covered, intersect, narrow


def ts(lo: int, hi: int, proto: int = 0, sport: int = 0, eport: int = 65535) -> TrafficSelector:
    base = int(ipaddress.IPv4Address("10.0.0.0"))
    return TrafficSelector(
        ipaddress.IPv4Address(base + lo), ipaddress.IPv4Address(base + hi), proto, sport, eport
    )


def reference(a: TrafficSelector, b: TrafficSelector) -> tuple[int, ...] | None:
    lo, hi = max(int(a.start), int(b.start)), min(int(a.end), int(b.end))
    if lo > hi or (a.ip_proto and b.ip_proto and a.ip_proto != b.ip_proto):
        return None
    sport, eport = max(a.start_port, b.start_port), min(a.end_port, b.end_port)
    if sport > eport:
        return None
    return (lo, hi, a.ip_proto or b.ip_proto, sport, eport)


def test_intersections_agree_with_the_integer_reference() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        pair = []
        for _ in range(2):
            lo = rng.randint(0, 20)
            sport = rng.choice((0, 0, 80, 443, 1000))
            pair.append(
                ts(lo, lo + rng.randint(0, 10), rng.choice((0, 0, 6, 17)), sport, sport + 500)
            )
        a, b = pair
        got = intersect(a, b)
        want = reference(a, b)
        if want is None:
            assert got is None, (a, b)
        else:
            assert got is not None, (a, b)
            assert (int(got.start), int(got.end), got.ip_proto, got.start_port, got.end_port) == (
                want
            )


def test_a_selector_within_the_other_comes_back_as_is() -> None:
    host, net = ts(5, 5), ts(0, 255)
    assert intersect(host, net) is host and intersect(net, host) is host
    assert narrow([host], [net])[0] is host
    partial = intersect(ts(0, 10), ts(5, 20))
    assert partial is not None and (int(partial.start) & 0xFF, int(partial.end) & 0xFF) == (5, 10)
    assert intersect(ts(0, 3), ts(5, 9)) is None
    assert intersect(ts(0, 9, 6), ts(0, 9, 17)) is None
    assert covered([host], [net]) and not covered([net], [host])
