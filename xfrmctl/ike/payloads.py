"""IKEv2 payload codec (RFC 7296 §3, RFC 7383 §2.5): one dataclass per payload.

Every length and count is checked against the bytes actually present, so a hostile packet
yields `MalformedMessage`, never an IndexError or struct.error. Decoding and re-encoding a
well-formed payload gives back the same bytes. Payloads take equality, hash and repr from
`values.Value` (as generated, compiled once); TrafficSelector, sorted and hashed per packet,
keeps its generated ones.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from xfrmctl.ike.errors import MalformedMessage
from xfrmctl.ike.iana import (
    PayloadType,
    ProtocolId,
    TransformAttr,
    TransformType,
    TsType,
)
from xfrmctl.ike.transforms import Proposal, Transform
from xfrmctl.ike.values import Value

# The wire formats, one each for the encoders and the decoders (RFC 7296 §3).
GENERIC_HEADER = struct.Struct("!BBH")
_PROPOSAL = struct.Struct("!BBHBBBB")
_TRANSFORM = struct.Struct("!BBHBBH")
_U16 = struct.Struct("!H")
_U8_3X = struct.Struct("!B3x")
_U8 = struct.Struct("!B")
_U16_U16 = struct.Struct("!HH")
_NOTIFY = struct.Struct("!BBH")  # also the Delete header
_TS = struct.Struct("!BBHHH")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, eq=False, repr=False)
class Payload(Value):
    """Base: `critical` is the generic header's C bit, kept so re-encoding is exact."""

    critical: bool = field(default=False, kw_only=True)
    TYPE = PayloadType.NONE

    @property
    def ptype(self) -> int:
        return int(self.TYPE)

    def encode_body(self) -> bytes:
        raise NotImplementedError


@dataclass(frozen=True, eq=False, repr=False)
class SaPayload(Payload):
    TYPE = PayloadType.SA
    proposals: tuple[Proposal, ...]

    def encode_body(self) -> bytes:
        out = bytearray()
        for i, prop in enumerate(self.proposals):
            transforms = bytearray()
            for j, t in enumerate(prop.transforms):
                attrs = b""
                if t.key_length is not None:
                    attrs = _U16_U16.pack(0x8000 | TransformAttr.KEY_LENGTH, t.key_length)
                last_t = 0 if j == len(prop.transforms) - 1 else 3
                transforms += _TRANSFORM.pack(last_t, 0, 8 + len(attrs), t.type, 0, t.id)
                transforms += attrs
            last_p = 0 if i == len(self.proposals) - 1 else 2
            body = _PROPOSAL.pack(
                last_p,
                0,
                8 + len(prop.spi) + len(transforms),
                prop.num,
                prop.protocol,
                len(prop.spi),
                len(prop.transforms),
            )
            out += body + prop.spi + transforms
        return bytes(out)


@dataclass(frozen=True, eq=False, repr=False)
class KePayload(Payload):
    TYPE = PayloadType.KE
    group: int
    data: bytes

    def encode_body(self) -> bytes:
        return _U16_U16.pack(self.group, 0) + self.data


@dataclass(frozen=True, eq=False, repr=False)
class IdPayload(Payload):
    """IDi or IDr; `body` (type + reserved + data) is what AUTH signs (RFC 7296 §2.15)."""

    id_type: int
    data: bytes
    responder: bool = False

    @property
    def ptype(self) -> int:
        return int(PayloadType.IDr if self.responder else PayloadType.IDi)

    def encode_body(self) -> bytes:
        return _U8_3X.pack(self.id_type) + self.data


@dataclass(frozen=True, eq=False, repr=False)
class CertPayload(Payload):
    TYPE = PayloadType.CERT
    encoding: int
    data: bytes

    def encode_body(self) -> bytes:
        return bytes([self.encoding]) + self.data


