"""Whether this network namespace holds anything xfrmctl owns: a link whose alias starts with
`xfrmctl:` or a route of routing protocol RTPROT_XFRMCTL (see `xfrmctl.kernel.interfaces`).

Contract: `ours_present()` answers from one RTM_GETLINK and one RTM_GETROUTE dump (RFC 3549,
rtnetlink) on a plain blocking socket, parsing only the fixed headers and two link attributes;
it is True whenever `interfaces.remove_stale` could find something to remove, so that a
daemon start with nothing stale (the common case) never imports pyroute2's IPRoute (its
rtnetlink marshal loads every traffic-control module: ~120 M instructions per start). OSError
on any socket failure: the caller then takes the full path, which reports errors its way.
"""

from __future__ import annotations

import os
import socket
import struct

NLMSG_HDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
RTATTR_HDR = struct.Struct("=HH")  # len, type
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
RTM_GETLINK, RTM_NEWLINK, RTM_GETROUTE, RTM_NEWROUTE = 18, 16, 26, 24
IFINFOMSG_LEN = 16  # family, pad, type, index, flags, change
RTMSG_LEN = 12  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
IFLA_IFALIAS = 20
RTM_PROTOCOL_OFFSET = 5


def _align4(n: int) -> int:
    return (n + 3) & ~3


def _attrs(data: bytes, start: int, end: int) -> dict[int, bytes]:
    """The rtattrs between `start` and `end`, by type (the last of a type wins)."""
    found: dict[int, bytes] = {}
    while start + RTATTR_HDR.size <= end:
        length, kind = RTATTR_HDR.unpack_from(data, start)
        if length < RTATTR_HDR.size:
            break
        found[kind & 0x3FFF] = data[start + RTATTR_HDR.size : start + length]
        start += _align4(length)
    return found


def _dump(sock: socket.socket, msg_type: int, body: bytes, seq: int) -> list[tuple[int, bytes]]:
    """Every (type, payload) of one dump; OSError for an error reply."""
    header = NLMSG_HDR.pack(
        NLMSG_HDR.size + len(body), msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, 0
    )
    sock.send(header + body)
    messages: list[tuple[int, bytes]] = []
    while True:
        data = sock.recv(1 << 16)
        offset = 0
        while offset + NLMSG_HDR.size <= len(data):
            length, kind, _, got_seq, _ = NLMSG_HDR.unpack_from(data, offset)
            if length < NLMSG_HDR.size:
                raise OSError("rtnetlink: malformed reply")
            payload = data[offset + NLMSG_HDR.size : offset + length]
            offset += _align4(length)
            if got_seq != seq:
                continue
            if kind == NLMSG_DONE:
                return messages
            if kind == NLMSG_ERROR:
                code = -struct.unpack_from("=i", payload)[0]
                if code:
                    raise OSError(code, f"rtnetlink dump: {os.strerror(code)}")
                continue
            messages.append((kind, payload))


def _our_link(payload: bytes) -> bool:
    alias = _attrs(payload, IFINFOMSG_LEN, len(payload)).get(IFLA_IFALIAS, b"")
    return alias.startswith(b"xfrmctl:")


def _our_route(payload: bytes, protocol: int) -> bool:
    if len(payload) < RTMSG_LEN:
        return True  # unreadable: let the full path look at it
    family = payload[0]
    return family in (socket.AF_INET, socket.AF_INET6) and payload[RTM_PROTOCOL_OFFSET] == protocol


def ours_present(protocol: int) -> bool:
    """Whether a link aliased `xfrmctl:...` or a route of `protocol` exists here."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(10)
        sock.bind((0, 0))
        links = _dump(sock, RTM_GETLINK, bytes(IFINFOMSG_LEN), 1)
        if any(kind == RTM_NEWLINK and _our_link(p) for kind, p in links):
            return True
        routes = _dump(sock, RTM_GETROUTE, bytes(RTMSG_LEN), 2)
        return any(kind == RTM_NEWROUTE and _our_route(p, protocol) for kind, p in routes)
