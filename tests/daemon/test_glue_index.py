"""XfrmGlue's indexes (glue_index.py) say what a rebuild from its traps and Child SAs says,
through a trap, a Child SA on the trap's selectors, a rekey's handover and the removals: a
stale index would restore the wrong policy or call our own DELSA drift."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress

from glue_helpers import A, B, FakeKernel, glue_on, ready

from xfrmctl.daemon import xfrm_records
from xfrmctl.daemon.xfrm_glue import XfrmGlue
from xfrmctl.ike.iana import ProtocolId
from xfrmctl.ike.payloads import TrafficSelector
from xfrmctl.ike.proposals import parse_proposals
from xfrmctl.ike.spec import ChildSpec, ConnectionSpec, Identity, PskAuth, TsSpec
from xfrmctl.kernel import reconcile as drift
from xfrmctl.kernel.types import Policy, PolicyId, Proto


def trap_spec() -> ConnectionSpec:
    child = ChildSpec(
        "net",
        (TsSpec(ipaddress.ip_network("10.1.0.0/16")),),
        (TsSpec(ipaddress.ip_network("10.2.0.0/16")),),
        tuple(parse_proposals(["aes256gcm16"], ProtocolId.ESP)),
    )
    ike = tuple(parse_proposals(["aes256gcm16-prfsha256-x25519"], ProtocolId.IKE))
    return ConnectionSpec(
        "tun", (A,), (B,), Identity.parse("a"), Identity.parse("b"), PskAuth(b"k"), ike, (child,)
    )


def rebuilt(glue: XfrmGlue) -> dict[PolicyId, Policy]:
    held = {p.id: p for pols in glue._trap_policies.values() for p in pols}
    held.update({p.id: p for c in glue._children.values() for p in c.policies})
    return held


def agree(glue: XfrmGlue, k: FakeKernel) -> None:
    held = rebuilt(glue)
    assert glue._held_policies() == held
    for pid in set(held) | {p.id for p in k.policies.values()}:
        assert glue._held(pid) == held.get(pid)
    for reqid in {c.inbound.reqid for c in glue._children.values()} | {1, 2}:
        assert glue._reqid_in_use(reqid) == any(
            c.inbound.reqid == reqid for c in glue._children.values()
        )
    owned = glue._owned()[0]
    for sa in k.sas.values():
        key = drift.sa_key(sa)
        assert (glue._children.owner_of_sa(key, glue._no_outbound) is not None) == (key in owned)


def test_indexes_follow_traps_children_rekeys_and_removals() -> None:
    k = FakeKernel()
    glue = glue_on(k)
    old, new = ready(0x1001, 0x2001), ready(0x1002, 0x2002, replaces=0x1001)

    async def scenario() -> None:
        await glue.install_trap(trap_spec(), trap_spec().children[0], 9)
        agree(glue, k)
        await glue.install_child(old)  # over the trap's selectors, another reqid
        agree(glue, k)
        await glue.install_child(new, outbound=False)
        agree(glue, k)
        await glue.install_outbound(new)
        agree(glue, k)
        await glue.remove_child(old, inbound=False)
        agree(glue, k)
        await glue.remove_inbound(old)
        await glue.remove_child(new)  # the trap's policies go back
        agree(glue, k)
        assert all(p == glue._held(p.id) for p in k.policies.values()) and k.policies
        await glue.remove_traps("tun")
        agree(glue, k)
        assert not k.policies and not glue._held_policies()

    asyncio.run(scenario())


def test_a_selector_range_becomes_its_smallest_covering_prefix() -> None:
    def net(start: str, end: str) -> str:
        ts = TrafficSelector(ipaddress.ip_address(start), ipaddress.ip_address(end))
        return str(xfrm_records.network_of(ts))

    assert net("10.1.0.0", "10.1.255.255") == "10.1.0.0/16"
    assert net("10.1.0.7", "10.1.0.7") == "10.1.0.7/32"
    assert net("10.1.0.0", "10.1.1.0") == "10.1.0.0/23"  # one past a /24: widened
    assert net("10.1.0.1", "10.1.0.2") == "10.1.0.0/30"
    assert net("0.0.0.0", "255.255.255.255") == "0.0.0.0/0"
    assert net("2001:db8::", "2001:db8::ffff") == "2001:db8::/112"


def test_the_trap_table_by_connection_says_what_a_scan_says() -> None:
    """remove_traps asks the index for a connection's traps; it must match a scan of all."""
    from xfrmctl.daemon.glue_index import TrapTable

    traps = TrapTable()

    def scan(conn: str) -> list[tuple[int, tuple[str, str]]]:
        return [(k, v) for k, v in traps.items() if v[0] == conn]

    def agree() -> None:
        for conn in ("a", "b", "c"):  # the same traps; a re-filed reqid comes last
            assert sorted(traps.of_conn(conn)) == sorted(scan(conn)), conn

    traps[1] = ("a", "x")
    traps[2] = ("b", "x")
    traps[3] = ("a", "y")
    agree()
    assert traps.of_conn("a") == scan("a")
    traps[2] = ("a", "z")  # a reqid filed again under another connection
    agree()
    del traps[1]
    agree()
    traps.clear()
    agree()
    traps[4] = ("c", "x")
    agree()


def test_pairs_sharing_spi_values_are_told_apart_by_their_sas() -> None:
    """The SA index is keyed by SPI alone: an SPI used both ways by one pair, or by another
    pair towards another peer, must still name the right owner, side by side."""
    k = FakeKernel()
    glue = glue_on(k)
    c = ipaddress.ip_address("192.0.2.3")
    same_both_ways = ready(0x1001, 0x1001)
    other_peer = dataclasses.replace(ready(0x2001, 0x1001), remote=c, unique_id=0x2001)
    waiting = dataclasses.replace(ready(0x3001, 0x2001), remote=c, unique_id=0x3001)

    async def scenario() -> None:
        await glue.install_child(same_both_ways)
        await glue.install_child(other_peer)
        await glue.install_child(waiting, outbound=False)
        agree(glue, k)
        owner = glue._children.owner_of_sa
        assert owner((A, 0x1001, Proto.ESP), glue._no_outbound) == 0x1001
        assert owner((B, 0x1001, Proto.ESP), glue._no_outbound) == 0x1001
        assert owner((c, 0x1001, Proto.ESP), glue._no_outbound) == 0x2001
        assert owner((c, 0x2001, Proto.ESP), glue._no_outbound) is None  # not in yet
        assert owner((A, 0x2001, Proto.ESP), glue._no_outbound) == 0x2001
        await glue.install_outbound(waiting)
        assert owner((c, 0x2001, Proto.ESP), glue._no_outbound) == 0x3001
        await glue.remove_child(same_both_ways)
        agree(glue, k)
        assert owner((B, 0x1001, Proto.ESP), glue._no_outbound) is None
        assert owner((c, 0x1001, Proto.ESP), glue._no_outbound) == 0x2001

    asyncio.run(scenario())