@dataclass(frozen=True, eq=False, repr=False)
class CertReqPayload(Payload):
    TYPE = PayloadType.CERTREQ
    encoding: int
    data: bytes  # concatenated SHA-1 hashes of trusted CA public keys for X509_SIG

    def encode_body(self) -> bytes:
        return bytes([self.encoding]) + self.data


@dataclass(frozen=True, eq=False, repr=False)
class AuthPayload(Payload):
    TYPE = PayloadType.AUTH
    method: int
    data: bytes = field(repr=False)

    def encode_body(self) -> bytes:
        return _U8_3X.pack(self.method) + self.data


@dataclass(frozen=True, eq=False, repr=False)
class NoncePayload(Payload):
    TYPE = PayloadType.NONCE
    data: bytes = field(repr=False)

    def encode_body(self) -> bytes:
        return self.data


@dataclass(frozen=True, eq=False, repr=False)
class NotifyPayload(Payload):
    TYPE = PayloadType.NOTIFY
    notify_type: int
    data: bytes = b""
    protocol: int = ProtocolId.NONE
    spi: bytes = b""

    def encode_body(self) -> bytes:
        return _NOTIFY.pack(self.protocol, len(self.spi), self.notify_type) + self.spi + self.data


@dataclass(frozen=True, eq=False, repr=False)
class DeletePayload(Payload):
    TYPE = PayloadType.DELETE
    protocol: int
    spis: tuple[bytes, ...] = ()
    spi_size: int = 0

    def encode_body(self) -> bytes:
        size = self.spi_size or (len(self.spis[0]) if self.spis else 0)
        return _NOTIFY.pack(self.protocol, size, len(self.spis)) + b"".join(self.spis)


@dataclass(frozen=True, eq=False, repr=False)
class VendorPayload(Payload):
    TYPE = PayloadType.VENDOR
    data: bytes

    def encode_body(self) -> bytes:
        return self.data


@dataclass(frozen=True, order=True, slots=True)
class TrafficSelector:
    """One address range with a protocol and port range (RFC 7296 §3.13.1)."""

    start: IPAddress
    end: IPAddress
    ip_proto: int = 0
    start_port: int = 0
    end_port: int = 65535

    @property
    def ts_type(self) -> TsType:
        return TsType.IPV4_ADDR_RANGE if self.start.version == 4 else TsType.IPV6_ADDR_RANGE

    def __str__(self) -> str:
        net = f"{self.start}-{self.end}"
        try:
            nets = list(ipaddress.summarize_address_range(self.start, self.end))
            if len(nets) == 1:
                net = str(nets[0])
        except (TypeError, ValueError):
            pass
        if self.ip_proto == 0 and self.start_port == 0 and self.end_port == 65535:
            return net
        ports = (
            ""
            if (self.start_port, self.end_port) == (0, 65535)
            else f"{self.start_port}"
            if self.start_port == self.end_port
            else f"{self.start_port}-{self.end_port}"
        )
        return f"{net}[{self.ip_proto}/{ports}]"


@dataclass(frozen=True, eq=False, repr=False)
class TsPayload(Payload):
    selectors: tuple[TrafficSelector, ...]
    responder: bool = False

    @property
    def ptype(self) -> int:
        return int(PayloadType.TSr if self.responder else PayloadType.TSi)

    def encode_body(self) -> bytes:
        out = bytearray(_U8_3X.pack(len(self.selectors)))
        for ts in self.selectors:
            addrs = ts.start.packed + ts.end.packed
            out += _TS.pack(ts.ts_type, ts.ip_proto, 8 + len(addrs), ts.start_port, ts.end_port)
            out += addrs
        return bytes(out)


@dataclass(frozen=True, eq=False, repr=False)
class CpPayload(Payload):
    TYPE = PayloadType.CP
    cfg_type: int
    attributes: tuple[tuple[int, bytes], ...] = ()

    def encode_body(self) -> bytes:
        out = bytearray(_U8_3X.pack(self.cfg_type))
        for atype, value in self.attributes:
            out += _U16_U16.pack(atype & 0x7FFF, len(value)) + value
        return bytes(out)


