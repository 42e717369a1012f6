"""IPComp negotiation for a Child SA (RFC 3173; RFC 7296 §2.22 and §3.10.1 IPCOMP_SUPPORTED).

Contract: a child configured with `ipcomp` offers one IPCOMP_SUPPORTED notify (our 16-bit CPI
and DEFLATE) in every request that creates or rekeys it. The responder answers with a notify
of its own CPI only when its child allows IPComp too; otherwise, and when the answer lacks the
notify, both sides go on without IPComp (strongSwan's behaviour). A notify we did not ask for
is ignored. As in strongSwan, IPComp is neither offered nor accepted on a UDP-encapsulated
(NAT) IKE SA: the kernel does not stack IPComp on ESP-in-UDP. CPIs are drawn from 256-61439,
the range RFC 3173 §3.3 leaves for negotiation, avoiding those our other Child SAs use.
"""

from __future__ import annotations

import struct
from enum import IntEnum

from xfrmctl.ike.iana import NotifyType
from xfrmctl.ike.payloads import NotifyPayload, Payload
from xfrmctl.ike.sa import IkeSa
from xfrmctl.ike.spec import ChildSpec

CPI_MIN = 0x100
CPI_MAX = 0xEFFF


class IpcompId(IntEnum):
    """IPComp transform IDs (IANA "IPComp Transform IDs", RFC 7296 §3.10.1)."""

    OUI = 1
    DEFLATE = 2
    LZS = 3
    LZJH = 4


def usable(sa: IkeSa, spec: ChildSpec) -> bool:
    """Whether this child may use IPComp on this IKE SA."""
    return spec.ipcomp and sa.encap() is None


def allocate_cpi(sa: IkeSa) -> int:
    """A CPI no other Child SA of the endpoint uses inbound (the kernel keys IPComp SAs by
    destination and CPI, so a clash would fail the install)."""
    used = {c.cpi_in for ike in sa.ep.sas.values() for c in ike.children}
    used |= {c.cpi_in for c in sa.children}
    span = CPI_MAX - CPI_MIN + 1
    while True:
        cpi = CPI_MIN + int.from_bytes(sa.ep.random(4), "big") % span
        if cpi not in used:
            return cpi


def notify(cpi: int) -> NotifyPayload:
    """IPCOMP_SUPPORTED: the CPI we want the peer to send with, and DEFLATE."""
    return NotifyPayload(NotifyType.IPCOMP_SUPPORTED, struct.pack("!HB", cpi, IpcompId.DEFLATE))


def offered_cpi(payloads: list[Payload]) -> int:
    """The peer's CPI from its first IPCOMP_SUPPORTED naming DEFLATE; 0 when there is none.

    RFC 7296 §2.22: several notifies may offer several algorithms; DEFLATE is the one we do.
    A notify too short for a CPI and transform is malformed and skipped."""
    for p in payloads:
        if not isinstance(p, NotifyPayload) or p.notify_type != NotifyType.IPCOMP_SUPPORTED:
            continue
        if len(p.data) < 3:
            continue
        cpi, transform = struct.unpack_from("!HB", p.data)
        if transform == IpcompId.DEFLATE and cpi:
            return int(cpi)
    return 0


def respond(sa: IkeSa, spec: ChildSpec, request: list[Payload]) -> tuple[int, int]:
    """Responder: (our CPI, the peer's CPI) when both want IPComp, else (0, 0)."""
    peer = offered_cpi(request)
    if not peer or not usable(sa, spec):
        return 0, 0
    return allocate_cpi(sa), peer


def agreed(cpi_in: int, response: list[Payload]) -> tuple[int, int]:
    """Initiator: (our CPI, the peer's) when we offered `cpi_in` and the peer answered with a
    CPI of its own; (0, 0) otherwise (no IPComp)."""
    peer = offered_cpi(response) if cpi_in else 0
    return (cpi_in, peer) if peer else (0, 0)
