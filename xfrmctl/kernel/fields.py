"""Conversions between typed values and the flat field dicts of the XFRM message classes."""

from __future__ import annotations

import ipaddress
from typing import Any

from xfrmctl.kernel.messages import XFRM_INF
from xfrmctl.kernel.types import Address, Lifetime, Mark, Selector, network

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


def pack_addr(addr: Address | None) -> bytes:
    if addr is None:
        return bytes(16)
    return addr.packed.ljust(16, b"\0")


def unpack_addr(raw: bytes, family: int) -> Address:
    if family == AF_INET:
        return ipaddress.IPv4Address(raw[:4])
    if family == AF_INET6:
        return ipaddress.IPv6Address(raw[:16])
    raise DecodeError(f"unknown address family {family}")


def is_zero(raw: bytes) -> bool:
    return not any(raw)


def put_selector(msg: dict[str, Any], sel: Selector, prefix: str = "sel_") -> None:
    msg[prefix + "daddr"] = pack_addr(sel.dst.network_address)
    msg[prefix + "saddr"] = pack_addr(sel.src.network_address)
    msg[prefix + "dport"] = sel.dport
    msg[prefix + "dport_mask"] = 0xFFFF if sel.dport else 0
    msg[prefix + "sport"] = sel.sport
    msg[prefix + "sport_mask"] = 0xFFFF if sel.sport else 0
    msg[prefix + "family"] = sel.family
    msg[prefix + "prefixlen_d"] = sel.dst.prefixlen
    msg[prefix + "prefixlen_s"] = sel.src.prefixlen
    msg[prefix + "proto"] = sel.proto
    msg[prefix + "ifindex"] = sel.ifindex
    msg[prefix + "user"] = 0


def get_selector(msg: dict[str, Any], fallback_family: int = 0, prefix: str = "sel_") -> Selector:
    family = msg[prefix + "family"] or fallback_family
    src = unpack_addr(msg[prefix + "saddr"], family)
    dst = unpack_addr(msg[prefix + "daddr"], family)
    try:
        return Selector(
            network(f"{src}/{msg[prefix + 'prefixlen_s']}"),
            network(f"{dst}/{msg[prefix + 'prefixlen_d']}"),
            proto=msg[prefix + "proto"],
            sport=msg[prefix + "sport"] if msg[prefix + "sport_mask"] else 0,
            dport=msg[prefix + "dport"] if msg[prefix + "dport_mask"] else 0,
            ifindex=msg[prefix + "ifindex"],
        )
    except ValueError as exc:
        raise DecodeError(f"bad selector from the kernel: {exc}") from exc


def put_lifetime(msg: dict[str, Any], lft: Lifetime, prefix: str = "") -> None:
    # "No limit" is XFRM_INF for bytes/packets but 0 for seconds: the kernel adds a seconds
    # limit to the SA's add time in a signed long, so XFRM_INF there expires the SA at once.
    for ours, theirs in LIFETIME_NAMES:
        value = getattr(lft, ours)
        if value is None:
            value = 0 if ours.endswith("seconds") else XFRM_INF
        msg[prefix + theirs] = value


def get_lifetime(msg: dict[str, Any], prefix: str = "") -> Lifetime:
    values: dict[str, int | None] = {}
    for ours, theirs in LIFETIME_NAMES:
        raw = msg[prefix + theirs]
        unlimited = raw == XFRM_INF or (raw == 0 and ours.endswith("seconds"))
        values[ours] = None if unlimited else raw
    return Lifetime(**values)


def mark_attr(mark: Mark | None) -> list[tuple[str, Any]]:
    return [] if mark is None else [("XFRMA_MARK", {"v": mark.value, "m": mark.mask})]


def get_mark(msg: Any) -> Mark | None:
    raw = msg.get_attr("XFRMA_MARK")
    return None if raw is None else Mark(raw["v"], raw["m"])


def cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")
