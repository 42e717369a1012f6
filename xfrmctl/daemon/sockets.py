"""IKE's UDP sockets: ports 500 and 4500, IPv4 and IPv6, with the local address of each datagram.

The sockets are bound to the wildcard address and use IP_PKTINFO so that replies leave from the
address the request came to. Port 4500 carries IKE behind a four-byte non-ESP marker
(RFC 3948) and has the kernel's ESP-in-UDP decapsulation switched on, so ESP packets arriving
there never reach us.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("xfrmctl.sockets")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Address = tuple[IPAddress, int]
Receiver = Callable[[bytes, Address, Address], None]

SOL_UDP = 17
UDP_ENCAP = 100
UDP_ENCAP_ESPINUDP = 2
NON_ESP_MARKER = b"\x00\x00\x00\x00"
IP_PKTINFO = 8
IPV6_RECVPKTINFO = 49
IPV6_PKTINFO = 50
MAX_DATAGRAM = 65535
# A rekey storm or a burst of initiations brings hundreds of datagrams at once; the default
# receive buffer (rmem_default, 208 KiB) holds about 160 and drops the rest, each costing a
# retransmission timeout. 4 MiB (past rmem_max only with CAP_NET_ADMIN: SO_RCVBUFFORCE).
RECEIVE_BUFFER = 4 << 20
SO_RCVBUFFORCE = 33


@dataclass
class IkeSocket:
    sock: socket.socket
    family: int
    port: int
    natt: bool  # port 4500 style: non-ESP marker and ESP-in-UDP decapsulation


class IkeSockets:
    """All of the daemon's IKE sockets, fed into one receive callback."""

    def __init__(
        self,
        receiver: Receiver,
        ports: tuple[int, int] = (500, 4500),
        prepare: Callable[[socket.socket, int], None] | None = None,
        ipv6: bool = True,
    ) -> None:
        self._receiver = receiver
        self._ports = ports
        self._prepare = prepare
        self._ipv6 = ipv6
        self._sockets: list[IkeSocket] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def ike_port(self) -> int:
        return self._ports[0]

    @property
    def natt_port(self) -> int:
        return self._ports[1]

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind every socket; raises OSError naming the port when one cannot be bound."""
        self._loop = loop
        families = [socket.AF_INET] + ([socket.AF_INET6] if self._ipv6 and socket.has_ipv6 else [])
        for family in families:
            for port, natt in ((self._ports[0], False), (self._ports[1], True)):
                try:
                    sock = self._bind(family, port, natt)
                except OSError as exc:
                    if family == socket.AF_INET6 and exc.errno in (97, 99):  # no IPv6 here
                        log.info("IPv6 unavailable, IKE listens on IPv4 only")
                        break
                    self.close()
                    fam = "IPv4" if family == socket.AF_INET else "IPv6"
                    raise OSError(
                        exc.errno, f"cannot bind UDP port {port} ({fam}): {exc.strerror}"
                    ) from exc
                entry = IkeSocket(sock, family, port, natt)
                self._sockets.append(entry)
                loop.add_reader(sock.fileno(), self._readable, entry)

    def _bind(self, family: int, port: int, natt: bool) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
                sock.bind(("::", port))
            else:
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
                sock.bind(("0.0.0.0", port))
            _grow_receive_buffer(sock)
            if self._prepare is not None:
                self._prepare(sock, family)
            if natt:
                sock.setsockopt(SOL_UDP, UDP_ENCAP, UDP_ENCAP_ESPINUDP)
        except OSError:
            sock.close()
            raise
        return sock

    def _readable(self, entry: IkeSocket) -> None:
        for _ in range(64):  # drain a burst, but give other tasks a turn
            try:
                data, ancdata, _flags, peer = entry.sock.recvmsg(MAX_DATAGRAM, 256)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("receive error on UDP %d: %s", entry.port, exc)
                return
            local = _local_endpoint(ancdata, entry)
            if local is None:
                continue
            if entry.natt:
                if data == b"\xff":
                    continue  # NAT-T keepalive (RFC 3948 §2.3)
                if not data.startswith(NON_ESP_MARKER):
                    continue  # ESP the kernel did not take; nothing for IKE
                data = data[4:]
            remote = _endpoint(peer[0], peer[1])
            try:
                self._receiver(data, local, remote)
            except Exception:  # a bad datagram must never stop the daemon
                log.exception("unhandled error processing a datagram from %s", remote[0])

    def send(self, data: bytes, local: Address, remote: Address) -> None:
        family = socket.AF_INET if local[0].version == 4 else socket.AF_INET6
        entry = self._find(family, local[1])
        if entry is None:
            log.warning(
                "no socket for %s port %d; dropping a message to %s", local[0], local[1], remote[0]
            )
            return
        if entry.natt:
            data = NON_ESP_MARKER + data
        ancdata = [_pktinfo(local[0])]
        try:
            entry.sock.sendmsg([data], ancdata, 0, (_text(remote[0]), remote[1]))
        except OSError as exc:
            log.warning("send to %s:%d failed: %s", remote[0], remote[1], exc)

    def send_keepalive(self, local: Address, remote: Address) -> None:
        """A NAT-T keepalive: one 0xFF byte, no marker (RFC 3948 §2.3)."""
        family = socket.AF_INET if local[0].version == 4 else socket.AF_INET6
        entry = self._find(family, local[1])
        if entry is not None:
            with contextlib.suppress(OSError):
                entry.sock.sendmsg(
                    [b"\xff"], [_pktinfo(local[0])], 0, (_text(remote[0]), remote[1])
                )

    def _find(self, family: int, port: int) -> IkeSocket | None:
        for entry in self._sockets:
            if entry.family == family and entry.port == port:
                return entry
        return None

    def close(self) -> None:
        for entry in self._sockets:
            if self._loop is not None:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(entry.sock.fileno())
            entry.sock.close()
        self._sockets.clear()


def _local_endpoint(ancdata: list[tuple[int, int, bytes]], entry: IkeSocket) -> Address | None:
    """The (address, port) a datagram came to, from its packet info."""
    family = entry.family
    for level, kind, data in ancdata:
        if family == socket.AF_INET and level == socket.IPPROTO_IP and kind == IP_PKTINFO:
            # struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }
            return _packed_endpoint(data[8:12], entry.port)
        if family == socket.AF_INET6 and level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO:
            return _packed_endpoint(data[:16], entry.port)
    return None


# A daemon talks to few endpoints, each in thousands of datagrams: parsing and formatting
# their addresses once each (ipaddress does it in Python) was a visible share of a setup's
# CPU, and every IKE SA keeps its two endpoints: one shared (address, port) tuple per
# endpoint, not three objects per IKE SA and side (issue 15).
_ADDRESSES = 4096


@functools.lru_cache(maxsize=_ADDRESSES)
def _endpoint(text: str, port: int) -> Address:
    """recvmsg's peer."""
    return _peer_address(text), port


