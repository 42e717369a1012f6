"""IKE header and whole-message codec (RFC 7296 §3.1).

A `Message` is the plaintext view: for protected exchanges its payload list ends with an
SK or SKF payload whose inner payloads the engine decrypts and decodes separately.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from xfrmctl.ike.errors import MalformedMessage, RemoteProtocolError
from xfrmctl.ike.iana import ExchangeType, NotifyType, PayloadType, name_of
from xfrmctl.ike.payloads import Payload, decode_payloads, encode_payloads

HEADER = struct.Struct("!8s8sBBBBII")
HEADER_LEN = HEADER.size  # 28
FLAG_INITIATOR = 0x08
FLAG_VERSION = 0x10
FLAG_RESPONSE = 0x20
MAX_MESSAGE = 65535  # over UDP; bigger lengths are rejected before any parsing


@dataclass(frozen=True)
class Header:
    spi_i: bytes
    spi_r: bytes
    next_payload: int
    exchange: int
    flags: int
    message_id: int
    length: int
    version: int = 0x20

    @property
    def is_response(self) -> bool:
        return bool(self.flags & FLAG_RESPONSE)

    @property
    def from_initiator(self) -> bool:
        """The I flag: set by the original initiator of the IKE SA."""
        return bool(self.flags & FLAG_INITIATOR)

    def encode(self) -> bytes:
        return HEADER.pack(
            self.spi_i,
            self.spi_r,
            self.next_payload,
            self.version,
            self.exchange,
            self.flags,
            self.message_id,
            self.length,
        )


def decode_header(data: bytes) -> Header:
    """Parse and check the fixed header; the length must match the datagram exactly."""
    if len(data) < HEADER_LEN:
        raise MalformedMessage(f"message of {len(data)} bytes is shorter than the IKE header")
    spi_i, spi_r, nxt, version, exchange, flags, mid, length = HEADER.unpack_from(data)
    if version >> 4 != 2:
        raise RemoteProtocolError(
            f"IKE major version {version >> 4}, we speak 2",
            NotifyType.INVALID_MAJOR_VERSION,
        )
    if length != len(data):
        raise MalformedMessage(f"header length {length} but datagram has {len(data)} bytes")
    return Header(spi_i, spi_r, nxt, exchange, flags, mid, length, version)


@dataclass(frozen=True)
class Message:
    spi_i: bytes
    spi_r: bytes
    exchange: int
    message_id: int
    is_response: bool
    from_initiator: bool
    payloads: tuple[Payload, ...] = field(default=())
    version: int = 0x20
    version_flag: bool = False

    @property
    def flags(self) -> int:
        return (
            (FLAG_INITIATOR if self.from_initiator else 0)
            | (FLAG_RESPONSE if self.is_response else 0)
            | (FLAG_VERSION if self.version_flag else 0)
        )

    def header(self, first: int, length: int) -> Header:
        return Header(
            self.spi_i,
            self.spi_r,
            first,
            self.exchange,
            self.flags,
            self.message_id,
            length,
            self.version,
        )

    def encode(self) -> bytes:
        first, body = encode_payloads(self.payloads)
        return self.header(first, HEADER_LEN + len(body)).encode() + body

    def describe(self) -> str:
        kind = "response" if self.is_response else "request"
        names = ",".join(name_of(PayloadType, p.ptype) for p in self.payloads)
        return f"{name_of(ExchangeType, self.exchange)} {kind} {self.message_id} [{names}]"


def decode_message(data: bytes) -> Message:
    """Decode a datagram (without the non-ESP marker) into a `Message`."""
    if len(data) > MAX_MESSAGE:
        raise MalformedMessage(f"message of {len(data)} bytes exceeds {MAX_MESSAGE}")
    h = decode_header(data)
    payloads = decode_payloads(h.next_payload, data[HEADER_LEN:])
    return Message(
        h.spi_i,
        h.spi_r,
        h.exchange,
        h.message_id,
        h.is_response,
        h.from_initiator,
        tuple(payloads),
        h.version,
        bool(h.flags & FLAG_VERSION),
    )


def build_message(template: Message, payloads: Sequence[Payload]) -> Message:
    """Same header fields, new payloads."""
    return Message(
        template.spi_i,
        template.spi_r,
        template.exchange,
        template.message_id,
        template.is_response,
        template.from_initiator,
        tuple(payloads),
        template.version,
        template.version_flag,
    )
