"""Round trips: any SA/policy encodes to bytes that decode back to an equal object, and every
request body wire.py packs is the bytes pyroute2 encodes for the same message (the reference)."""

from __future__ import annotations

import dataclasses
import re
import struct
from ipaddress import IPv4Address, IPv6Address, ip_network
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroute2_reference import (
    aevent_msg,
    allocspi_msg,
    encode,
    encode_policy,
    encode_sa,
    flush_sas_msg,
    policy_id_msg,
    sa_id_msg,
    socket_policy_msg,
)

from xfrmctl.kernel import types as types_module
from xfrmctl.kernel import wire as w
from xfrmctl.kernel.events import PolicyDeleted, SaDeleted, decode_event
from xfrmctl.kernel.fields import get_mark, unpack_addr
from xfrmctl.kernel.messages import (
    AE_LVAL,
    AE_RVAL,
    Msg,
    xfrm_msg,
    xfrm_userpolicy_flush,
    xfrm_userpolicy_id,
    xfrm_usersa_id,
)
from xfrmctl.kernel.policy import decode_policy
from xfrmctl.kernel.policy import delete_request as policy_delete_request
from xfrmctl.kernel.policy import update_request as policy_update_request
from xfrmctl.kernel.sa import add_request, allocspi_request, decode_counters, decode_sa
from xfrmctl.kernel.sa import delete_request as sa_delete_request
from xfrmctl.kernel.socket import XfrmMarshal
from xfrmctl.kernel.types import (
    SA,
    Action,
    Aead,
    Auth,
    Comp,
    Crypt,
    Dir,
    Encap,
    Lifetime,
    Mark,
    Mode,
    Offload,
    Policy,
    PolicyId,
    Proto,
    ReplayState,
    SaDir,
    SaId,
    Selector,
    SpiRange,
    SpiRequest,
    Template,
)

u32 = st.integers(0, 2**32 - 1)
port = st.integers(0, 0xFFFF)
v4 = st.builds(IPv4Address, u32)
v6 = st.builds(IPv6Address, st.integers(0, 2**128 - 1))
name = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=63)
key = st.binary(max_size=64)
limit = st.none() | st.integers(0, 2**64 - 2)


def pair(version: int) -> st.SearchStrategy[tuple[Any, Any]]:
    addr = v4 if version == 4 else v6
    return st.tuples(addr, addr)


def selector(version: int) -> st.SearchStrategy[Selector]:
    bits = 32 if version == 4 else 128
    net = st.builds(
        lambda a, p: ip_network(f"{a}/{p}", strict=False),
        v4 if version == 4 else v6,
        st.integers(0, bits),
    )
    return st.builds(Selector, net, net, st.integers(0, 255), port, port, st.integers(0, 2**31 - 1))


lifetimes = st.builds(Lifetime, limit, limit, limit, limit, limit, limit, limit, limit)
marks = st.none() | st.builds(Mark, u32, u32)


