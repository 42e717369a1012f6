"""The IKE sockets ask for a receive buffer that holds a rekey storm's burst: with the default
(rmem_default) a few hundred simultaneous requests overflow it, and each dropped one costs the
peer a retransmission timeout."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from daemon_helpers import BASE_PORT

from xfrmctl.daemon.sockets import RECEIVE_BUFFER, IkeSockets


def test_ike_sockets_get_the_large_receive_buffer() -> None:
    rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())
    rmem_default = int(Path("/proc/sys/net/core/rmem_default").read_text())

    async def sizes() -> list[int]:
        sockets = IkeSockets(lambda *_: None, (BASE_PORT + 870, BASE_PORT + 871), ipv6=False)
        sockets.open(asyncio.get_running_loop())
        try:
            return [
                s.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) for s in sockets._sockets
            ]
        finally:
            sockets.close()

    got = asyncio.run(sizes())
    assert len(got) == 2
    # The kernel reports twice what was set; without CAP_NET_ADMIN it stops at rmem_max.
    floor = 2 * min(RECEIVE_BUFFER, max(rmem_max, rmem_default))
    assert all(size >= floor for size in got), (got, floor)
