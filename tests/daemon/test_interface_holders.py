"""A connection's XFRM interface exists while any of its Child SAs or traps does: set up by
the first, released by the last, and released again when the install it was made for fails
(decoded from the real netlink requests by the in-memory kernel; the link calls recorded)."""

from __future__ import annotations

import asyncio
import dataclasses
from ipaddress import ip_network
from typing import Any

import pytest
from glue_helpers import FakeKernel, glue_on, ready

from xfrmctl.daemon import interfaces
from xfrmctl.ike.events import ChildSaReady
from xfrmctl.ike.spec import InterfaceOptions, KernelOptions
from xfrmctl.kernel.errors import XfrmError
from xfrmctl.kernel.types import Dir

IFACE = InterfaceOptions("xfrm-b", 42, 1400, ("169.254.0.1/30",), ("10.2.0.0/16",))


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    made: list[tuple[Any, ...]] = []
    kif = interfaces.kif
    monkeypatch.setattr(
        kif, "ensure", lambda iface, netns: made.append(("ensure", iface.name, iface.owner, iface))
    )
    monkeypatch.setattr(kif, "release", lambda name, netns: made.append(("release", name)))

    def stale(netns: str | None, keep: frozenset[str]) -> list[str]:
        made.append(("stale", keep))
        return []

    monkeypatch.setattr(kif, "remove_stale", stale)
    return made


def routed(spi_in: int, spi_out: int, iface: InterfaceOptions | None = IFACE) -> ChildSaReady:
    kernel = KernelOptions(if_id_in=42, if_id_out=42, interface=iface)
    return dataclasses.replace(ready(spi_in, spi_out), kernel=kernel)


def test_first_child_sets_it_up_and_last_takes_it_down(calls: list[tuple[Any, ...]]) -> None:
    k = FakeKernel()
    glue = glue_on(k)
    old, new = routed(0x1001, 0x2001), routed(0x1002, 0x2002)

    async def run() -> None:
        await glue.install_child(old)
        await glue.install_child(new)  # a rekey: the interface is already up
        assert [c[0] for c in calls] == ["ensure"]
        await glue.remove_child(old)
        assert [c[0] for c in calls] == ["ensure"]
        await glue.remove_child(new)

    asyncio.run(run())
    assert [c[:3] for c in calls] == [("ensure", "xfrm-b", "tun"), ("release", "xfrm-b")]
    iface = calls[0][3]
    assert (iface.if_id, iface.mtu, iface.routes) == (42, 1400, (ip_network("10.2.0.0/16"),))


def test_sas_and_policies_carry_the_interfaces_if_id(calls: list[tuple[Any, ...]]) -> None:
    k = FakeKernel()
    asyncio.run(glue_on(k).install_child(routed(0x1001, 0x2001)))
    assert {sa.if_id for sa in k.sas.values()} == {42}
    assert {p.dir: p.if_id for p in k.policies.values()} == {Dir.IN: 42, Dir.FWD: 42, Dir.OUT: 42}


def test_a_failed_install_releases_what_it_set_up(calls: list[tuple[Any, ...]]) -> None:
    k = FakeKernel()
    glue = glue_on(k)

    async def run() -> None:
        await glue.install_child(routed(0x1001, 0x2001, iface=None))  # no interface
        with pytest.raises(XfrmError):  # the same outbound SPI: the kernel refuses the pair
            await glue.install_child(routed(0x1002, 0x2001))

    asyncio.run(run())
    assert [c[0] for c in calls] == ["ensure", "release"]
    assert 0x1002 not in {sid.spi for sid in k.sas}


def test_stop_releases_every_interface_and_start_spares_the_held(
    calls: list[tuple[Any, ...]],
) -> None:
    k = FakeKernel()
    glue = glue_on(k)

    async def run() -> None:
        await glue.install_child(routed(0x1001, 0x2001))
        await glue.cleanup_stale()  # a start after kill -9: what we hold stays
        assert calls[-1] == ("stale", frozenset({"xfrm-b"}))
        await glue.remove_all()

    asyncio.run(run())
    assert ("release", "xfrm-b") in calls
    assert calls[-1] == ("stale", frozenset())