@dataclass(frozen=True, eq=False, repr=False)
class SkPayload(Payload):
    """Encrypted payload: `inner_next` is the type of the first payload inside (§3.14)."""

    TYPE = PayloadType.SK
    inner_next: int
    data: bytes  # IV || ciphertext || ICV

    def encode_body(self) -> bytes:
        return self.data


@dataclass(frozen=True, eq=False, repr=False)
class SkfPayload(Payload):
    """Encrypted fragment (RFC 7383 §2.5); `inner_next` is non-zero only in fragment 1."""

    TYPE = PayloadType.SKF
    inner_next: int
    number: int
    total: int
    data: bytes

    def encode_body(self) -> bytes:
        return _U16_U16.pack(self.number, self.total) + self.data


@dataclass(frozen=True, eq=False, repr=False)
class EapPayload(Payload):
    TYPE = PayloadType.EAP
    data: bytes

    def encode_body(self) -> bytes:
        return self.data


@dataclass(frozen=True, eq=False, repr=False)
class UnknownPayload(Payload):
    """A payload type we do not implement, kept verbatim so the engine can judge its C bit."""

    payload_type: int
    data: bytes

    @property
    def ptype(self) -> int:
        return self.payload_type

    def encode_body(self) -> bytes:
        return self.data


# ---------------------------------------------------------------------------------------------
# Decoding


_KEY_LENGTH = TransformAttr.KEY_LENGTH
_TRANSFORM_TYPES = TransformType._value2member_map_
_PROTOCOLS = ProtocolId._value2member_map_
# Decoded transforms, shared: a peer sends the same few in every SA payload. Bounded, since
# a hostile one may send any (type, id, key length).
_TRANSFORMS: dict[tuple[int, int, int | None], Transform] = {}
_TRANSFORMS_KEPT = 1024


def _short(what: str, field_name: str, n: int, left: int) -> MalformedMessage:
    """The one message for data that ends before a field does."""
    return MalformedMessage(f"{what}: {field_name} needs {n} bytes, only {left} left")


class _Reader:
    """Bounds-checked cursor: every read names what it was reading when data runs out. The
    names take `{}` for an argument, formatted only then (most reads succeed)."""

    __slots__ = ("arg", "data", "pos", "what")

    def __init__(self, data: bytes, what: str, arg: object = None) -> None:
        self.data = data
        self.pos = 0
        self.what = what
        self.arg = arg

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, field_name: str, arg: object = None) -> bytes:
        pos = self.pos
        end = pos + n
        if n < 0 or end > len(self.data):
            raise self._short(n, field_name, arg)
        self.pos = end
        return self.data[pos:end]

    def unpack(self, s: struct.Struct, field_name: str, arg: object = None) -> tuple[int, ...]:
        pos = self.pos
        end = pos + s.size
        if end > len(self.data):
            raise self._short(s.size, field_name, arg)
        self.pos = end
        return s.unpack_from(self.data, pos)

    def _short(self, n: int, field_name: str, arg: object) -> MalformedMessage:
        return _short(self.what.format(self.arg), field_name.format(arg), n, self.remaining())


def _transform(ttype: int, tid: int, key_length: int | None) -> Transform:
    key = (ttype, tid, key_length)
    t = _TRANSFORMS.get(key)
    if t is None:
        t = Transform(_TRANSFORM_TYPES[ttype], tid, key_length)  # type: ignore[arg-type]
        if len(_TRANSFORMS) < _TRANSFORMS_KEPT:
            _TRANSFORMS[key] = t
    return t


_KEY_LENGTH_TV = 0x8000 | _KEY_LENGTH


