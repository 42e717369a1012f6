"""XfrmGlue's kernel objects for IPComp and marks (strongSwan's layout), on the in-memory kernel
that decodes the real netlink requests: what goes in, and that removal leaves nothing."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from glue_helpers import A, B, FakeKernel, glue_on, ready

from xfrmctl.daemon.xfrm_glue import REQID_BASE
from xfrmctl.ike.events import ChildSaReady
from xfrmctl.ike.spec import KernelOptions, MarkSpec
from xfrmctl.kernel.messages import STATE_AF_UNSPEC
from xfrmctl.kernel.types import Comp, Dir, Mark, Mode, Proto

REQID = REQID_BASE + 5


def compressed(spi_in: int, spi_out: int, replaces: int | None = None, **kw: Any) -> ChildSaReady:
    r: ChildSaReady = ready(spi_in, spi_out, replaces)
    return dataclasses.replace(r, cpi_in=spi_in >> 4, cpi_out=spi_out >> 4, **kw)


def by_proto(k: Any, proto: Proto) -> dict[int, Any]:
    return {sid.spi: sa for sid, sa in k.sas.items() if sid.proto == proto}


def test_ipcomp_sas_templates_and_removal() -> None:
    k = FakeKernel()
    glue = glue_on(k)
    r = compressed(0x1001, 0x2001)
    asyncio.run(glue.install_child(r))
    comps = by_proto(k, Proto.COMP)
    assert set(comps) == {0x100, 0x200}  # the CPIs are the IPComp SAs' SPIs
    cin, cout = comps[0x100], comps[0x200]
    assert (cin.src, cin.dst, cout.src, cout.dst) == (B, A, A, B)
    for c in (cin, cout):
        assert c.comp == Comp("deflate") and c.mode == Mode.TUNNEL and c.reqid == REQID
        assert c.flags & STATE_AF_UNSPEC and c.replay_window == 0
    esp = by_proto(k, Proto.ESP)
    assert {s.mode for s in esp.values()} == {Mode.TRANSPORT}  # the IPComp SA does the tunnel
    assert not any(s.flags & STATE_AF_UNSPEC for s in esp.values())
    assert k.batches[0][:4] == [
        ("NEWSA", "0x100"),
        ("NEWSA", "0x1001"),
        ("NEWSA", "0x200"),
        ("NEWSA", "0x2001"),
    ]
    for pol in k.policies.values():
        comp, esp_t = pol.templates
        assert (comp.proto, comp.mode, esp_t.proto, esp_t.mode) == (
            Proto.COMP,
            Mode.TUNNEL,
            Proto.ESP,
            Mode.TRANSPORT,
        )
        # Outbound always compresses; inbound accepts what the peer left uncompressed.
        assert comp.optional == (pol.dir != Dir.OUT)
        ends = (A, B) if pol.dir == Dir.OUT else (B, A)
        assert (comp.src, comp.dst) == ends and comp.reqid == esp_t.reqid == REQID
    asyncio.run(glue.remove_child(r))
    assert not k.sas and not k.policies


def test_ipcomp_rekey_handover() -> None:
    k = FakeKernel()
    glue = glue_on(k)
    old, new = compressed(0x1001, 0x2001), compressed(0x1002, 0x2002, replaces=0x1001)

    # Distinct CPIs per pair (as the engine allocates them).
    new = dataclasses.replace(new, cpi_in=0x111, cpi_out=0x222)

    async def distinct() -> None:
        await glue.install_child(old)
        await glue.install_child(new, outbound=False)
        assert set(by_proto(k, Proto.COMP)) == {0x100, 0x200, 0x111}
        await glue.install_outbound(new)
        assert set(by_proto(k, Proto.COMP)) == {0x100, 0x200, 0x111, 0x222}
        await glue.remove_child(old, inbound=False)
        assert set(by_proto(k, Proto.COMP)) == {0x100, 0x111, 0x222}, "old inbound lingers"
        await glue.remove_inbound(old)
        assert set(by_proto(k, Proto.COMP)) == {0x111, 0x222}
        await glue.remove_child(new)
        assert not k.sas and not k.policies

    asyncio.run(distinct())


def _marked(r: ChildSaReady) -> ChildSaReady:
    opts = KernelOptions(mark_in=MarkSpec(0x2A, 0xFF), mark_out=MarkSpec(0x2B))
    return dataclasses.replace(r, kernel=opts)


def test_marks_as_swanctl_sets_them_and_removal_finds_marked_sas() -> None:
    k = FakeKernel()
    glue = glue_on(k)
    r = _marked(compressed(0x1001, 0x2001))
    asyncio.run(glue.install_child(r))
    marks = {(sid.proto, sid.spi): sid.mark for sid in k.sas}
    out = Mark(0x2B, 0xFFFFFFFF)
    assert marks == {
        (Proto.ESP, 0x1001): None,  # mark_in is on policies only (swanctl's mark_in_sa=no)
        (Proto.COMP, 0x100): None,
        (Proto.ESP, 0x2001): out,
        (Proto.COMP, 0x200): out,
    }
    pol_marks = {p.dir: p.mark for p in k.policies.values()}
    assert pol_marks == {Dir.IN: Mark(0x2A, 0xFF), Dir.FWD: Mark(0x2A, 0xFF), Dir.OUT: out}
    asyncio.run(glue.remove_child(r))
    assert not k.sas and not k.policies


def test_counters_of_a_marked_outbound_sa_name_its_mark() -> None:
    k = FakeKernel()
    glue = glue_on(k)
    r = _marked(ready(0x1001, 0x2001))
    asyncio.run(glue.install_child(r))
    asked: list[Any] = []

    async def request(req: Any) -> list[Any]:
        asked.append(req.msg)
        return [req.msg]  # a GETAE answer has the request's layout

    k.request = request
    asyncio.run(glue.counters(r))
    spi_marks = {m["spi"]: m.get_attr("XFRMA_MARK") for m in asked}
    assert spi_marks[0x1001] is None
    assert spi_marks[0x2001] is not None and spi_marks[0x2001]["v"] == 0x2B
