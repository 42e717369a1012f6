"""The cheap scan `interfaces.remove_stale` runs first (`kernel/rtnl_scan.py`) must see
everything the full pyroute2 path would remove: if it ever answered "nothing of ours" while
a stale link or route exists, a restarted daemon would leave it behind.

Decoding is checked against pyroute2's own encoder (what the full path reads), and the whole
scan against a kernel in a private namespace (root) with `ip` as the oracle.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
from netns_tools import fresh_netns, ip
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from xfrmctl.kernel import rtnl_scan
from xfrmctl.kernel.interfaces import RTPROT_XFRMCTL, _link_state

PROTO = RTPROT_XFRMCTL


def _link(name: str, alias: str | None) -> bytes:
    msg = ifinfmsg()
    msg["index"] = 7
    msg["attrs"] = [("IFLA_IFNAME", name)] + ([("IFLA_IFALIAS", alias)] if alias else [])
    msg.encode()
    return bytes(msg.data)


@pytest.mark.parametrize(
    "alias", [None, "", "xfrmctl:site-b", "xfrmctl:", "operator's link", "XFRMCTL:x"]
)
def test_a_link_is_ours_exactly_when_the_full_path_says_so(alias: str | None) -> None:
    data = _link("xfrm0", alias)
    decoded = ifinfmsg(data)
    decoded.decode()
    payload = data[16:]  # after the netlink header, as _dump hands it over
    assert rtnl_scan._our_link(payload) == _link_state(decoded).ours


@pytest.mark.parametrize(
    ("family", "proto", "ours"),
    [
        (socket.AF_INET, PROTO, True),
        (socket.AF_INET6, PROTO, True),
        (socket.AF_INET, 3, False),  # boot
        (socket.AF_INET6, 2, False),  # kernel
        (socket.AF_BRIDGE, PROTO, False),  # the full path dumps IPv4 and IPv6 only
    ],
)
def test_a_route_is_ours_by_family_and_protocol(family: int, proto: int, ours: bool) -> None:
    msg = rtmsg()
    msg["family"] = family
    msg["proto"] = proto
    msg["attrs"] = [("RTA_OIF", 7)]
    msg.encode()
    assert rtnl_scan._our_route(bytes(msg.data)[16:], PROTO) is ours


class _Replies:
    """A netlink socket that answers one dump with the given datagrams."""

    def __init__(self, *datagrams: bytes) -> None:
        self.datagrams = list(datagrams)
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def recv(self, size: int) -> bytes:
        return self.datagrams.pop(0)


def _nlmsg(kind: int, payload: bytes, seq: int = 1) -> bytes:
    length = rtnl_scan.NLMSG_HDR.size + len(payload)
    pad = bytes(-length % 4)
    return rtnl_scan.NLMSG_HDR.pack(length, kind, 2, seq, 0) + payload + pad


def test_a_dump_spans_datagrams_skips_other_sequences_and_ends_at_done() -> None:
    first, second = _link("a", None)[16:], _link("b", "xfrmctl:b")[16:]
    sock = _Replies(
        _nlmsg(rtnl_scan.RTM_NEWLINK, first) + _nlmsg(rtnl_scan.RTM_NEWLINK, b"x", seq=9),
        _nlmsg(rtnl_scan.RTM_NEWLINK, second) + _nlmsg(rtnl_scan.NLMSG_DONE, bytes(4)),
    )
    got = rtnl_scan._dump(sock, rtnl_scan.RTM_GETLINK, bytes(16), 1)  # type: ignore[arg-type]
    assert [p for _, p in got] == [first, second]


def test_an_error_reply_raises_oserror() -> None:
    error = (-1 & 0xFFFFFFFF).to_bytes(4, sys.byteorder) + bytes(16)  # -EPERM, request header
    sock = _Replies(_nlmsg(rtnl_scan.NLMSG_ERROR, error))
    with pytest.raises(OSError, match="rtnetlink dump"):
        rtnl_scan._dump(sock, rtnl_scan.RTM_GETLINK, bytes(16), 1)  # type: ignore[arg-type]


# ------------------------------------------------------------- against a kernel (root)

SCAN = "from xfrmctl.kernel import rtnl_scan; print(rtnl_scan.ours_present({}))"
STALE = "from xfrmctl.kernel.interfaces import remove_stale; print(sorted(remove_stale()))"


def _in(ns: str, code: str) -> str:
    argv = ["ip", "netns", "exec", ns, sys.executable, "-c", code]
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def ns() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    with fresh_netns("scan") as name:
        ip(name, "link", "set", "lo", "up")
        yield name


@pytest.mark.netns
def test_a_clean_namespace_has_nothing_of_ours(ns: str) -> None:
    assert _in(ns, SCAN.format(PROTO)) == "False"
    assert _in(ns, STALE) == "[]"


@pytest.mark.netns
@pytest.mark.parametrize("family", ["-4", "-6"])
def test_a_stale_route_is_seen(ns: str, family: str) -> None:
    """Seen, so the full path runs (and removes it, or says why it cannot)."""
    dst = "10.9.0.0/16" if family == "-4" else "fd00:9::/64"
    ip(ns, family, "route", "add", dst, "dev", "lo", "proto", str(PROTO))
    assert ip(ns, family, "route", "show", "proto", str(PROTO)).strip()
    assert _in(ns, SCAN.format(PROTO)) == "True"
    assert _in(ns, SCAN.format(PROTO + 1)) == "False"
    # A route through a device is of scope link: removed, not refused with ESRCH.
    assert _in(ns, STALE) == "[]"
    assert ip(ns, family, "route", "show", "proto", str(PROTO)).strip() == ""


@pytest.mark.netns
def test_a_link_aliased_as_ours_is_seen(ns: str) -> None:
    ip(ns, "link", "set", "lo", "alias", "xfrmctl:stale")
    assert _in(ns, SCAN.format(PROTO)) == "True"
