"""One-line-per-payload text of a decoded IKE message, for debug logs (issue 5).

Only non-secret fields are shown: KE values, nonces, AUTH data, cookies, certificates and
EAP bodies appear as their sizes, never as bytes, so a trace can be posted in a bug report.
Keys and PSKs never reach this module at all.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence

from xfrmctl.ike.iana import (
    AuthMethod,
    CertEncoding,
    CfgAttr,
    CfgType,
    ExchangeType,
    HashAlgorithm,
    IdType,
    KeId,
    NotifyType,
    PayloadType,
    ProtocolId,
    name_of,
)
from xfrmctl.ike.message import Message
from xfrmctl.ike.payloads import (
    AuthPayload,
    CertPayload,
    CertReqPayload,
    CpPayload,
    DeletePayload,
    EapPayload,
    IdPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    SaPayload,
    SkfPayload,
    SkPayload,
    TsPayload,
    UnknownPayload,
    VendorPayload,
)
from xfrmctl.ike.proposals import format_proposal

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Address = tuple[IPAddress, int]

# Notifies whose data is a public number worth reading; all others show only a size.
_GROUP_NOTIFIES = {NotifyType.INVALID_KE_PAYLOAD}
_SPI_NOTIFIES = {NotifyType.REKEY_SA}


def _addr(a: Address) -> str:
    return f"{a[0]}[{a[1]}]"


def _id(p: IdPayload) -> str:
    kind = name_of(IdType, p.id_type)
    if p.id_type in (IdType.IPV4_ADDR, IdType.IPV6_ADDR) and len(p.data) in (4, 16):
        return f"{kind} {ipaddress.ip_address(p.data)}"
    if p.id_type in (IdType.FQDN, IdType.RFC822_ADDR):
        return f"{kind} {p.data.decode(errors='replace')!r}"
    return f"{kind} ({len(p.data)} bytes) {p.data.hex()}"


def _notify(p: NotifyPayload) -> str:
    out = name_of(NotifyType, p.notify_type)
    if p.protocol:
        out += f" proto={name_of(ProtocolId, p.protocol)}"
    if p.spi:
        out += f" spi={p.spi.hex()}"
    if p.notify_type in _GROUP_NOTIFIES and len(p.data) == 2:
        out += f" group={name_of(KeId, int.from_bytes(p.data, 'big'))}"
    elif p.notify_type == NotifyType.SIGNATURE_HASH_ALGORITHMS:
        data = p.data[: len(p.data) // 2 * 2]
        algos = ",".join(name_of(HashAlgorithm, h) for (h,) in struct.iter_unpack("!H", data))
        out += f" [{algos}]"
    elif p.notify_type in _SPI_NOTIFIES:
        pass  # the SPI field says it all
    elif p.data:
        out += f" ({len(p.data)} bytes)"
    return out


def _cp(p: CpPayload) -> str:
    attrs = ",".join(f"{name_of(CfgAttr, t)}({len(v)})" for t, v in p.attributes)
    return f"{name_of(CfgType, p.cfg_type)} [{attrs}]"


def describe_payload(p: Payload) -> str:
    """`TYPE details` for one payload, without any secret bytes."""
    kind = name_of(PayloadType, p.ptype)
    if isinstance(p, UnknownPayload):
        crit = " critical" if p.critical else ""
        return f"{name_of(PayloadType, p.payload_type)}{crit} ({len(p.data)} bytes)"
    detail: str
    if isinstance(p, SaPayload):
        detail = " ".join(
            f"#{prop.num} {name_of(ProtocolId, prop.protocol)}"
            + (f" spi={prop.spi.hex()}" if prop.spi else "")
            + f" {format_proposal(prop)}"
            for prop in p.proposals
        )
        detail = detail or "(no proposals)"
    elif isinstance(p, KePayload):
        detail = f"{name_of(KeId, p.group)} ({len(p.data)} bytes)"
    elif isinstance(p, NoncePayload):
        detail = f"({len(p.data)} bytes)"
    elif isinstance(p, IdPayload):
        detail = _id(p)
    elif isinstance(p, AuthPayload):
        detail = f"{name_of(AuthMethod, p.method)} ({len(p.data)} bytes)"
    elif isinstance(p, CertPayload | CertReqPayload):
        detail = f"{name_of(CertEncoding, p.encoding)} ({len(p.data)} bytes)"
    elif isinstance(p, NotifyPayload):
        detail = _notify(p)
    elif isinstance(p, DeletePayload):
        spis = ",".join(s.hex() for s in p.spis)
        detail = f"{name_of(ProtocolId, p.protocol)} [{spis}]"
    elif isinstance(p, TsPayload):
        detail = ", ".join(str(ts) for ts in p.selectors) or "(none)"
    elif isinstance(p, CpPayload):
        detail = _cp(p)
    elif isinstance(p, VendorPayload):
        detail = p.data.hex()
    elif isinstance(p, SkfPayload):
        detail = f"fragment {p.number}/{p.total} ({len(p.data)} bytes)"
    elif isinstance(p, SkPayload | EapPayload):
        detail = f"({len(p.data)} bytes)"
    else:
        detail = ""
    return f"{kind} {detail}".rstrip()


def format_message(
    msg: Message,
    payloads: Sequence[Payload],
    direction: str,
    local: Address,
    remote: Address,
) -> tuple[str, ...]:
    """Header line, then one line per payload (the decrypted ones for protected messages).

    `direction` is "in" or "out"; `payloads` replaces the message's own list when the host
    has decrypted its SK payload.
    """
    kind = "response" if msg.is_response else "request"
    arrow = (
        f"{_addr(local)} <- {_addr(remote)}"
        if direction == "in"
        else (f"{_addr(local)} -> {_addr(remote)}")
    )
    head = (
        f"{direction} {name_of(ExchangeType, msg.exchange)} {kind} mid={msg.message_id} "
        f"{arrow} spi_i={msg.spi_i.hex()} spi_r={msg.spi_r.hex()}"
        + (" I" if msg.from_initiator else "")
        + f" {len(payloads)} payload{'s' if len(payloads) != 1 else ''}"
    )
    return (head, *(f"  {describe_payload(p)}" for p in payloads))