@st.composite
def sas(draw: st.DrawFn) -> SA:
    version = draw(st.sampled_from([4, 6]))
    src, dst = draw(pair(version))
    proto = draw(st.sampled_from(list(Proto)))
    aead = crypt = auth = comp = None
    if proto == Proto.ESP:
        if draw(st.booleans()):
            aead = Aead(draw(name), draw(key), draw(st.sampled_from([64, 96, 128])))
        else:
            crypt = Crypt(draw(name), draw(key))
            auth = draw(st.none() | st.builds(Auth, name, key, st.integers(0, 512)))
    elif proto == Proto.AH:
        auth = Auth(draw(name), draw(key), draw(st.integers(0, 512)))
    else:
        comp = Comp(draw(name))
    esn = draw(st.booleans())
    direction = draw(st.sampled_from(list(SaDir)))
    window = 0 if direction == SaDir.OUT else draw(st.integers(0, 4096))
    return SA(
        src,
        dst,
        draw(u32),
        proto,
        draw(st.sampled_from(list(Mode))),
        draw(u32),
        aead=aead,
        crypt=crypt,
        auth=auth,
        comp=comp,
        selector=draw(st.none() | selector(version)),
        lifetime=draw(lifetimes),
        replay_window=window,
        esn=esn,
        encap=draw(st.none() | st.builds(Encap, port, port, st.just(2), st.none() | st.just(src))),
        mark=draw(marks),
        if_id=draw(u32),
        offload=draw(
            st.none() | st.builds(Offload, st.integers(1, 2**31 - 1), st.booleans(), st.booleans())
        ),
        direction=direction,
        flags=draw(st.integers(0, 127)),
        tfc_pad=draw(u32),
    )


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    version = draw(st.sampled_from([4, 6]))
    templates = []
    for _ in range(draw(st.integers(0, 3))):
        ends = draw(st.none() | pair(version))
        templates.append(
            Template(
                draw(st.sampled_from(list(Proto))),
                draw(st.sampled_from(list(Mode))),
                draw(u32),
                ends[0] if ends else None,
                ends[1] if ends else None,
                draw(u32),
                draw(st.booleans()),
                draw(st.integers(0, 3)),
                draw(u32),
                draw(u32),
                draw(u32),
            )
        )
    return Policy(
        draw(selector(version)),
        draw(st.sampled_from(list(Dir))),
        tuple(templates),
        draw(st.sampled_from(list(Action))),
        draw(u32),
        draw(marks),
        draw(u32),
        draw(lifetimes),
        draw(st.integers(0, 3)),
    )


def wire(msg: xfrm_msg, mtype: int) -> Any:
    """The reference encoding of a message, decoded."""
    (parsed,) = list(XfrmMarshal().parse(encode(msg, mtype)))
    return parsed


@settings(max_examples=300, deadline=None)
@given(sas())
def test_sa_round_trip(sa: SA) -> None:
    assert decode_sa(wire(encode_sa(sa), Msg.NEWSA)) == sa


@settings(max_examples=300, deadline=None)
@given(policies())
def test_policy_round_trip(policy: Policy) -> None:
    assert decode_policy(wire(encode_policy(policy), Msg.NEWPOLICY)) == policy


@settings(max_examples=50, deadline=None)
@given(sas())
def test_delsa_notification_carries_the_whole_sa(sa: SA) -> None:
    """DELSA notifications are xfrm_usersa_id + XFRMA_SA(usersa_info) + the SA's own NLAs."""
    full = encode_sa(sa)
    msg = xfrm_usersa_id()
    info = {k: v for k, v in full.items() if k not in ("header", "attrs", "value")}
    msg["attrs"] = [("XFRMA_SA", info), *full["attrs"]]
    event = decode_event(wire(msg, Msg.DELSA))
    assert event == SaDeleted(sa)


@settings(max_examples=50, deadline=None)
@given(policies())
def test_delpolicy_notification_carries_the_whole_policy(policy: Policy) -> None:
    full = encode_policy(policy)
    msg = xfrm_userpolicy_id()
    info = {k: v for k, v in full.items() if k not in ("header", "attrs", "value")}
    msg["attrs"] = [("XFRMA_POLICY", info), *full["attrs"]]
    event = decode_event(wire(msg, Msg.DELPOLICY))
    assert event == PolicyDeleted(policy)


@settings(max_examples=100, deadline=None)
@given(sas(), policies())
def test_fast_struct_decoder_matches_pyroute2_field_by_field(sa: SA, policy: Policy) -> None:
    """The one-struct decoder reads exactly the values pyroute2's own decoder reads."""
    from xfrmctl.kernel import messages

    def decoded() -> list[Any]:
        raw = [encode(encode_sa(sa), Msg.NEWSA), encode(encode_policy(policy), Msg.NEWPOLICY)]
        return [m for data in raw for m in XfrmMarshal().parse(data)]

    def values(msgs: list[Any]) -> list[dict[str, Any]]:
        skip = ("header", "attrs")
        return [{k: v for k, v in m.items() if k not in skip and k[:2] != "__"} for m in msgs]

    fast = decoded()
    saved = dict(messages._fast_fields._unpackers)
    try:
        for cls in saved:
            messages._fast_fields._unpackers[cls] = None
        slow = decoded()
        assert values(slow) == values(fast)
        assert decode_sa(slow[0]) == sa and decode_policy(slow[1]) == policy
    finally:
        messages._fast_fields._unpackers.clear()
        messages._fast_fields._unpackers.update(saved)