def _key_length(attrs: bytes, ttype: int, tid: int) -> tuple[int | None, bool]:
    """A transform's attributes: its key length, and whether it is usable (no other
    attribute: an unknown one means the transform must be ignored)."""
    if len(attrs) == 4:  # the usual: a key length and nothing else
        atype, value = _U16_U16.unpack_from(attrs)
        if atype == _KEY_LENGTH_TV:
            return value, True
    ar = _Reader(attrs, f"transform {ttype}/{tid}")
    key_length: int | None = None
    usable = True
    while ar.remaining():
        (atype,) = ar.unpack(_U16, "attribute type")
        if atype & 0x8000:
            (value,) = ar.unpack(_U16, "attribute value")
            if atype & 0x7FFF == _KEY_LENGTH and key_length is None:
                key_length = value
            else:
                usable = False
        else:
            (alen,) = ar.unpack(_U16, "attribute length")
            ar.take(alen, "attribute value")
            usable = False
    return key_length, usable


def _decode_proposal(pr: _Reader, num: int, ntrans: int) -> tuple[list[Transform], bool]:
    transforms: list[Transform] = []
    usable = True
    tlast = 3
    for _ in range(ntrans):
        if tlast != 3:
            raise MalformedMessage(f"proposal {num}: transform after the last one")
        tlast, _, tlen, ttype, _, tid = pr.unpack(_TRANSFORM, "transform header")
        if tlast not in (0, 3):
            raise MalformedMessage(f"proposal {num}: transform 'last' field is {tlast}")
        if tlen < 8:
            raise MalformedMessage(f"proposal {num}: transform length {tlen} below 8")
        key_length: int | None = None
        if tlen > 8:
            attrs = pr.take(tlen - 8, "transform attributes")
            key_length, ok = _key_length(attrs, ttype, tid)
            usable = usable and ok
        if ttype not in _TRANSFORM_TYPES:
            usable = False  # unknown transform type: proposal is unusable (§3.3.6)
            continue
        transforms.append(_transform(ttype, tid, key_length))
    if tlast != 0 and ntrans:
        raise MalformedMessage(f"proposal {num}: last transform not marked last")
    if pr.remaining():
        raise MalformedMessage(f"proposal {num}: {pr.remaining()} bytes after the transforms")
    return transforms, usable


def _decode_sa(body: bytes, critical: bool) -> SaPayload:
    r = _Reader(body, "SA payload")
    proposals: list[Proposal] = []
    last = 2
    while r.remaining():
        if last != 2:
            raise MalformedMessage("SA payload: data after the last proposal")
        last, _, plen, num, proto, spi_size, ntrans = r.unpack(_PROPOSAL, "proposal header")
        if last not in (0, 2):
            raise MalformedMessage(f"SA payload: proposal 'last' field is {last}, not 0 or 2")
        if plen < 8:
            raise MalformedMessage(f"SA payload: proposal length {plen} below 8")
        pr = _Reader(r.take(plen - 8, "proposal body"), "proposal {}", num)
        spi = pr.take(spi_size, "SPI")
        transforms, usable = _decode_proposal(pr, num, ntrans)
        if usable and proto in _PROTOCOLS:
            protocol = _PROTOCOLS[proto]
            proposals.append(Proposal(protocol, tuple(transforms), num, spi))  # type: ignore[arg-type]
    # An empty body is what an SA payload whose proposals were all dropped (unknown protocol
    # or transforms) encodes to: accept it, so decode and encode stay each other's inverse.
    if last != 0 and body:
        raise MalformedMessage("SA payload: last proposal not marked last")
    return SaPayload(tuple(proposals), critical=critical)


def _address(raw: bytes) -> IPAddress:
    return ipaddress.IPv4Address(raw) if len(raw) == 4 else ipaddress.IPv6Address(raw)


