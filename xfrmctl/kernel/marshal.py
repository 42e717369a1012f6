"""Decoding what the kernel sends on NETLINK_XFRM: pyroute2's marshal with the XFRM classes."""

from __future__ import annotations

import struct
from typing import Any, ClassVar

from pyroute2.netlink import NLMSG_ERROR, nlmsgerr
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.marshal import Marshal

from xfrmctl.kernel.messages import MESSAGE_CLASSES, xfrm_msg


class XfrmMarshal(Marshal):  # type: ignore[misc]
    msg_map: ClassVar[dict[int, type[xfrm_msg]]] = {int(k): v for k, v in MESSAGE_CLASSES.items()}

    def parse_one_message(
        self, key: int, flags: int, sequence_number: int, data: bytes, offset: int, length: int
    ) -> Any:
        # With NETLINK_CAP_ACK the error carries only the original header, then the
        # extended-ack TLVs; pyroute2's nlmsgerr expects the TLVs right after the errno.
        if key != NLMSG_ERROR:
            return super().parse_one_message(key, flags, sequence_number, data, offset, length)
        msg = nlmsgerr(data, offset=offset)
        code = struct.unpack_from("i", data, offset + 16)[0]
        text = ext_ack_message(data, offset, length)
        msg["header"] = {
            "length": length,
            "type": key,
            "flags": flags,
            "sequence_number": sequence_number,
            "pid": 0,
        }
        msg["error"] = code
        msg["header"]["error"] = ExtAckError(abs(code), text) if code else None
        msg["header"]["ext_ack"] = text
        return msg


class ExtAckError(NetlinkError):  # type: ignore[misc]
    """A NetlinkError that keeps the kernel's extended-ack text apart from strerror."""

    def __init__(self, code: int, ext_ack: str | None) -> None:
        super().__init__(code, ext_ack)
        self.ext_ack = ext_ack


def ext_ack_message(data: bytes, offset: int, length: int) -> str | None:
    """NLMSGERR_ATTR_MSG from an error message sent with NETLINK_CAP_ACK set."""
    pos = offset + 16 + 4 + 16  # nlmsghdr, errno, the echoed request header
    end = offset + length
    while pos + 4 <= end:
        nla_len, nla_type = struct.unpack_from("HH", data, pos)
        if nla_len < 4:
            break
        if nla_type & 0x3FFF == 1:  # NLMSGERR_ATTR_MSG
            return bytes(data[pos + 4 : pos + nla_len]).rstrip(b"\0").decode(errors="replace")
        pos += (nla_len + 3) & ~3
    return None


_REPLY_MARSHAL = XfrmMarshal()


def decode_replies(raw: list[bytes]) -> list[Any]:
    """Messages as received, decoded with the XFRM message classes."""
    return [msg for data in raw for msg in _REPLY_MARSHAL.parse(data)]
