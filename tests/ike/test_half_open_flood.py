"""One address flooding IKE_SA_INIT at 2,000/s, answering every cookie, must not lock out a
legitimate initiator: per-source half-open limits (strongSwan's block_threshold and
cookie_threshold_ip). Without them (the second case) the flood fills every slot."""

from __future__ import annotations

import ipaddress

from harness import B_IP, Flight, child_spec, conn_spec, make_pair, seeded_endpoint

from xfrmctl.ike.engine import EndpointConfig
from xfrmctl.ike.events import IkeSaEstablished
from xfrmctl.ike.iana import ExchangeType
from xfrmctl.ike.message import decode_message

FLOODER = ipaddress.ip_address("198.51.100.66")
RATE = 2000.0  # IKE_SA_INIT requests per second
STEP = 0.01  # seconds of simulated time per round
FLOOD = 6.0  # seconds


def run_flood(config: EndpointConfig) -> tuple[bool, int, int]:
    """(A established during the flood, most half-open SAs from the flooder, its requests)."""
    h, _, _ = make_pair(config=config)
    x_spec = conn_spec("x-to-b", FLOODER, B_IP, "x.example", "b.example", (child_spec(),))
    x = seeded_endpoint(x_spec, None, 99)
    to_flooder: list[bytes] = []

    def hook(f: Flight) -> list[Flight]:
        if f.sender == "b" and f.dg.remote[0] == FLOODER:
            to_flooder.append(f.dg.data)
            return []
        return [f]

    h.hook = hook
    sent = worst = 0
    for step in range(int(FLOOD / STEP)):
        if step == int(1.0 / STEP):  # the flood is in full swing: A starts
            h.a.initiate("a-to-b", now=h.now)
        for _ in range(int(RATE * STEP)):
            x.initiate("x-to-b", now=h.now)
        for data in to_flooder:  # COOKIE challenges: the flooder answers every one
            x.receive_datagram(data, (FLOODER, 500), (B_IP, 500), h.now)
        to_flooder.clear()
        for dg in x.datagrams_to_send():
            if decode_message(dg.data).exchange == ExchangeType.IKE_SA_INIT:
                sent += 1
                h.b.receive_datagram(dg.data, (B_IP, 500), (FLOODER, 500), h.now)
        h.run(STEP)
        worst = max(worst, h.b.half_open.from_ip(FLOODER))
    established = any(e.remote_id == "a.example" for e in h.of("b", IkeSaEstablished))
    return established and bool(h.of("a", IkeSaEstablished)), worst, sent


def test_a_legitimate_initiator_completes_while_one_address_floods() -> None:
    ok, worst, sent = run_flood(EndpointConfig())
    assert sent >= RATE * FLOOD * 0.9  # the flood really ran, cookies answered and all
    assert ok, "A was locked out by one flooding address"
    assert worst <= EndpointConfig().block_threshold


def test_without_per_source_limits_the_flood_locks_everyone_out() -> None:
    cfg = EndpointConfig(block_threshold=10**6, cookie_threshold_ip=10**6)
    ok, worst, _ = run_flood(cfg)
    assert worst >= cfg.max_half_open  # one address took every slot
    assert not ok
