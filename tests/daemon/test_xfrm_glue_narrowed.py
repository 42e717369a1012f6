"""Child SAs of one config narrowed to different selectors, on the in-memory kernel that
decodes the real netlink requests: each has its own reqid, narrower policies win, and removing
one that replaced another's policy puts that policy back instead of leaving the selector bare
(where its packets would leave in the clear)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from ipaddress import ip_network
from typing import Any

from glue_helpers import FakeKernel, glue_on, ready

from xfrmctl.daemon.xfrm_glue import REQID_BASE
from xfrmctl.daemon.xfrm_records import policy_priority
from xfrmctl.ike.payloads import TrafficSelector
from xfrmctl.kernel.types import Dir, Selector


def ts(prefix: str) -> TrafficSelector:
    net = ip_network(prefix)
    return TrafficSelector(net.network_address, net.broadcast_address)


def out_policies(k: Any) -> dict[str, int]:
    """Outbound policies: destination prefix -> the reqid of their template."""
    return {
        str(p.selector.dst): p.templates[0].reqid for p in k.policies.values() if p.dir == Dir.OUT
    }


def test_narrower_selectors_take_precedence() -> None:
    wide = Selector.of("10.1.0.0/16", "10.2.0.0/16")
    narrow = Selector.of("10.1.0.1/32", "10.2.0.1/32")
    port = Selector.of("10.1.0.1/32", "10.2.0.1/32", proto=6, dport=443)
    proto = Selector.of("10.1.0.1/32", "10.2.0.1/32", proto=6)
    assert policy_priority(port) < policy_priority(proto) < policy_priority(narrow)
    assert policy_priority(narrow) < policy_priority(wide)
    v6 = Selector.of("2001:db8::/64", "2001:db8:1::/64")
    assert policy_priority(Selector.of("2001:db8::1/128", "2001:db8:1::1/128")) < (
        policy_priority(v6)
    )


def test_removing_a_child_restores_the_policy_it_replaced() -> None:
    k = FakeKernel()
    glue = glue_on(k)
    wide = ready(0x1001, 0x2001)  # 10.1/16 <-> 10.2/16, reqid 5
    # Same config, a wider set agreed later: 10.1/16 <-> {10.2/16, 10.3/16}, its own reqid.
    both = replace(
        ready(0x1002, 0x2002),
        remote_ts=(ts("10.2.0.0/16"), ts("10.3.0.0/16")),
        reqid=6,
    )
    narrow = replace(
        ready(0x1003, 0x2003),
        local_ts=(ts("10.1.0.1/32"),),
        remote_ts=(ts("10.2.0.1/32"),),
        reqid=7,
    )

    async def scenario() -> None:
        await glue.install_child(wide)
        await glue.install_child(narrow)
        await glue.install_child(both)
        assert out_policies(k) == {
            "10.2.0.0/16": REQID_BASE + 6,
            "10.3.0.0/16": REQID_BASE + 6,
            "10.2.0.1/32": REQID_BASE + 7,
        }
        await glue.remove_child(both)
        assert out_policies(k) == {"10.2.0.0/16": REQID_BASE + 5, "10.2.0.1/32": REQID_BASE + 7}
        assert len(k.policies) == 6, "in and fwd policies of the wide child are back too"
        await glue.remove_child(narrow)
        assert out_policies(k) == {"10.2.0.0/16": REQID_BASE + 5}
        await glue.remove_child(wide)
        assert not k.policies and not k.sas

    asyncio.run(scenario())