# --- wire.py: the struct encoders that requests send give pyroute2's bytes ----------------------


def framed(mtype: int, body: bytes) -> Any:
    (parsed,) = list(
        XfrmMarshal().parse(struct.pack("=IHHII", 16 + len(body), mtype, 0, 0, 0) + body)
    )
    return parsed


def pyroute2_body(msg: xfrm_msg, mtype: int) -> bytes:
    raw = encode(msg, mtype)
    # The header's length counts the padding, but for xfrm_usersa_flush (1 byte, then 3 of
    # padding); the socket frames a body as 16 + len(body) bytes, the padding included.
    assert (struct.unpack_from("=I", raw)[0] + 3) & ~3 == len(raw)
    return raw[16:]


@settings(max_examples=300, deadline=None)
@given(sas())
def test_wire_sa_body_is_pyroute2s_bytes(sa: SA) -> None:
    body = w.sa_body(sa)
    assert body == pyroute2_body(encode_sa(sa), Msg.NEWSA)
    assert decode_sa(framed(Msg.NEWSA, body)) == sa
    req = add_request(sa)
    assert req.body == body and decode_sa(req.msg) == sa


@settings(max_examples=300, deadline=None)
@given(policies())
def test_wire_policy_body_is_pyroute2s_bytes(policy: Policy) -> None:
    body = w.policy_body(policy)
    assert body == pyroute2_body(encode_policy(policy), Msg.NEWPOLICY)
    assert decode_policy(framed(Msg.NEWPOLICY, body)) == policy
    req = policy_update_request(policy)
    assert req.body == body and decode_policy(req.msg) == policy


@settings(max_examples=200, deadline=None)
@given(policies(), marks, u32, u32)
def test_wire_policy_id_body_is_pyroute2s_bytes(
    policy: Policy, mark: Mark | None, if_id: int, index: int
) -> None:
    pid = PolicyId(policy.selector, policy.dir, mark, if_id)
    body = w.policy_id_body(pid, index)
    assert body == pyroute2_body(policy_id_msg(pid, index), Msg.DELPOLICY)
    req = policy_delete_request(pid)
    assert req.body == w.policy_id_body(pid)
    assert req.msg["dir"] == pid.dir and get_mark(req.msg) == mark


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([4, 6]).flatmap(pair), u32, st.sampled_from(list(Proto)), marks)
def test_wire_sa_id_body_is_pyroute2s_bytes(
    ends: tuple[Any, Any], spi: int, proto: Proto, mark: Mark | None
) -> None:
    sa_id = SaId(ends[1], spi, proto)
    body = w.sa_id_body(sa_id, mark)
    assert body == pyroute2_body(sa_id_msg(sa_id, mark), Msg.DELSA)
    req = sa_delete_request(sa_id, mark)
    assert req.body == body and req.msg["spi"] == spi and get_mark(req.msg) == mark


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([4, 6]).flatmap(pair),
    st.sampled_from(list(Proto)),
    st.sampled_from(list(Mode)),
    st.tuples(st.integers(0x100, 2**32 - 1), st.integers(0x100, 2**32 - 1)).map(sorted),
    u32,
    marks,
    u32,
    u32,
)
def test_wire_allocspi_body_is_pyroute2s_bytes(
    ends: tuple[Any, Any],
    proto: Proto,
    mode: Mode,
    spis: list[int],
    reqid: int,
    mark: Mark | None,
    if_id: int,
    seq: int,
) -> None:
    req_spec = SpiRequest(ends[0], ends[1], proto, reqid, mode, SpiRange(*spis), mark, if_id, seq)
    req = allocspi_request(req_spec)
    assert (
        req.body == w.allocspi_body(req_spec) == pyroute2_body(allocspi_msg(req_spec), Msg.ALLOCSPI)
    )
    parsed = req.msg
    assert (parsed["min"], parsed["max"], parsed["reqid"], parsed["seq"]) == (*spis, reqid, seq)
    assert unpack_addr(parsed["saddr"], parsed["family"]) == ends[0]
    assert get_mark(parsed) == mark and (parsed.get_attr("XFRMA_IF_ID") or 0) == if_id


