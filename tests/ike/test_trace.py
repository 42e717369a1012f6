"""Debug traces of decoded messages (issue 5): every payload named, no secret in any encoding."""

from __future__ import annotations

import base64

from harness import PSK, Flight, Harness, child_spec, make_pair

from xfrmctl.ike.events import ChildSaReady, IkeSaEstablished, MessageTrace
from xfrmctl.ike.iana import ExchangeType, NotifyType, PayloadType, name_of
from xfrmctl.ike.message import decode_message
from xfrmctl.ike.payloads import (
    AuthPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    SkPayload,
)
from xfrmctl.ike.sa import IkeSa
from xfrmctl.ike.sk import decode_inner, unprotect
from xfrmctl.ike.trace import describe_payload


def _traced_handshake() -> Harness:
    # Two children, the second with PFS so a KE payload travels inside SK too.
    h, _, _ = make_pair(
        children=(child_spec("one"), child_spec("two", proposals=("aes256gcm16-x25519",)))
    )
    h.a.trace = h.b.trace = True
    h.a.initiate("a-to-b", now=h.now)
    h.run(3.0)
    assert h.of("a", IkeSaEstablished) and len(h.of("a", ChildSaReady)) == 2
    h.a.delete_child(h.a.child_sas()[0].spi_in, h.now)
    h.run(2.0)
    return h


def _decoded(h: Harness, sa_a: IkeSa) -> list[tuple[str, int, bool, list[Payload]]]:
    """(sender, exchange, is_response, plaintext payloads) of every datagram on the wire."""
    assert sa_a.crypto is not None
    out = []
    for sender, data in h.log:
        msg = decode_message(data)
        payloads = list(msg.payloads)
        if payloads and isinstance(payloads[-1], SkPayload):
            keys = sa_a.crypto.out_keys() if sender == "a" else sa_a.crypto.in_keys()
            payloads = decode_inner(*unprotect(keys, data, msg))
        out.append((sender, msg.exchange, msg.is_response, payloads))
    return out


def _encodings(secret: bytes) -> list[str]:
    forms = [secret.hex(), secret.hex().upper(), repr(secret), base64.b64encode(secret).decode()]
    forms += [secret[:8].hex(), repr(secret[:8])[2:-1]]
    return [f for f in forms if len(f) >= 8]


def test_handshake_trace_names_every_payload_and_no_secret() -> None:
    h = _traced_handshake()
    (sa_a,) = h.a.sas.values()
    wire = _decoded(h, sa_a)
    traces_a = h.of("a", MessageTrace)
    traces_b = h.of("b", MessageTrace)
    # Each side traces each message it sent and each it received: no loss, no fragments.
    sent = {side: [w for w in wire if w[0] == side] for side in ("a", "b")}
    assert [t.direction for t in traces_a].count("out") == len(sent["a"])
    assert [t.direction for t in traces_b].count("in") == len(sent["a"])
    assert [t.direction for t in traces_b].count("out") == len(sent["b"])
    for side, traces in (("a", traces_a), ("b", traces_b)):
        outs = [t for t in traces if t.direction == "out"]
        for (_, exchange, is_response, payloads), t in zip(sent[side], outs, strict=True):
            head = t.lines[0]
            assert name_of(ExchangeType, exchange) in head
            assert ("response" if is_response else "request") in head
            kinds = [line.split()[0] for line in t.lines[1:]]
            assert kinds == [name_of(PayloadType, p.ptype) for p in payloads]
    # The handshake exercised every payload we want to see named.
    all_kinds = {line.split()[0] for t in traces_a + traces_b for line in t.lines[1:]}
    for kind in ("SA", "KE", "NONCE", "IDi", "IDr", "AUTH", "TSi", "TSr", "NOTIFY", "DELETE"):
        assert kind in all_kinds

    secrets: list[bytes] = [PSK.psk]
    for _, _, _, payloads in wire:
        for p in payloads:
            if isinstance(p, KePayload | NoncePayload | AuthPayload):
                secrets.append(p.data)
            if isinstance(p, NotifyPayload) and p.notify_type >= 16384 and len(p.data) >= 8:
                secrets.append(p.data)  # NAT-D hashes, cookies: sizes only
    for sa in (*h.a.sas.values(), *h.b.sas.values()):
        assert sa.crypto is not None
        k = sa.crypto.keys
        secrets += [k.sk_d, k.sk_ai, k.sk_ar, k.sk_ei, k.sk_er, k.sk_pi, k.sk_pr]
    for ev in h.of("a", ChildSaReady) + h.of("b", ChildSaReady):
        secrets += [ev.encr_key_in, ev.encr_key_out, ev.integ_key_in, ev.integ_key_out]
    secrets = [s for s in secrets if len(s) >= 8]
    assert len(secrets) > 20
    text = "\n".join(t.text + repr(t) for t in traces_a + traces_b)
    for s in secrets:
        for form in _encodings(s):
            assert form not in text, f"secret leaked as {form!r}"
    # Sizes are there instead.
    assert any("NONCE (32 bytes)" in line for t in traces_a for line in t.lines)
    assert any("AUTH PSK (32 bytes)" in line for t in traces_a for line in t.lines)


def test_trace_is_off_by_default() -> None:
    h, _, _ = make_pair()
    h.a.initiate("a-to-b", now=h.now)
    h.run(2.0)
    assert h.of("a", IkeSaEstablished)
    assert not h.of("a", MessageTrace) and not h.of("b", MessageTrace)


def test_describe_payload_shows_public_fields() -> None:
    n = NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, b"\x00\x1f")  # asks for x25519
    assert describe_payload(n) == "NOTIFY INVALID_KE_PAYLOAD group=CURVE25519"
    ke = KePayload(31, bytes(range(32)))
    assert describe_payload(ke) == "KE CURVE25519 (32 bytes)"


def test_retransmissions_are_traced_in_one_line() -> None:
    h, _, _ = make_pair()
    h.a.trace = h.b.trace = True
    dropped: list[bool] = []

    def lose_first_auth_response(f: Flight) -> list[Flight]:
        msg = decode_message(f.dg.data)
        if msg.exchange == ExchangeType.IKE_AUTH and msg.is_response and not dropped:
            dropped.append(True)
            return []
        return [f]

    h.hook = lose_first_auth_response
    h.a.initiate("a-to-b", now=h.now)
    h.run(10.0)
    assert h.of("a", IkeSaEstablished)
    notes_a = [t.lines for t in h.of("a", MessageTrace) if len(t.lines) == 1]
    notes_b = [t.lines for t in h.of("b", MessageTrace) if len(t.lines) == 1]
    assert notes_a == [("out IKE_AUTH request mid=1 retransmission 1/5",)]
    assert len(notes_b) == 1 and "sent the same response again" in notes_b[0][0]
    assert notes_b[0][0].startswith("in IKE_AUTH request 1")