def _decode_ts(body: bytes, critical: bool, responder: bool) -> TsPayload:
    r = _Reader(body, "TS payload")
    (count,) = r.unpack(_U8_3X, "TS header")
    selectors: list[TrafficSelector] = []
    for i in range(count):
        ts_type, proto, slen, sport, eport = r.unpack(_TS, "selector {} header", i)
        if ts_type == TsType.IPV4_ADDR_RANGE:
            size = 4
        elif ts_type == TsType.IPV6_ADDR_RANGE:
            size = 16
        else:
            raise MalformedMessage(f"TS payload: selector {i} has unknown type {ts_type}")
        if slen != 8 + 2 * size:
            raise MalformedMessage(f"TS payload: selector {i} length {slen} is wrong for its type")
        raw_start, raw_end = r.take(size, "start address"), r.take(size, "end address")
        start = _address(raw_start)
        # A single address (a /32 or /128 child) is one object: each Child SA keeps its TS.
        end = start if raw_end == raw_start else _address(raw_end)
        selectors.append(TrafficSelector(start, end, proto, sport, eport))
    if r.remaining():
        raise MalformedMessage(f"TS payload: {r.remaining()} bytes after {count} selectors")
    return TsPayload(tuple(selectors), responder, critical=critical)


_ID_LENGTHS = {1: 4, 5: 16}  # IPV4_ADDR, IPV6_ADDR


def _head(body: bytes, s: struct.Struct, ptype: int, field_name: str) -> tuple[int, ...]:
    """The fixed header of a payload body; the body is read in place, no cursor (issue 15)."""
    if len(body) < s.size:
        raise _short(f"payload {ptype:d}", field_name, s.size, len(body))
    return s.unpack_from(body)


def _ke(body: bytes, critical: bool) -> Payload:
    group, _ = _head(body, _U16_U16, PayloadType.KE, "KE header")
    return KePayload(group, body[4:], critical=critical)


def _id(body: bytes, critical: bool, responder: bool) -> Payload:
    ptype = PayloadType.IDr if responder else PayloadType.IDi
    (id_type,) = _head(body, _U8_3X, ptype, "ID header")
    data = body[4:]
    want = _ID_LENGTHS.get(id_type)
    if want is not None and len(data) != want:
        raise MalformedMessage(f"ID payload: type {id_type} needs {want} bytes not {len(data)}")
    return IdPayload(id_type, data, responder, critical=critical)


def _cert(body: bytes, critical: bool) -> Payload:
    (enc,) = _head(body, _U8, PayloadType.CERT, "CERT encoding")
    return CertPayload(enc, body[1:], critical=critical)


def _certreq(body: bytes, critical: bool) -> Payload:
    (enc,) = _head(body, _U8, PayloadType.CERTREQ, "CERTREQ encoding")
    return CertReqPayload(enc, body[1:], critical=critical)


def _auth(body: bytes, critical: bool) -> Payload:
    (method,) = _head(body, _U8_3X, PayloadType.AUTH, "AUTH header")
    return AuthPayload(method, body[4:], critical=critical)


def _nonce(body: bytes, critical: bool) -> Payload:
    if not 16 <= len(body) <= 256:
        raise MalformedMessage(f"Nonce payload: {len(body)} bytes, must be 16..256")
    return NoncePayload(body, critical=critical)


def _notify(body: bytes, critical: bool) -> Payload:
    proto, spi_size, ntype = _head(body, _NOTIFY, PayloadType.NOTIFY, "Notify header")
    end = 4 + spi_size
    if len(body) < end:
        raise _short(f"payload {PayloadType.NOTIFY:d}", "Notify SPI", spi_size, len(body) - 4)
    return NotifyPayload(ntype, body[end:], proto, body[4:end], critical=critical)


def _delete(body: bytes, critical: bool) -> Payload:
    r = _Reader(body, "payload {}", PayloadType.DELETE)
    proto, spi_size, count = r.unpack(_NOTIFY, "Delete header")
    if (spi_size == 0) != (count == 0) or spi_size * count != r.remaining():
        raise MalformedMessage(
            f"Delete payload: {count} SPIs of {spi_size} bytes but {r.remaining()} bytes"
        )
    spis = tuple(r.take(spi_size, "SPI") for _ in range(count if spi_size else 0))
    return DeletePayload(proto, spis, spi_size, critical=critical)


