"""XfrmGlue's Child SA path through kernel.transaction, on the in-memory kernel that decodes
the real netlink requests (tests/kernel/test_xfrm_transaction.py): the rekey handover keeps the
policies, installs the new outbound SA only when told, and removals never raise."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
from typing import Any, cast

import pytest
from glue_helpers import A, B, FakeKernel, glue_on, ready, spis

from xfrmctl.daemon.xfrm_glue import REQID_BASE
from xfrmctl.ike.events import UdpEncap
from xfrmctl.kernel.errors import XfrmError
from xfrmctl.kernel.types import Dir, Proto, SaId


def test_install_is_one_transaction_in_the_safe_order() -> None:
    k = FakeKernel()
    glue = glue_on(k)
    asyncio.run(glue.install_child(ready(0x1001, 0x2001)))
    assert k.batches == [
        [
            ("NEWSA", "0x1001"),
            ("NEWSA", "0x2001"),
            ("NEWPOLICY", "IN"),
            ("NEWPOLICY", "FWD"),
            ("NEWPOLICY", "OUT"),
        ]
    ]
    pols = list(k.policies.values())
    assert all(t.reqid == REQID_BASE + 5 for p in pols for t in p.templates)
    assert {p.dir for p in pols} == {Dir.IN, Dir.FWD, Dir.OUT}


def test_rekey_handover_keeps_policies_and_switches_outbound_late() -> None:
    k = FakeKernel()
    glue = glue_on(k)
    old, new = ready(0x1001, 0x2001), ready(0x1002, 0x2002, replaces=0x1001)

    async def scenario() -> None:
        await glue.install_child(old)
        policies = dict(k.policies)
        await glue.install_child(new, outbound=False)
        assert spis(k) == {0x1001, 0x2001, 0x1002}
        await glue.install_outbound(new)
        assert spis(k) == {0x1001, 0x2001, 0x1002, 0x2002}
        await glue.remove_child(old, inbound=False)
        assert spis(k) == {0x1001, 0x1002, 0x2002}, "the old inbound SA lingers"
        assert k.policies == policies, "the new pair still needs the policies"
        await glue.remove_inbound(old)
        assert spis(k) == {0x1002, 0x2002} and k.policies == policies
        await glue.remove_child(new)
        assert not k.sas and not k.policies

    asyncio.run(scenario())


def test_spi_collision_fails_cleanly_and_leaves_nothing() -> None:
    k = FakeKernel()
    glue = glue_on(k)
    asyncio.run(glue.install_child(ready(0x1001, 0x2001)))
    before = (dict(k.sas), dict(k.policies))
    other = ready(0x1001, 0x2009)  # the engine's random SPI is already in the kernel
    with pytest.raises(XfrmError) as info:
        asyncio.run(glue.install_child(other))
    text = str(info.value)
    assert "esp spi 0x00001001 dst 192.0.2.1" in text and "exists" in text, text
    assert (dict(k.sas), dict(k.policies)) == before


def test_removal_errors_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    k = FakeKernel()
    glue = glue_on(k)
    r = ready(0x1001, 0x2001)
    asyncio.run(glue.install_child(r))

    async def refuse(requests: Any) -> Any:
        for req in requests:
            k._fail(req, errno.EPERM)
        return requests

    cast(Any, k).batch = refuse
    with caplog.at_level(logging.ERROR, logger="xfrmctl.kernel"):
        asyncio.run(glue.remove_child(r))
    assert any("tun/net: removing the Child SA" in m for m in caplog.messages), caplog.messages
    assert SaId(A, 0x1001, Proto.ESP) in k.sas


def test_the_glue_keeps_no_keys_and_rebuilds_the_sas_for_an_encap_update() -> None:
    """An installed pair is kept as SA ids (issue 15: memory per Child SA); a NAT mapping
    change must still send both SAs whole, keys and all, with only the ports changed."""
    k = FakeKernel()
    glue = glue_on(k)
    r = dataclasses.replace(
        ready(0x1001, 0x2001),
        encr_key_in=b"\x11" * 36,
        encr_key_out=b"\x22" * 36,
        encap=UdpEncap(4500, 4500),
    )
    asyncio.run(glue.install_child(r))
    kept = glue._children[0x1001]
    assert kept.inbound.larval and kept.outbound.larval, "no key material kept"
    installed = dict(k.sas)
    k.larval |= set(k.sas)  # the double takes UPDSA only for ALLOCSPI's states
    asyncio.run(glue.update_encap(dataclasses.replace(r, encap=UdpEncap(4500, 31000))))
    for sid, sa in k.sas.items():
        before = installed[sid]
        assert sa.aead is not None and sa.aead == before.aead
        assert dataclasses.replace(sa, encap=None) == dataclasses.replace(before, encap=None)
    ports = {sa.spi: (sa.encap.sport, sa.encap.dport) for sa in k.sas.values() if sa.encap}
    assert ports == {0x1001: (31000, 4500), 0x2001: (4500, 31000)}
    assert glue._children[0x1001].inbound.larval


def test_a_waiting_outbound_sa_goes_in_with_its_keys() -> None:
    k = FakeKernel()
    glue = glue_on(k)
    old = ready(0x1001, 0x2001)
    new = dataclasses.replace(ready(0x1002, 0x2002, replaces=0x1001), encr_key_out=b"\x33" * 36)

    async def scenario() -> None:
        await glue.install_child(old)
        await glue.install_child(new, outbound=False)
        await glue.install_outbound(new)

    asyncio.run(scenario())
    out = k.sas[SaId(B, 0x2002, Proto.ESP)]
    assert out.aead is not None and out.aead.key == b"\x33" * 36
    assert glue._children[0x1002].outbound.larval, "slimmed once it is in"
