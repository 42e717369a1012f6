"""What the IKE sockets hand the engine for each datagram: the (address, port) it came to, from
its packet info, and the one it came from. Every IKE SA keeps both, so datagrams of one
endpoint share one tuple (issue 15: three objects per IKE SA and side otherwise)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import pytest
from daemon_helpers import BASE_PORT

from xfrmctl.daemon.sockets import Address, IkeSockets

PORTS = (BASE_PORT + 872, BASE_PORT + 873)
Got = list[tuple[bytes, Address, Address]]


def _receive(family: int, host: str, sends: list[tuple[int, bytes]]) -> Got:
    """Send each (client, data) from one of two client sockets to the IKE port; collect."""
    got: Got = []

    async def run() -> None:
        sockets = IkeSockets(lambda *a: got.append(a), PORTS, ipv6=family == socket.AF_INET6)
        sockets.open(asyncio.get_running_loop())
        clients = [socket.socket(family, socket.SOCK_DGRAM) for _ in range(2)]
        try:
            for client, data in sends:
                clients[client].sendto(data, (host, PORTS[0]))
            for _ in range(200):
                if len(got) == len(sends):
                    break
                await asyncio.sleep(0.01)
        finally:
            for c in clients:
                c.close()
            sockets.close()

    asyncio.run(run())
    return got


def test_datagrams_of_one_endpoint_share_its_address_tuple() -> None:
    got = _receive(socket.AF_INET, "127.0.0.1", [(0, b"a"), (0, b"b"), (1, b"c")])
    assert [g[0] for g in got] == [b"a", b"b", b"c"]
    loopback = ipaddress.ip_address("127.0.0.1")
    (_, local_a, remote_a), (_, local_b, remote_b), (_, local_c, remote_c) = got
    assert local_a == (loopback, PORTS[0])
    assert remote_a[0] == loopback and remote_a[1] != PORTS[0]
    assert local_b is local_a and remote_b is remote_a
    assert local_c is local_a
    assert remote_c != remote_a and remote_c[0] is remote_a[0]


def test_ipv6_datagrams_get_ipv6_endpoints() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    try:
        got = _receive(socket.AF_INET6, "::1", [(0, b"a")])
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    [(data, local, remote)] = got
    assert data == b"a"
    assert local == (ipaddress.ip_address("::1"), PORTS[0])
    assert remote[0] == ipaddress.ip_address("::1")
