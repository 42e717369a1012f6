"""Responder IKE SAs between IKE_SA_INIT and IKE_AUTH ("half-open"), counted for DoS limits.

RFC 7296 §2.6: a responder under load demands cookies before it keeps state. Counting only
in total lets one address that answers cookies (it can mint any number by varying its SPI)
fill every slot; so, as strongSwan's `block_threshold`/`cookie_threshold_ip` do, half-open
SAs are also counted per peer IP address. Each SA remembers the key it was filed under: a
NAT float to port 4500 changes its remote address before IKE_AUTH completes.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from typing import Generic, Protocol, TypeVar

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Address = tuple[IPAddress, int]
Key = tuple[Address, bytes]  # (peer address of the IKE_SA_INIT request, initiator SPI)


class Member(Protocol):
    """What the count needs of an IKE SA (kept structural: the IKE SA module sits above)."""

    @property
    def id(self) -> int: ...
    @property
    def remote(self) -> Address: ...
    @property
    def spi_i(self) -> bytes: ...


IkeSa = TypeVar("IkeSa", bound=Member)


class HalfOpen(Generic[IkeSa]):
    def __init__(self) -> None:
        self._sas: dict[Key, IkeSa] = {}
        self._per_ip: Counter[IPAddress] = Counter()
        self._keys: dict[int, Key] = {}  # by IkeSa.id

    def __len__(self) -> int:
        return len(self._sas)

    def get(self, remote: Address, spi_i: bytes) -> IkeSa | None:
        return self._sas.get((remote, spi_i))

    def from_ip(self, ip: IPAddress) -> int:
        return self._per_ip.get(ip, 0)

    def add(self, sa: IkeSa) -> None:
        key = (sa.remote, sa.spi_i)
        if key in self._sas:
            self.remove(self._sas[key])
        self._sas[key] = sa
        self._keys[sa.id] = key
        self._per_ip[key[0][0]] += 1

    def remove(self, sa: IkeSa) -> None:
        """Forget `sa` (established or gone); no-op when it is not half-open."""
        key = self._keys.pop(sa.id, None)
        if key is None or self._sas.get(key) is not sa:
            return
        del self._sas[key]
        ip = key[0][0]
        self._per_ip[ip] -= 1
        if self._per_ip[ip] <= 0:
            del self._per_ip[ip]
