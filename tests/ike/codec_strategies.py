"""Hypothesis strategies for IKEv2 payloads and messages (shared by the codec tests)."""

from __future__ import annotations

import ipaddress

from hypothesis import strategies as st

from xfrmctl.ike.iana import ExchangeType, ProtocolId, TransformType
from xfrmctl.ike.message import Message
from xfrmctl.ike.payloads import (
    AuthPayload,
    CertPayload,
    CertReqPayload,
    CpPayload,
    DeletePayload,
    IdPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    SaPayload,
    SkfPayload,
    SkPayload,
    TrafficSelector,
    TsPayload,
    VendorPayload,
)
from xfrmctl.ike.transforms import Proposal, Transform

blob = st.binary(max_size=64)

transform = st.builds(
    Transform,
    st.sampled_from(list(TransformType)),
    st.integers(0, 0xFFFF),
    st.one_of(st.none(), st.sampled_from([128, 192, 256])),
)


@st.composite
def proposals(draw: st.DrawFn) -> tuple[Proposal, ...]:
    n = draw(st.integers(1, 4))
    out = []
    for i in range(n):
        proto = draw(st.sampled_from([ProtocolId.IKE, ProtocolId.ESP, ProtocolId.AH]))
        spi = draw(st.sampled_from([b"", b"\x01\x02\x03\x04", bytes(range(8))]))
        ts = tuple(draw(st.lists(transform, min_size=0, max_size=6)))
        out.append(Proposal(proto, ts, i + 1, spi))
    return tuple(out)


@st.composite
def selectors(draw: st.DrawFn) -> TrafficSelector:
    v6 = draw(st.booleans())
    if v6:
        a = ipaddress.IPv6Address(draw(st.integers(0, 2**128 - 1)))
        b = ipaddress.IPv6Address(draw(st.integers(0, 2**128 - 1)))
    else:
        a = ipaddress.IPv4Address(draw(st.integers(0, 2**32 - 1)))  # type: ignore[assignment]
        b = ipaddress.IPv4Address(draw(st.integers(0, 2**32 - 1)))  # type: ignore[assignment]
    return TrafficSelector(
        a, b, draw(st.integers(0, 255)), draw(st.integers(0, 65535)), draw(st.integers(0, 65535))
    )


ident = st.one_of(
    st.tuples(st.just(1), st.binary(min_size=4, max_size=4)),
    st.tuples(st.just(5), st.binary(min_size=16, max_size=16)),
    st.tuples(st.sampled_from([2, 3, 9, 11]), blob),
)

crit = st.booleans()

payload: st.SearchStrategy[Payload] = st.one_of(
    st.builds(lambda p, c: SaPayload(p, critical=c), proposals(), crit),
    st.builds(lambda g, d: KePayload(g, d), st.integers(0, 0xFFFF), blob),
    st.builds(lambda i, r: IdPayload(i[0], i[1], r), ident, st.booleans()),
    st.builds(lambda e, d: CertPayload(e, d), st.integers(0, 255), blob),
    st.builds(lambda e, d: CertReqPayload(e, d), st.integers(0, 255), blob),
    st.builds(lambda m, d: AuthPayload(m, d), st.integers(0, 255), blob),
    st.builds(NoncePayload, st.binary(min_size=16, max_size=256)),
    st.builds(
        lambda t, d, p, s: NotifyPayload(t, d, p, s),
        st.integers(0, 0xFFFF),
        blob,
        st.integers(0, 3),
        st.sampled_from([b"", b"abcd", bytes(8)]),
    ),
    st.builds(
        lambda p, s: DeletePayload(p, tuple(s), 4 if s else 0),
        st.sampled_from([2, 3]),
        st.lists(st.binary(min_size=4, max_size=4), max_size=5),
    ),
    st.just(DeletePayload(ProtocolId.IKE)),
    st.builds(VendorPayload, blob),
    st.builds(
        lambda s, r: TsPayload(tuple(s), r), st.lists(selectors(), max_size=4), st.booleans()
    ),
    st.builds(
        lambda t, a: CpPayload(t, tuple(a)),
        st.integers(1, 4),
        st.lists(st.tuples(st.integers(0, 0x7FFF), blob), max_size=4),
    ),
)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    plain = draw(st.lists(payload, max_size=6))
    tail = draw(
        st.one_of(
            st.none(),
            st.builds(SkPayload, st.sampled_from([0, 33, 35, 41]), blob),
            st.builds(
                SkfPayload,
                st.sampled_from([0, 35]),
                st.integers(1, 10),
                st.integers(1, 10),
                blob,
            ),
        )
    )
    if tail is not None:
        plain.append(tail)
    return Message(
        draw(st.binary(min_size=8, max_size=8)),
        draw(st.binary(min_size=8, max_size=8)),
        draw(st.sampled_from(list(ExchangeType))),
        draw(st.integers(0, 2**32 - 1)),
        draw(st.booleans()),
        draw(st.booleans()),
        tuple(plain),
    )
