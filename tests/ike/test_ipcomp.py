"""IPComp negotiation (RFC 7296 §2.22, §3.10.1): IKE_AUTH, CREATE_CHILD_SA and rekeys, both
roles, against a peer that does or does not want it."""

from __future__ import annotations

from harness import Harness, child_spec, make_pair, mirror

from xfrmctl.ike import ipcomp
from xfrmctl.ike.events import ChildSaReady
from xfrmctl.ike.iana import NotifyType
from xfrmctl.ike.payloads import NotifyPayload
from xfrmctl.ike.spec import ChildSpec


def _children(wanted: bool) -> tuple[ChildSpec, ...]:
    return (
        child_spec("net", ipcomp=wanted),
        child_spec("more", "10.3.0.0/16", "10.4.0.0/16", ipcomp=wanted),
    )


def _up(a: bool, b: bool, nat: bool = False) -> Harness:
    """A (initiator) and B (responder) wanting IPComp or not; the first child in IKE_AUTH."""
    h, _, _ = make_pair(
        a={"children": _children(a)}, b={"children": tuple(mirror(c) for c in _children(b))}
    )
    h.nat_a = nat
    h.a.initiate("a-to-b", ["net"], now=h.now)
    h.run(5.0)
    return h


def _pair(h: Harness) -> tuple[ChildSaReady, ChildSaReady]:
    return h.of("a", ChildSaReady)[-1], h.of("b", ChildSaReady)[-1]


def _agreed(ra: ChildSaReady, rb: ChildSaReady) -> None:
    assert ra.cpi_in and ra.cpi_out
    assert (ra.cpi_in, ra.cpi_out) == (rb.cpi_out, rb.cpi_in)
    for cpi in (ra.cpi_in, ra.cpi_out):
        assert ipcomp.CPI_MIN <= cpi <= ipcomp.CPI_MAX  # RFC 3173 §3.3: negotiated range


def test_ike_auth_child_gets_cpis_both_ways() -> None:
    h = _up(True, True)
    _agreed(*_pair(h))
    (ca,) = h.a.child_sas()
    assert ca.spi_in == _pair(h)[0].spi_in


def test_no_ipcomp_unless_both_sides_want_it() -> None:
    for a, b in ((True, False), (False, True), (False, False)):
        h = _up(a, b)
        ra, rb = _pair(h)
        assert (ra.cpi_in, ra.cpi_out, rb.cpi_in, rb.cpi_out) == (0, 0, 0, 0), (a, b)
        assert ra.spi_in == rb.spi_out  # the Child SA itself still came up


def test_create_child_sa_and_rekeys_negotiate_fresh_cpis() -> None:
    h = _up(True, True)
    first = _pair(h)
    h.a.initiate_child("a-to-b", "more", h.now)
    h.run(5.0)
    second = _pair(h)
    _agreed(*second)
    assert second[0].child == "more"
    assert second[0].cpi_in != first[0].cpi_in  # two inbound IPComp SAs need two CPIs
    # Child rekey, initiated by each side in turn: each new pair negotiates IPComp again.
    for side in (h.a, h.b):
        before = len(h.of("a", ChildSaReady))
        side.rekey_child(side.child_sas()[0].spi_in, h.now)
        h.run(5.0)
        assert len(h.of("a", ChildSaReady)) == before + 1
        ra, rb = _pair(h)
        assert ra.replaces_spi_in is not None and rb.replaces_spi_in is not None
        _agreed(ra, rb)
        assert {ra.cpi_in, ra.cpi_out}.isdisjoint({first[0].cpi_in, first[0].cpi_out})


def test_no_ipcomp_behind_a_nat() -> None:
    h = _up(True, True, nat=True)
    ra, rb = _pair(h)
    assert ra.encap is not None
    assert (ra.cpi_in, ra.cpi_out, rb.cpi_in, rb.cpi_out) == (0, 0, 0, 0)


def test_notify_wire_format_and_parsing() -> None:
    n = ipcomp.notify(0x1234)
    assert (n.notify_type, n.data, n.protocol, n.spi) == (
        NotifyType.IPCOMP_SUPPORTED,
        b"\x12\x34\x02",
        0,
        b"",
    )
    lzs = NotifyPayload(NotifyType.IPCOMP_SUPPORTED, b"\x11\x11\x03")
    short = NotifyPayload(NotifyType.IPCOMP_SUPPORTED, b"\x11")
    assert ipcomp.offered_cpi([lzs, short, n]) == 0x1234  # DEFLATE is picked among several
    assert ipcomp.offered_cpi([lzs, short]) == 0
    # An answer naming IPComp when we did not offer it is ignored.
    assert ipcomp.agreed(0, [n]) == (0, 0)
    assert ipcomp.agreed(0x999, [lzs]) == (0, 0)
    assert ipcomp.agreed(0x999, [n]) == (0x999, 0x1234)