@functools.lru_cache(maxsize=_ADDRESSES)
def _peer_address(text: str) -> IPAddress:
    """An IPv6 scope (`%eth0`) dropped."""
    return ipaddress.ip_address(text.split("%")[0])


@functools.lru_cache(maxsize=_ADDRESSES)
def _packed_endpoint(packed: bytes, port: int) -> Address:
    return _packed_address(packed), port


@functools.lru_cache(maxsize=_ADDRESSES)
def _packed_address(packed: bytes) -> IPAddress:
    return ipaddress.ip_address(packed)


@functools.lru_cache(maxsize=_ADDRESSES)
def _text(addr: IPAddress) -> str:
    return str(addr)


@functools.lru_cache(maxsize=_ADDRESSES)
def _pktinfo(addr: IPAddress) -> tuple[int, int, bytes]:
    if addr.version == 4:
        return (socket.IPPROTO_IP, IP_PKTINFO, struct.pack("=I4s4s", 0, addr.packed, bytes(4)))
    return (socket.IPPROTO_IPV6, IPV6_PKTINFO, addr.packed + struct.pack("=I", 0))


def _grow_receive_buffer(sock: socket.socket) -> None:
    """RECEIVE_BUFFER, forced past rmem_max when we may, else as much as rmem_max allows."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
    except OSError:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
