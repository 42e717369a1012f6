"""Typed values from the flat field dicts of decoded XFRM messages (what the kernel sends).

Encoding goes the other way in xfrmctl.kernel.wire alone."""

from __future__ import annotations

import ipaddress
from typing import Any

from xfrmctl.kernel.messages import XFRM_INF
from xfrmctl.kernel.types import Address, Lifetime, Mark, Network, Selector, host_network

AF_INET = 2
AF_INET6 = 10

LIFETIME_NAMES = (
    ("soft_bytes", "soft_byte_limit"),
    ("hard_bytes", "hard_byte_limit"),
    ("soft_packets", "soft_packet_limit"),
    ("hard_packets", "hard_packet_limit"),
    ("soft_seconds", "soft_add_expires_seconds"),
    ("hard_seconds", "hard_add_expires_seconds"),
    ("soft_use_seconds", "soft_use_expires_seconds"),
    ("hard_use_seconds", "hard_use_expires_seconds"),
)


class DecodeError(ValueError):
    """The kernel sent something this code cannot interpret."""


def unpack_addr(raw: bytes, family: int) -> Address:
    if family == AF_INET:
        return ipaddress.IPv4Address(raw[:4])
    if family == AF_INET6:
        return ipaddress.IPv6Address(raw[:16])
    raise DecodeError(f"unknown address family {family}")


def unpack_network(raw: bytes, prefixlen: int, family: int) -> Network:
    """The prefix (host bits cleared) from the kernel's address and length, built from the
    integer: formatting and parsing a string cost 4x, for each selector of each SA and policy
    of a drift reconcile's dumps (issue 15)."""
    if family == AF_INET:
        if prefixlen == 32:
            return host_network(ipaddress.IPv4Address(raw[:4]))
        return ipaddress.IPv4Network((int.from_bytes(raw[:4], "big"), prefixlen), strict=False)
    if family == AF_INET6:
        if prefixlen == 128:
            return host_network(ipaddress.IPv6Address(raw[:16]))
        return ipaddress.IPv6Network((int.from_bytes(raw[:16], "big"), prefixlen), strict=False)
    raise DecodeError(f"unknown address family {family}")


def is_zero(raw: bytes) -> bool:
    return not any(raw)


def get_selector(msg: dict[str, Any], fallback_family: int = 0, prefix: str = "sel_") -> Selector:
    family = msg[prefix + "family"] or fallback_family
    try:
        return Selector(
            unpack_network(msg[prefix + "saddr"], msg[prefix + "prefixlen_s"], family),
            unpack_network(msg[prefix + "daddr"], msg[prefix + "prefixlen_d"], family),
            proto=msg[prefix + "proto"],
            sport=msg[prefix + "sport"] if msg[prefix + "sport_mask"] else 0,
            dport=msg[prefix + "dport"] if msg[prefix + "dport_mask"] else 0,
            ifindex=msg[prefix + "ifindex"],
        )
    except ValueError as exc:
        raise DecodeError(f"bad selector from the kernel: {exc}") from exc


def get_lifetime(msg: dict[str, Any], prefix: str = "") -> Lifetime:
    values: dict[str, int | None] = {}
    for ours, theirs in LIFETIME_NAMES:
        raw = msg[prefix + theirs]
        unlimited = raw == XFRM_INF or (raw == 0 and ours.endswith("seconds"))
        values[ours] = None if unlimited else raw
    return Lifetime(**values)


def get_mark(msg: Any) -> Mark | None:
    raw = msg.get_attr("XFRMA_MARK")
    return None if raw is None else Mark(raw["v"], raw["m"])


def cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")
