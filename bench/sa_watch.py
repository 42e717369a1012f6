#!/usr/bin/env python3
"""Wait, in this network namespace, until the kernel holds at least N XFRM SAs; print the
CLOCK_MONOTONIC time at which it first saw them, or `timeout COUNT`.

bench/tunnels.py starts one per namespace before the setup interval. Each asks the kernel for
its SA count (XFRM_MSG_GETSADINFO, what `ip xfrm state count` asks) every 50 ms over one
netlink socket. It replaces an `ip xfrm state count` process per namespace four times a
second: a fork and an exec each, which the emulated guest's CPUs paid while the daemons under
measurement competed for them. Standard library only, so it starts fast.

  sa_watch.py N TIMEOUT_S
"""

from __future__ import annotations

import socket
import struct
import sys
import time

NETLINK_XFRM = 6
XFRM_MSG_GETSADINFO = 35
XFRMA_SAD_CNT = 1  # u32, the kernel's count of SAs
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
POLL_S = 0.05
_NLMSG = struct.Struct("=IHHII")
_NLA = struct.Struct("=HH")
_U32 = struct.Struct("=I")


def sa_count(sock: socket.socket, seq: int) -> int:
    body = _U32.pack(0)  # flags, unused
    sock.send(_NLMSG.pack(16 + len(body), XFRM_MSG_GETSADINFO, NLM_F_REQUEST, seq, 0) + body)
    data = sock.recv(65536)
    length, mtype, _flags, _seq, _pid = _NLMSG.unpack_from(data)
    if mtype == NLMSG_ERROR:
        raise SystemExit(f"GETSADINFO refused: errno {-struct.unpack_from('=i', data, 16)[0]}")
    offset = 16 + 4  # nlmsghdr, then the u32 flags
    while offset + 4 <= length:
        alen, atype = _NLA.unpack_from(data, offset)
        if atype == XFRMA_SAD_CNT:
            return int(_U32.unpack_from(data, offset + 4)[0])
        offset += (alen + 3) & ~3
    raise SystemExit("GETSADINFO answer without an SA count")


def main() -> None:
    want, timeout = int(sys.argv[1]), float(sys.argv[2])
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_XFRM)
    sock.bind((0, 0))
    print("ready", flush=True)
    deadline = time.monotonic() + timeout
    seq = 0
    while True:
        seq += 1
        count = sa_count(sock, seq)
        now = time.monotonic()
        if count >= want:
            print(f"{now:.6f} {count}", flush=True)
            return
        if now > deadline:
            print(f"timeout {count}", flush=True)
            sys.exit(1)
        time.sleep(POLL_S)


if __name__ == "__main__":
    main()
