"""NAT-T (RFC 3948): keepalives only from the side behind a NAT, at `keep_alive`; following
the peer's NAT to a new port when the kernel reports a mapping change."""

from __future__ import annotations

import itertools

from harness import B_IP, Flight, Harness, make_pair

from xfrmctl.ike.engine import NATT_KEEPALIVE


def keepalives(h: Harness) -> list[Flight]:
    """Take keepalives off the wire (the daemon's sockets never hand them to the engine)."""
    sent: list[Flight] = []

    def hook(f: Flight) -> list[Flight]:
        if f.dg.keepalive:
            sent.append(f)
            return []
        return [f]

    h.hook = hook
    return sent


def established(nat: bool, keep_alive: float) -> tuple[Harness, list[Flight]]:
    h, _, _ = make_pair(keep_alive=keep_alive)
    h.nat_a = nat
    sent = keepalives(h)
    h.a.initiate("a-to-b", now=h.now)
    h.run(5.0)
    assert h.a.child_sas() and h.b.child_sas()
    return h, sent


def test_behind_nat_sends_one_byte_to_the_peers_natt_port_at_the_interval() -> None:
    h, sent = established(nat=True, keep_alive=5.0)
    start = h.now
    h.run(60.0)
    assert {f.sender for f in sent} == {"a"}  # B is not behind a NAT
    assert {(f.dg.local[1], f.dg.remote) for f in sent} == {(4500, (B_IP, 4500))}
    assert all(f.dg.data == NATT_KEEPALIVE == b"\xff" for f in sent)
    in_window = [f for f in sent if f.deliver_at > start]
    assert 11 <= len(in_window) <= 13  # one every 5 s over 60 s
    gaps = [b.deliver_at - a.deliver_at for a, b in itertools.pairwise(sent)]
    assert all(abs(g - 5.0) < 0.1 for g in gaps)


def test_keep_alive_zero_sends_none() -> None:
    h, sent = established(nat=True, keep_alive=0.0)
    h.run(60.0)
    assert sent == []


def test_without_nat_sends_none() -> None:
    h, sent = established(nat=False, keep_alive=5.0)
    h.run(60.0)
    assert sent == []


def test_peer_port_changed_moves_the_ike_sa_behind_a_nat_only() -> None:
    h, _ = established(nat=True, keep_alive=0.0)
    (child_b,) = h.b.child_sas()
    (ike_b,) = h.b.ike_sas()
    nat_ip, old_port = ike_b.remote
    assert not h.b.peer_port_changed(child_b.spi_in, (B_IP, old_port + 1), h.now)  # other IP
    assert h.b.peer_port_changed(child_b.spi_in, (nat_ip, old_port + 1), h.now)
    assert h.b.ike_sas()[0].remote == (nat_ip, old_port + 1)
    assert not h.b.peer_port_changed(child_b.spi_in, (nat_ip, old_port + 1), h.now)  # no change
    (child_a,) = h.a.child_sas()
    assert not h.a.peer_port_changed(child_a.spi_in, (B_IP, 4501), h.now)  # B is not NATed
