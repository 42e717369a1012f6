"""NAT-T keepalives (RFC 3948 §4): only the side behind a NAT sends them, at `keep_alive`."""

from __future__ import annotations

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
    gaps = [b.deliver_at - a.deliver_at for a, b in zip(sent, sent[1:], strict=False)]
    assert all(abs(g - 5.0) < 0.1 for g in gaps)


def test_keep_alive_zero_sends_none() -> None:
    h, sent = established(nat=True, keep_alive=0.0)
    h.run(60.0)
    assert sent == []


def test_without_nat_sends_none() -> None:
    h, sent = established(nat=False, keep_alive=5.0)
    h.run(60.0)
    assert sent == []
