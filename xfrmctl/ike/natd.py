"""NAT detection (RFC 7296 §2.23): hashes of addresses and ports in IKE_SA_INIT."""

from __future__ import annotations

import ipaddress
import struct

from cryptography.hazmat.primitives import hashes

from xfrmctl.ike.iana import NotifyType
from xfrmctl.ike.payloads import NotifyPayload, Payload

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Address = tuple[IPAddress, int]
NATT_PORT = 4500


_SHA1 = hashes.SHA1()  # stateless: one descriptor for every hash (4 per IKE_SA_INIT)


def natd_hash(spi_i: bytes, spi_r: bytes, addr: Address) -> bytes:
    h = hashes.Hash(_SHA1)
    h.update(spi_i + spi_r + addr[0].packed + struct.pack("!H", addr[1]))
    return h.finalize()


def natd_payloads(
    spi_i: bytes, spi_r: bytes, local: Address, remote: Address, force: bool
) -> list[Payload]:
    """Our two notifies; `force` fakes our source so the peer sees a NAT (forced encap)."""
    src = natd_hash(spi_i, spi_r, local)
    if force:
        src = natd_hash(spi_i, spi_r, (local[0], local[1] ^ 0xFFFF))
    return [
        NotifyPayload(NotifyType.NAT_DETECTION_SOURCE_IP, src),
        NotifyPayload(NotifyType.NAT_DETECTION_DESTINATION_IP, natd_hash(spi_i, spi_r, remote)),
    ]


def detect(
    payloads: list[Payload], spi_i: bytes, spi_r: bytes, local: Address, remote: Address
) -> tuple[bool, bool] | None:
    """(we are behind a NAT, the peer is behind a NAT), or None if the peer sent no NAT-D."""
    sources = [
        p.data
        for p in payloads
        if isinstance(p, NotifyPayload) and p.notify_type == NotifyType.NAT_DETECTION_SOURCE_IP
    ]
    dests = [
        p.data
        for p in payloads
        if isinstance(p, NotifyPayload) and p.notify_type == NotifyType.NAT_DETECTION_DESTINATION_IP
    ]
    if not sources or not dests:
        return None
    local_nat = natd_hash(spi_i, spi_r, local) not in dests
    remote_nat = natd_hash(spi_i, spi_r, remote) not in sources
    return local_nat, remote_nat