def _cp(body: bytes, critical: bool) -> Payload:
    r = _Reader(body, "payload {}", PayloadType.CP)
    (cfg_type,) = r.unpack(_U8_3X, "CP header")
    attrs: list[tuple[int, bytes]] = []
    while r.remaining():
        atype, alen = r.unpack(_U16_U16, "CP attribute header")
        attrs.append((atype & 0x7FFF, r.take(alen, "CP attribute value")))
    return CpPayload(cfg_type, tuple(attrs), critical=critical)


# One decoder per payload type (RFC 7296 §3.2-§3.16, RFC 3748 for EAP), each given the body
# and the C bit; a type missing here is kept as UnknownPayload.
_DECODERS: dict[int, Callable[[bytes, bool], Payload]] = {
    PayloadType.SA: _decode_sa,
    PayloadType.KE: _ke,
    PayloadType.IDi: lambda b, c: _id(b, c, False),
    PayloadType.IDr: lambda b, c: _id(b, c, True),
    PayloadType.CERT: _cert,
    PayloadType.CERTREQ: _certreq,
    PayloadType.AUTH: _auth,
    PayloadType.NONCE: _nonce,
    PayloadType.NOTIFY: _notify,
    PayloadType.DELETE: _delete,
    PayloadType.VENDOR: lambda b, c: VendorPayload(b, critical=c),
    PayloadType.TSi: lambda b, c: _decode_ts(b, c, False),
    PayloadType.TSr: lambda b, c: _decode_ts(b, c, True),
    PayloadType.CP: _cp,
    PayloadType.EAP: lambda b, c: EapPayload(b, critical=c),
}


def decode_payloads(first: int, data: bytes, what: str = "message") -> list[Payload]:
    """Walk a payload chain. SK/SKF end the chain and must cover the rest of `data`."""
    payloads: list[Payload] = []
    ptype, pos, end = first, 0, len(data)
    while ptype != PayloadType.NONE:
        if end - pos < 4:
            raise _short(what, f"header of payload {ptype}", 4, end - pos)
        nxt, flags, plen = GENERIC_HEADER.unpack_from(data, pos)
        if plen < 4:
            raise MalformedMessage(f"{what}: payload {ptype} length {plen} below 4")
        if end - pos < plen:
            raise _short(what, f"body of payload {ptype}", plen - 4, end - pos - 4)
        body = data[pos + 4 : pos + plen]
        pos += plen
        critical = bool(flags & 0x80)
        if ptype == PayloadType.SK:
            payloads.append(SkPayload(nxt, body, critical=critical))
            break
        if ptype == PayloadType.SKF:
            if len(body) < 4:
                raise _short("SKF payload", "fragment numbers", 4, len(body))
            number, total = _U16_U16.unpack_from(body)
            payloads.append(SkfPayload(nxt, number, total, body[4:], critical=critical))
            break
        decoder = _DECODERS.get(ptype)
        payloads.append(
            UnknownPayload(ptype, body, critical=critical)
            if decoder is None
            else decoder(body, critical)
        )
        ptype = nxt
    if pos != end:
        raise MalformedMessage(f"{what}: {end - pos} bytes after the last payload")
    return payloads


def _next_field(p: Payload) -> int:
    return p.inner_next if isinstance(p, SkPayload | SkfPayload) else -1


def encode_payloads(payloads: Sequence[Payload]) -> tuple[int, bytes]:
    """Chain payloads; returns the first payload type and the bytes."""
    out = bytearray()
    for i, p in enumerate(payloads):
        body = p.encode_body()
        nxt = _next_field(p)
        if nxt < 0:
            nxt = payloads[i + 1].ptype if i + 1 < len(payloads) else PayloadType.NONE
        if len(body) + 4 > 0xFFFF:
            raise ValueError(f"payload {p.ptype} too long: {len(body) + 4} bytes")
        out += GENERIC_HEADER.pack(nxt, 0x80 if p.critical else 0, len(body) + 4) + body
    first = payloads[0].ptype if payloads else PayloadType.NONE
    return first, bytes(out)
