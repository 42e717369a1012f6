"""XFRM_MSG_MAPPING: which Child SAs follow the peer's NAT to a new port, and which do not."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from xfrmctl.daemon.installed import Installed
from xfrmctl.daemon.kernel_glue import NatMapping
from xfrmctl.daemon.nat_mapping import port_change, remap
from xfrmctl.ike.events import ChildSaReady, Lifetimes, UdpEncap
from xfrmctl.ike.iana import ProtocolId
from xfrmctl.ike.spec import Mode

US, PEER, OTHER = (ipaddress.ip_address(a) for a in ("192.0.2.2", "192.0.2.1", "192.0.2.9"))


def ready(spi: int, remote: ipaddress.IPv4Address, encap: UdpEncap | None) -> ChildSaReady:
    return ChildSaReady(
        "c",
        "net",
        spi,
        1,
        Mode.TUNNEL,
        ProtocolId.ESP,
        spi,
        spi + 1,
        US,
        remote,
        None,
        None,
        b"",
        b"",
        b"",
        b"",
        False,
        (),
        (),
        Lifetimes(0, 0),
        encap,
        1,
        True,
    )


def test_children_on_the_old_mapping_move_to_the_new_port() -> None:
    installed = {
        1: Installed(ready(1, PEER, UdpEncap(4500, 40000)), 0.0),  # on the old mapping
        2: Installed(ready(2, PEER, UdpEncap(4500, 40000)), 0.0),  # on the old mapping
        3: Installed(ready(3, PEER, UdpEncap(4500, 41111)), 0.0),  # another mapping
        4: Installed(ready(4, PEER, None), 0.0),  # not encapsulated
        5: Installed(ready(5, OTHER, UdpEncap(4500, 40000)), 0.0),  # another peer
    }
    before = {spi: e.ready for spi, e in installed.items()}
    moved = remap(installed, NatMapping((PEER, 40000), (PEER, 40007)))
    assert [r.spi_in for r in moved] == [1, 2]
    for spi in (1, 2):
        assert installed[spi].ready.encap == UdpEncap(4500, 40007)
        assert installed[spi].ready == replace(before[spi], encap=UdpEncap(4500, 40007))
    for spi in (3, 4, 5):
        assert installed[spi].ready is before[spi]


def test_only_a_port_change_is_followed() -> None:
    assert port_change(NatMapping((PEER, 40000), (PEER, 40007)))
    assert not port_change(NatMapping((PEER, 40000), (OTHER, 40000)))
