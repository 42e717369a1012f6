"""The echo filter's BPF program, run by a small interpreter of the four instructions it uses
(the kernel's own run is in test_netns_xfrm.py)."""

from __future__ import annotations

import struct

from xfrmctl.kernel.echo_filter import ECHOED, echo_filter_program
from xfrmctl.kernel.messages import Msg


def test_the_echo_filter_drops_only_our_changes() -> None:
    """The program, run as the kernel would on notification headers of either byte order's
    host: only SA and policy adds, updates and deletes carrying our port id are dropped."""

    def verdict(program: bytes, header: bytes) -> int:
        pc, acc = 0, 0
        while True:
            code, jt, jf, k = struct.unpack_from("=HBBI", program, 8 * pc)
            pc += 1
            if code == 0x20:
                acc = int.from_bytes(header[k : k + 4], "big")
            elif code == 0x28:
                acc = int.from_bytes(header[k : k + 2], "big")
            elif code == 0x15:
                pc += jt if acc == k else jf
            elif code == 0x06:
                return k
            else:
                raise AssertionError(f"unexpected opcode {code:#x}")

    ours, program = 0x12345678, echo_filter_program(0x12345678)
    for msg_type in Msg:
        for pid in (ours, ours + 1, 0):
            header = struct.pack("=IHHII", 64, int(msg_type), 0, 7, pid)
            dropped = verdict(program, header) == 0
            assert dropped == (pid == ours and msg_type in ECHOED), (msg_type, pid)