@pytest.mark.parametrize(
    ("lo", "hi", "words"),
    [
        (0x200, 0x100, "low end 0x200 above its high end 0x100"),
        (0xFF, 0x1FF, "low end 0xff outside 0x100-0xffffffff (the kernel reserves SPIs below"),
        (0, 0, "low end 0x0 outside"),
        (0x100, 2**32, "high end 0x100000000 outside 0x100-0xffffffff"),
        (0x100, 0xFF, "high end 0xff outside"),
    ],
)
def test_spi_range_refuses_a_bad_range(lo: int, hi: int, words: str) -> None:
    with pytest.raises(ValueError, match=re.escape(words)):
        SpiRange(lo, hi)


def test_spi_range_defaults_to_every_spi_the_kernel_hands_out() -> None:
    assert (SpiRange().lo, SpiRange().hi) == (0x100, 0xFFFFFFFF)
    assert str(SpiRange(0x100, 0x100)) == "0x100-0x100"
    with pytest.raises(ValueError, match="mixes address families"):
        SpiRequest(IPv4Address(1), IPv6Address(2))


@given(st.none() | st.sampled_from(list(Proto)))
def test_wire_flush_bodies_are_pyroute2s_bytes(proto: Proto | None) -> None:
    assert w.flush_sas_body(proto) == pyroute2_body(flush_sas_msg(proto), Msg.FLUSHSA)
    flush = xfrm_userpolicy_flush()
    flush["attrs"] = []
    assert pyroute2_body(flush, Msg.FLUSHPOLICY) == w.FLUSH_POLICIES_BODY
    dump = xfrm_userpolicy_id()
    dump["attrs"] = []
    assert pyroute2_body(dump, Msg.GETPOLICY) == w.POLICY_DUMP_BODY


replays = st.builds(
    ReplayState,
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.integers(0, 4096),
    st.binary(max_size=600),
)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([4, 6]).flatmap(pair), u32, marks, st.none() | replays, st.booleans())
def test_wire_aevent_body_is_pyroute2s_bytes(
    ends: tuple[Any, Any], spi: int, mark: Mark | None, replay: ReplayState | None, esn: bool
) -> None:
    sa_id = SaId(ends[1], spi)
    if replay is not None and not esn:
        replay = ReplayState(replay.oseq >> 32, replay.seq >> 32, 32, replay.bitmap[:4])
    flags = AE_RVAL | (AE_LVAL if replay is None else 0)
    body = w.aevent_body(sa_id, ends[0], flags, mark, replay, esn=esn)
    ref = aevent_msg(sa_id, ends[0], flags, mark, replay, esn=esn)
    assert body == pyroute2_body(ref, Msg.NEWAE)
    counters = decode_counters(framed(Msg.NEWAE, body))
    assert counters.id == SaId(sa_id.dst, sa_id.spi, sa_id.proto, mark)
    if replay is not None:
        assert counters.replay is not None
        assert (counters.replay.oseq, counters.replay.seq) == (replay.oseq, replay.seq)


def test_wire_aevent_refuses_64_bit_sequence_numbers_without_esn() -> None:
    replay = ReplayState(2**32, 0, 32)
    with pytest.raises(ValueError, match="64-bit sequence numbers need an ESN SA"):
        w.aevent_body(SaId(IPv4Address(2), 0x100), IPv4Address(1), AE_RVAL, None, replay)


@pytest.mark.parametrize("family", [2, 10])
@pytest.mark.parametrize("direction", list(Dir))
def test_wire_socket_policy_is_pyroute2s_bytes(family: int, direction: Dir) -> None:
    raw = w.socket_policy(family, direction)
    assert len(raw) == 168
    assert raw == pyroute2_body(socket_policy_msg(family, direction), Msg.NEWPOLICY)


def test_wire_refuses_an_algorithm_name_the_kernel_cannot_hold() -> None:
    sa = SA(IPv4Address(1), IPv4Address(2), 0x100, crypt=Crypt("x" * 64, b""))
    with pytest.raises(ValueError, match="longer than 63 bytes"):
        w.sa_body(sa)
    with pytest.raises(ValueError, match="longer than 63 bytes"):
        add_request(sa)


