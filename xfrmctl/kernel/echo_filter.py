"""A socket filter that keeps the kernel's echo of our own SA and policy changes off the
notification socket.

Every XFRM change requested over netlink is multicast to the SA or policy group with the
request's own `nlmsg_pid` in the notification's header (net/xfrm/xfrm_user.c: `c.portid =
nlh->nlmsg_pid`). A daemon that listens to those groups for drift (changes made by others) is
told of each SA and policy it installs or removes itself: five notifications per Child SA set
up, five more per rekey, each a wakeup, a read and a parse (issue 15). A classic BPF program
(socket(7) SO_ATTACH_FILTER, netlink(7)) drops, in the kernel, the add, update and delete
notifications whose `nlmsg_pid` is the one our requests carry; changes made by anyone else, and
every ACQUIRE, EXPIRE, MAPPING and flush, still arrive.

The kernel sends one notification per datagram, so the program looks at the first header only.
Classic BPF loads are big-endian and netlink headers are host order: the constants are
converted so that the comparison holds on either.
"""

from __future__ import annotations

import ctypes
import socket
import struct
import sys

from xfrmctl.kernel.messages import Msg

SO_ATTACH_FILTER = 26
ECHOED = (Msg.NEWSA, Msg.UPDSA, Msg.DELSA, Msg.NEWPOLICY, Msg.UPDPOLICY, Msg.DELPOLICY)

_LD_W_ABS, _LD_H_ABS, _JEQ_K, _RET_K = 0x20, 0x28, 0x15, 0x06
_INSN = struct.Struct("=HBBI")  # struct sock_filter: code, jt, jf, k
_PID_AT, _TYPE_AT = 12, 4  # offsets of nlmsg_pid and nlmsg_type in struct nlmsghdr
_ACCEPT, _DROP = 0xFFFFFFFF, 0


def _as_loaded(value: int, size: int) -> int:
    """What a BPF load of `size` bytes yields for a field holding `value` in host order."""
    return int.from_bytes(value.to_bytes(size, sys.byteorder), "big")


def echo_filter_program(portid: int) -> bytes:
    """The instructions: accept unless the pid is `portid` and the type one of ECHOED."""
    types = [_as_loaded(int(t), 2) for t in ECHOED]
    accept = 3 + len(types)  # index of `ret accept`; `ret drop` follows it
    insns = [
        (_LD_W_ABS, 0, 0, _PID_AT),
        (_JEQ_K, 0, accept - 2, _as_loaded(portid & 0xFFFFFFFF, 4)),
        (_LD_H_ABS, 0, 0, _TYPE_AT),
    ]
    insns += [(_JEQ_K, accept + 1 - (3 + i + 1), 0, t) for i, t in enumerate(types)]
    insns += [(_RET_K, 0, 0, _ACCEPT), (_RET_K, 0, 0, _DROP)]
    return b"".join(_INSN.pack(*insn) for insn in insns)


def attach_echo_filter(sock: socket.socket, portid: int) -> None:
    """Attach the filter for requests sent with `portid`; OSError if the kernel refuses."""
    program = echo_filter_program(portid)
    buffer = ctypes.create_string_buffer(program, len(program))
    # struct sock_fprog: the number of instructions, then a pointer to them (copied at once).
    fprog = struct.pack("@HP", len(program) // _INSN.size, ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
