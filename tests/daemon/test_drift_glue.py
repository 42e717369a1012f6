"""Drift on the kernel side: XfrmGlue's reconcile (one dump each, through the real netlink
encoding on the in-memory kernel), policy repair, and which notifications are drift (our own
removals and installs never are)."""

from __future__ import annotations

import asyncio
import dataclasses
from ipaddress import ip_network

from test_xfrm_glue_rekey import FakeKernel, glue_on, ready

from xfrmctl.kernel import events as kev
from xfrmctl.kernel.reconcile import compare
from xfrmctl.kernel.types import Action, Dir, Policy, Selector


def test_reconcile_finds_missing_sas_and_policies_and_repairs_policies() -> None:
    k = FakeKernel()
    glue = glue_on(k)

    async def scenario() -> None:
        await glue.install_child(ready(0x1001, 0x2001))
        assert not await _any(glue)
        out = next(pid for pid in k.policies if pid.dir == Dir.OUT)
        del k.policies[out]
        fwd = next(pid for pid in k.policies if pid.dir == Dir.FWD)
        k.policies[fwd] = dataclasses.replace(k.policies[fwd], action=Action.BLOCK, templates=())
        k.sas.clear()
        found = await glue.reconcile()
        (pair,) = found.pairs
        assert pair.spi_in == 0x1001 and len(pair.missing) == 2
        assert "inbound esp spi 0x00001001" in pair.missing[0]
        assert "outbound esp spi 0x00002001" in pair.missing[1]
        assert [p.dir for p in found.missing_policies] == [Dir.OUT]
        assert [p.dir for p in found.altered_policies] == [Dir.FWD]
        await glue.repair_policies(found.missing_policies + found.altered_policies)
        again = await glue.reconcile()
        assert not again.missing_policies and not again.altered_policies
        assert len(k.batches[-1]) == 2, "a repair is one batch of the drifted policies only"

    asyncio.run(scenario())


async def _any(glue: object) -> bool:
    found = await glue.reconcile()  # type: ignore[attr-defined]
    return bool(found.pairs or found.missing_policies or found.altered_policies or found.shadowed)


def test_a_deferred_outbound_sa_and_our_removals_are_not_drift() -> None:
    k = FakeKernel()
    glue = glue_on(k)
    old, new = ready(0x1001, 0x2001), ready(0x1002, 0x2002, replaces=0x1001)

    async def scenario() -> None:
        await glue.install_child(old)
        await glue.install_child(new, outbound=False)  # the rekey responder's deferral
        assert not await _any(glue)
        await glue.install_outbound(new)
        await glue.remove_child(old, inbound=False)
        assert not await _any(glue)
        await glue.remove_inbound(old)
        await glue.remove_child(new)
        assert not await _any(glue)

    asyncio.run(scenario())


def test_notifications_of_our_own_changes_are_not_drift() -> None:
    k = FakeKernel()
    glue = glue_on(k)

    async def scenario() -> None:
        await glue.install_child(ready(0x1001, 0x2001))
        sa = next(s for s in k.sas.values() if s.spi == 0x1001)
        pol = next(p for p in k.policies.values() if p.dir == Dir.OUT)
        assert glue._drift_detail(kev.SaDeleted(sa)) is not None
        assert glue._drift_detail(kev.PolicyDeleted(pol)) is not None
        assert glue._drift_detail(kev.PolicyAdded(pol, True)) is None, "our own install"
        assert glue._drift_detail(kev.SasFlushed(0)) is not None
        assert glue._drift_detail(kev.PoliciesFlushed()) is not None
        foreign = Policy(pol.selector, Dir.OUT, priority=10)
        assert glue._drift_detail(kev.PolicyAdded(foreign, False)) is not None
        assert glue._drift_detail(kev.PolicyDeleted(foreign)) is None, "not ours"
        other = Policy(Selector.of("10.9.0.0/16", "10.8.0.0/16"), Dir.OUT, priority=10)
        assert glue._drift_detail(kev.PolicyAdded(other, False)) is None
        await glue.remove_child(ready(0x1001, 0x2001))
        # We forget before we delete: the DELSA/DELPOLICY of our own removal is not drift.
        assert glue._drift_detail(kev.SaDeleted(sa)) is None
        assert glue._drift_detail(kev.PolicyDeleted(pol)) is None

    asyncio.run(scenario())


def test_compare_reports_a_foreign_policy_that_shadows_ours() -> None:
    k = FakeKernel()
    glue = glue_on(k)
    asyncio.run(glue.install_child(ready(0x1001, 0x2001)))
    ours = list(k.policies.values())
    out = next(p for p in ours if p.dir == Dir.OUT)
    bypass = Policy(out.selector, Dir.OUT, priority=out.priority - 1)
    worse = Policy(out.selector, Dir.OUT, priority=out.priority + 1)
    elsewhere = Policy(
        Selector(ip_network("10.7.0.0/16"), ip_network("10.2.0.0/16")), Dir.OUT, priority=1
    )
    drift = compare([], ours, [], [*ours, bypass, worse, elsewhere])
    assert [s.theirs for s in drift.shadows] == [bypass]
    assert not drift.missing_policies and not drift.altered_policies
    assert not compare([], ours, [], ours)