@settings(max_examples=200, deadline=None)
@given(sas())
def test_the_reconciles_sa_key_is_decode_sas(sa: SA) -> None:
    """A reconcile reads only (dst, SPI, protocol) of each dumped SA: the same as a full
    decode gives."""
    from xfrmctl.kernel.reconcile import sa_key
    from xfrmctl.kernel.sa import decode_sa_key

    msg = wire(encode_sa(sa), Msg.NEWSA)
    assert decode_sa_key(msg) == sa_key(decode_sa(msg)) == sa_key(sa)


def _reference_policy_drift(expected: list[Policy], dumped: list[Policy]) -> tuple[Any, ...]:
    """The comparison as it was, every dumped policy held in a dict first."""
    from xfrmctl.kernel.reconcile import same_policy
    from xfrmctl.kernel.transaction import DEFAULT_OWNERSHIP

    by_slot = {(p.id, p.priority): p for p in dumped}
    foreign: dict[Any, list[Policy]] = {}
    for p in dumped:
        if not DEFAULT_OWNERSHIP.owns_policy(p):
            foreign.setdefault(p.id, []).append(p)
    missing, altered, shadows = [], [], []
    for ours in expected:
        found = by_slot.get((ours.id, ours.priority))
        if found is None:
            missing.append(ours)
        elif not same_policy(found, ours):
            altered.append(ours)
        shadows += [(ours, p) for p in foreign.get(ours.id, []) if p.priority < ours.priority]
    return missing, altered, shadows


@settings(max_examples=200, deadline=None)
@given(st.lists(policies(), max_size=5), st.lists(policies(), max_size=5), st.data())
def test_the_streamed_policy_comparison_is_the_held_one(
    expected: list[Policy], others: list[Policy], data: st.DataObject
) -> None:
    """The reconcile compares each dumped policy as it comes (PolicyScan) and keeps none:
    the same drift as holding the whole dump. The dump mixes ours (some dropped, some with
    another priority or action) with foreign ones, in any order."""
    import dataclasses

    from xfrmctl.kernel.reconcile import compare

    dumped = [p for p in expected if data.draw(st.booleans())]
    dumped += [dataclasses.replace(p, priority=p.priority ^ 1) for p in expected[:1]]
    dumped += [
        dataclasses.replace(p, selector=q.selector, dir=q.dir, mark=q.mark, if_id=q.if_id)
        for p, q in zip(others, expected, strict=False)
    ]
    dumped = data.draw(st.permutations(dumped + others))
    drift = compare([], expected + expected[:1], [], dumped)
    got = (
        drift.missing_policies,
        drift.altered_policies,
        [(s.ours, s.theirs) for s in drift.shadows],
    )
    assert got == _reference_policy_drift(expected + expected[:1], dumped)


def _owned(policy: Policy, n: int) -> Policy:
    from xfrmctl.kernel.transaction import DEFAULT_OWNERSHIP

    templates = tuple(
        dataclasses.replace(t, reqid=DEFAULT_OWNERSHIP.reqid(n + i))
        for i, t in enumerate(policy.templates)
    )
    return dataclasses.replace(policy, templates=templates)


@settings(max_examples=200, deadline=None)
@given(st.lists(policies(), max_size=5), st.lists(policies(), max_size=5), st.data())
def test_the_byte_compared_policy_scan_is_the_decoded_one(
    expected: list[Policy], others: list[Policy], data: st.DataObject
) -> None:
    """The reconcile settles a dumped policy that prints as one of ours without decoding
    it, and decodes the rest: the same drift as comparing decoded policies. Half of ours
    carry owned reqids (the byte path); dumped ones may be ours, ours at another priority,
    ours with other templates, or foreign under our ids."""
    from xfrmctl.kernel.policy import request_message
    from xfrmctl.kernel.reconcile import PolicyScan
    from xfrmctl.kernel.transaction import DEFAULT_OWNERSHIP

    expected = [
        _owned(p, 1 + 8 * i) if data.draw(st.booleans()) else p for i, p in enumerate(expected)
    ]
    dumped = [p for p in expected if data.draw(st.booleans())]
    dumped += [dataclasses.replace(p, priority=p.priority ^ 1) for p in expected[:1]]
    dumped += [_owned(p, 200) for p in expected[1:2] if p.templates]
    dumped += [
        dataclasses.replace(p, selector=q.selector, dir=q.dir, mark=q.mark, if_id=q.if_id)
        for p, q in zip(others, expected, strict=False)
    ]
    dumped = data.draw(st.permutations(dumped + others))
    scan = PolicyScan(expected + expected[:1], DEFAULT_OWNERSHIP)
    for p in dumped:
        scan.add_message(request_message(p))
    drift = scan.drift([], set())
    got = (
        drift.missing_policies,
        drift.altered_policies,
        [(s.ours, s.theirs) for s in drift.shadows],
    )
    assert got == _reference_policy_drift(expected + expected[:1], dumped)


