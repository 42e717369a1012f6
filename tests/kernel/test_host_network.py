"""`host_network`: one-address networks that behave as the stdlib's, kept without the
per-instance `hosts` closure and with the caller's address object (issue 15: the glue keeps
two per Child SA)."""

from __future__ import annotations

import copy
import ipaddress
import pickle

import pytest

from xfrmctl.kernel.types import Selector, compact, host_network, network

ADDRESSES = ["10.0.0.5", "0.0.0.0", "255.255.255.255", "2001:db8::1", "::", "fe80::1%eth0"]


@pytest.mark.parametrize("text", ADDRESSES)
def test_a_host_network_is_the_stdlib_one_in_every_way_the_code_asks(text: str) -> None:
    addr = ipaddress.ip_address(text)
    net = host_network(addr)
    want = ipaddress.ip_network(text.split("%")[0])
    assert isinstance(net, type(want))
    assert net == want and hash(net) == hash(want)
    assert str(net) == str(want) and repr(net) == repr(want)
    assert net.prefixlen == want.max_prefixlen and net.netmask == want.netmask
    assert net.broadcast_address == want.broadcast_address and net.num_addresses == 1
    assert list(net.hosts()) == list(want.hosts()) == [want.network_address]
    assert net.supernet() == want.supernet() and net.subnet_of(want) and net.overlaps(want)
    assert {net: 1}[want] == 1 and sorted([want, net]) == [want, want]
    assert copy.copy(net) == want and pickle.loads(pickle.dumps(net)) == want
    assert str(net.network_address) == str(want.network_address)  # zone dropped


def test_a_host_network_keeps_the_callers_address_and_no_closure() -> None:
    addr = ipaddress.IPv4Address("192.0.2.7")
    net = host_network(addr)
    assert net.network_address is addr
    assert "hosts" not in vars(net)  # the stdlib's constructor puts a lambda there
    assert "hosts" in vars(ipaddress.ip_network(addr))  # (what this avoids)


def test_compact_turns_only_one_address_networks_into_host_networks() -> None:
    wide = ipaddress.ip_network("10.1.0.0/16")
    assert compact(wide) is wide
    one = ipaddress.ip_network("10.1.0.1/32")
    small = compact(one)
    assert small == one and "hosts" not in vars(small)
    assert compact(small) is small


def test_selectors_built_from_text_or_the_kernel_use_host_networks() -> None:
    from xfrmctl.config.selectors import parse_selector
    from xfrmctl.kernel.fields import AF_INET6, unpack_network

    sel = Selector.of("10.0.0.1", "10.0.0.0/24")
    assert "hosts" not in vars(sel.src) and sel.dst == ipaddress.ip_network("10.0.0.0/24")
    assert "hosts" not in vars(network("2001:db8::2/128"))
    parsed = parse_selector("10.9.9.9/32[tcp/22]").network
    assert parsed is not None and "hosts" not in vars(parsed)
    raw = ipaddress.IPv6Address("2001:db8::9").packed
    assert "hosts" not in vars(unpack_network(raw, 128, AF_INET6))
