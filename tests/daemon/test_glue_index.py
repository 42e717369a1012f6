"""XfrmGlue's indexes (glue_index.py) say what a rebuild from its traps and Child SAs says,
through a trap, a Child SA on the trap's selectors, a rekey's handover and the removals: a
stale index would restore the wrong policy or call our own DELSA drift."""

from __future__ import annotations

import asyncio
import ipaddress

from glue_helpers import A, B, FakeKernel, glue_on, ready

from xfrmctl.daemon.xfrm_glue import XfrmGlue
from xfrmctl.ike.iana import ProtocolId
from xfrmctl.ike.proposals import parse_proposals
from xfrmctl.ike.spec import ChildSpec, ConnectionSpec, Identity, PskAuth, TsSpec
from xfrmctl.kernel import reconcile as drift
from xfrmctl.kernel.types import Policy, PolicyId


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
