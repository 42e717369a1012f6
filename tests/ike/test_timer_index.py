"""The engine's deadline index (timers.TimerIndex) answers as a scan of every SA would, with
many SAs; it asks only the SAs an event touched; the half-open count follows every SA
through create, establish and drop."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from harness import A_IP, B_IP, Flight, Harness, child_spec, conn_spec

from xfrmctl.ike import timers
from xfrmctl.ike.engine import EndpointConfig, IkeEndpoint
from xfrmctl.ike.events import ChildSaReady, IkeSaEstablished, IkeSaRekeyed
from xfrmctl.ike.exchanges import IkeState

K = 30  # IKE SAs, each of its own connection with one /32 <-> /32 child
CONFIG = EndpointConfig(
    strict=True, cookie_threshold=1000, cookie_threshold_ip=1000, block_threshold=1000
)


def _pair(config: EndpointConfig = CONFIG, **child_kw: Any) -> Harness:
    """A with K connections; B with one connection whose /16s each /32 pair narrows."""
    a_specs = [
        conn_spec(
            f"c{i}",
            A_IP,
            B_IP,
            "a.example",
            "b.example",
            (child_spec("net", f"10.1.0.{i}/32", f"10.2.0.{i}/32", **child_kw),),
            rekey_time=300.0,
            rand_time=60.0,
        )
        for i in range(K)
    ]
    b_spec = conn_spec(
        "b",
        B_IP,
        None,
        "b.example",
        "a.example",
        (child_spec("net", "10.2.0.0/16", "10.1.0.0/16", **child_kw),),
    )
    return Harness(IkeEndpoint(a_specs, config=config), IkeEndpoint([b_spec], config=config))


def _scan(ep: IkeEndpoint) -> float | None:
    """What next_timer answered before the index: every SA asked."""
    times = [
        t
        for sa in ep.sas.values()
        if sa.state != IkeState.DEAD and (t := timers.next_deadline(sa)) is not None
    ]
    return min(times) if times else None


def _checked(ep: IkeEndpoint, fired: list[float]) -> None:
    """Compare every next_timer with the scan; after each handle_timer, no SA that was due
    may still be due (each fired)."""
    next_timer, handle_timer = ep.next_timer, ep.handle_timer

    def checked_next() -> float | None:
        got = next_timer()
        assert got == _scan(ep)
        return got

    def checked_handle(now: float) -> None:
        due = [sa for sa in ep.sas.values() if (t := timers.next_deadline(sa)) and t <= now]
        handle_timer(now)
        fired.append(now)
        for sa in due:
            t = timers.next_deadline(sa) if sa.state != IkeState.DEAD else None
            assert t is None or t > now, f"IKE SA #{sa.id} was due at {t} and did not fire"

    ep.next_timer = checked_next  # type: ignore[method-assign]
    ep.handle_timer = checked_handle  # type: ignore[method-assign]


def _up(h: Harness) -> None:
    for i in range(K):
        h.a.initiate(f"c{i}", now=h.now)
    h.run(5.0)
    assert len(h.of("a", IkeSaEstablished)) == K
    assert len(h.of("b", ChildSaReady)) == K


def test_timers_fire_when_a_scan_of_every_sa_says_with_many_sas() -> None:
    h = _pair(rekey_time=100.0, life_time=130.0, rand_time=30.0)
    fired: list[float] = []
    for ep in (h.a, h.b):
        _checked(ep, fired)
    _up(h)
    h.run(400.0)  # Child SAs rekey about 4 times each, IKE SAs once
    assert len(h.of("a", IkeSaRekeyed)) >= K
    assert len(h.of("a", ChildSaReady)) >= 4 * K
    assert fired
    assert all(sa.state == IkeState.ESTABLISHED for sa in h.a.sas.values())
    assert len(h.a.sas) == K


def test_next_timer_asks_only_the_sas_an_event_touched(monkeypatch: pytest.MonkeyPatch) -> None:
    h = _pair(dataclasses.replace(CONFIG, strict=False))  # strict checks every SA
    _up(h)
    h.a.next_timer()
    asked: list[int] = []
    real: Callable[[Any], float | None] = timers.next_deadline

    def counting(sa: Any) -> float | None:
        asked.append(sa.id)
        return real(sa)

    monkeypatch.setattr(timers, "next_deadline", counting)
    child = next(iter(h.a.sas.values())).children[0]
    h.a.rekey_child(child.spi_in, h.now)
    deadline = h.a.next_timer()
    assert deadline is not None and deadline <= h.now + CONFIG.retransmit_timeout
    assert 0 < len(asked) <= 3, asked  # the rekeying SA, not all K


def test_half_open_count_through_create_establish_and_drop() -> None:
    h = _pair()
    dropping = [True]

    def hook(f: Flight) -> list[Flight]:
        return [] if dropping[0] and f.sender == "b" else [f]

    def half_open() -> int:
        count = h.b.half_open_count()
        scan = sum(1 for sa in h.b.sas.values() if sa.state == IkeState.INIT_RESPONDED)
        assert count == scan == h.b.half_open.from_ip(A_IP)
        return count

    h.hook = hook
    for i in range(K):
        h.a.initiate(f"c{i}", now=h.now)
    h.run(1.0)
    assert half_open() == K  # created
    dropping[0] = False
    h.run(10.0)  # A retransmits at 4 s and B answers: IKE_AUTH completes
    assert half_open() == 0  # established
    assert len(h.of("b", IkeSaEstablished)) == K
    dropping[0] = True
    for i in range(K):
        h.a.initiate(f"c{i}", now=h.now)
    h.run(1.0)
    assert half_open() == K
    h.run(CONFIG.half_open_timeout + 1.0)
    assert half_open() == 0  # dropped: timed out
    assert len(h.b.sas) == K


def test_the_index_forgets_dropped_sas() -> None:
    h = _pair()
    _up(h)
    for sa in list(h.a.sas.values()):
        h.a.delete_ike(sa.id, h.now)
    h.run(5.0)
    assert h.a.sas == {} and h.b.sas == {}
    assert h.a.next_timer() is None and h.b.next_timer() is None
    assert len(h.a._timers) == 0 and len(h.b._timers) == 0