def test_a_dumped_policy_printing_as_ours_is_not_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    from xfrmctl.kernel import policy as policy_ops
    from xfrmctl.kernel.reconcile import PolicyScan
    from xfrmctl.kernel.transaction import DEFAULT_OWNERSHIP

    ours = _owned(
        Policy(
            Selector.of("10.1.0.0/16", "10.2.0.0/16"),
            Dir.OUT,
            (
                Template(
                    Proto.ESP, Mode.TUNNEL, 0, IPv4Address("192.0.2.1"), IPv4Address("192.0.2.2")
                ),
            ),
            priority=375,
            mark=Mark(0x10, 0xF0),
            if_id=3,
        ),
        5,
    )

    def no_decoding(raw: bytes) -> Policy:
        raise AssertionError("decoded")

    def no_ids(*_: object) -> None:
        raise AssertionError("an id was built")

    monkeypatch.setattr(policy_ops, "decode_policy_message", no_decoding)
    with monkeypatch.context() as ids:
        # Nor is an index by PolicyId built: it was most of a reconcile's peak (issue 15).
        ids.setattr(types_module, "PolicyId", no_ids)
        scan = PolicyScan([ours], DEFAULT_OWNERSHIP)
        scan.add_message(policy_ops.request_message(ours))
        assert not scan.drift([], set())
    altered = dataclasses.replace(ours, action=Action.BLOCK)
    with pytest.raises(AssertionError, match="decoded"):
        scan.add_message(policy_ops.request_message(altered))


def test_a_selector_keeps_the_hash_of_its_fields() -> None:
    """The hash is kept once taken (issue 15): still that of the fields, and a selector
    made from another by `replace` has its own."""
    one = Selector.of("10.1.0.0/16", "10.2.0.0/16", proto=6, dport=443)
    fields = (one.src, one.dst, one.proto, one.sport, one.dport, one.ifindex)
    assert hash(one) == hash(fields) == hash(one)
    other = dataclasses.replace(one, dport=80)
    assert hash(other) == hash((one.src, one.dst, 6, 0, 80, 0)) != hash(one)
    assert {one: "a", other: "b"}[Selector.of("10.1.0.0/16", "10.2.0.0/16", 6, 0, 80)] == "b"
    assert "_hash" not in repr(one) and one == Selector.of("10.1.0.0/16", "10.2.0.0/16", 6, 0, 443)


def test_a_policy_makes_its_identity_once() -> None:
    """The identity is made on first use and kept (issue 15): every later use gets the same
    object, it is still that of the fields, and a policy made by `replace` has its own."""
    sel = Selector.of("10.1.0.0/16", "10.2.0.0/16")
    ends = IPv4Address("192.0.2.1"), IPv4Address("192.0.2.2")
    one = Policy(sel, Dir.OUT, (Template(Proto.ESP, Mode.TUNNEL, 5, *ends),), priority=7)
    first = one.id
    assert one.id is first and first == PolicyId(sel, Dir.OUT, None, 0)
    moved = dataclasses.replace(one, dir=Dir.IN, if_id=3)
    assert moved.id == PolicyId(sel, Dir.IN, None, 3) and one.id is first
    assert not re.search(r"\b_id=", repr(one))
    assert one == dataclasses.replace(moved, dir=Dir.OUT, if_id=0)
