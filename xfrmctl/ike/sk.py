"""SK and SKF payload protection (RFC 7296 §3.14, RFC 5282, RFC 7383).

Builds whole protected datagrams from inner payloads, and checks and opens them. Integrity is
verified before anything inside is parsed; fragments are verified one by one as they arrive.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from xfrmctl.ike.crypto.algorithms import Encr, Integ
from xfrmctl.ike.crypto.errors import CryptoError
from xfrmctl.ike.errors import MalformedMessage, RemoteProtocolError
from xfrmctl.ike.iana import PayloadType
from xfrmctl.ike.message import HEADER_LEN, Message
from xfrmctl.ike.payloads import (
    GENERIC_HEADER,
    Payload,
    SkfPayload,
    SkPayload,
    decode_payloads,
    encode_payloads,
)

MAX_FRAGMENTS = 64
MAX_REASSEMBLY_BYTES = 64 * 1024


@dataclass
class SkKeys:
    """One direction's keys and the negotiated transforms; never printed."""

    encr: Encr
    integ: Integ | None
    encr_key: bytes = field(repr=False)
    integ_key: bytes = field(repr=False)

    @property
    def overhead(self) -> int:
        icv = (
            self.encr.icv_size if self.encr.is_aead else (self.integ.icv_size if self.integ else 0)
        )
        return self.encr.iv_size + icv + self.encr.block_size  # worst-case padding


def _seal(
    keys: SkKeys,
    random: Callable[[int], bytes],
    template: Message,
    ptype: int,
    inner_next: int,
    extra: bytes,
    plaintext: bytes,
) -> bytes:
    """Header + payload header (+ fragment fields) + IV + ciphertext + ICV."""
    encr = keys.encr
    pad_len = (-(len(plaintext) + 1)) % encr.block_size if encr.block_size > 1 else 0
    padded = plaintext + bytes(pad_len) + bytes([pad_len])
    iv = random(encr.iv_size)
    icv_size = encr.icv_size if encr.is_aead else (keys.integ.icv_size if keys.integ else 0)
    ct_len = len(padded) + (encr.icv_size if encr.is_aead else 0)
    body_len = len(extra) + len(iv) + ct_len + (0 if encr.is_aead else icv_size)
    total = HEADER_LEN + 4 + body_len
    header = template.header(ptype, total).encode()
    aad = header + GENERIC_HEADER.pack(inner_next, 0, 4 + body_len) + extra
    ct = encr.encrypt(keys.encr_key, iv, padded, aad)
    out = aad + iv + ct
    if not encr.is_aead:
        if keys.integ is None:
            raise ValueError("non-AEAD cipher negotiated without an integrity algorithm")
        out += keys.integ.compute(keys.integ_key, out)
    return out


def protect(
    keys: SkKeys,
    random: Callable[[int], bytes],
    template: Message,
    inner: Sequence[Payload],
    fragment_size: int | None = None,
) -> list[bytes]:
    """Encrypt `inner` into one SK datagram, or SKF fragments when it would exceed the size."""
    first, plaintext = encode_payloads(inner)
    whole = _seal(keys, random, template, PayloadType.SK, first, b"", plaintext)
    if fragment_size is None or len(whole) <= fragment_size:
        return [whole]
    room = fragment_size - HEADER_LEN - 8 - keys.overhead
    if room < 64:
        raise ValueError(f"fragment size {fragment_size} too small for this cipher")
    chunks = [plaintext[i : i + room] for i in range(0, len(plaintext), room)]
    if len(chunks) > MAX_FRAGMENTS:
        raise ValueError(f"message needs {len(chunks)} fragments, more than {MAX_FRAGMENTS}")
    out = []
    for n, chunk in enumerate(chunks, 1):
        extra = struct.pack("!HH", n, len(chunks))
        out.append(
            _seal(keys, random, template, PayloadType.SKF, first if n == 1 else 0, extra, chunk)
        )
    return out


def _open(keys: SkKeys, data: bytes, body_start: int, extra_len: int) -> bytes:
    """Verify and decrypt the payload starting at `body_start` (after its generic header)."""
    encr = keys.encr
    aad_end = body_start + extra_len
    if encr.is_aead:
        rest = data[aad_end:]
        if len(rest) < encr.iv_size + encr.icv_size + 1:
            raise MalformedMessage("encrypted payload shorter than IV + ICV")
        iv, ct = rest[: encr.iv_size], rest[encr.iv_size :]
        plain = encr.decrypt(keys.encr_key, iv, ct, data[:aad_end])
    else:
        if keys.integ is None:
            raise MalformedMessage("no integrity algorithm for a non-AEAD cipher")
        icv_size = keys.integ.icv_size
        if len(data) - aad_end < encr.iv_size + icv_size + encr.block_size:
            raise MalformedMessage("encrypted payload shorter than IV + one block + ICV")
        if not keys.integ.verify(keys.integ_key, data[:-icv_size], data[-icv_size:]):
            raise RemoteProtocolError("integrity check failed", notify=None)
        rest = data[aad_end:-icv_size]
        iv, ct = rest[: encr.iv_size], rest[encr.iv_size :]
        if len(ct) % encr.block_size:
            raise MalformedMessage("ciphertext is not a whole number of blocks")
        plain = encr.decrypt(keys.encr_key, iv, ct, b"")
    if not plain:
        raise MalformedMessage("empty encrypted payload")
    pad_len = plain[-1]
    if pad_len + 1 > len(plain):
        raise MalformedMessage(f"pad length {pad_len} exceeds the decrypted data")
    return plain[: -(pad_len + 1)]


def unprotect(keys: SkKeys, data: bytes, msg: Message) -> tuple[int, bytes]:
    """Check and decrypt the SK/SKF payload of `msg` (decoded from `data`).

    Returns (inner_next, plaintext chain). Raises RemoteProtocolError without a notify on an
    integrity failure: RFC 7296 §2.21.2 says such messages are dropped silently.
    """
    last = msg.payloads[-1] if msg.payloads else None
    if isinstance(last, SkPayload):
        start = len(data) - len(last.data)
        extra = 0
    elif isinstance(last, SkfPayload):
        start = len(data) - len(last.data) - 4
        extra = 4
    else:
        raise MalformedMessage("protected exchange without an SK payload", notify=None)
    try:
        plain = _open(keys, data, start, extra)
    except CryptoError:
        raise RemoteProtocolError("integrity check failed", notify=None) from None
    return last.inner_next, plain


def decode_inner(inner_next: int, plain: bytes) -> list[Payload]:
    return decode_payloads(inner_next, plain, "encrypted payload")


@dataclass
class Reassembly:
    """Fragments of one message; bounded in count and bytes (RFC 7383 §2.6)."""

    message_id: int
    total: int
    parts: dict[int, bytes] = field(default_factory=dict)
    first_next: int = 0
    size: int = 0

    def add(self, number: int, total: int, inner_next: int, plain: bytes) -> bool:
        """Store a verified fragment; True once all are there."""
        if not 1 <= number <= total or total > MAX_FRAGMENTS:
            raise MalformedMessage(f"fragment {number} of {total} is out of range", notify=None)
        if total != self.total:
            raise MalformedMessage("fragments disagree on the total", notify=None)
        if number in self.parts:
            return False
        if self.size + len(plain) > MAX_REASSEMBLY_BYTES:
            raise MalformedMessage("fragmented message too large to reassemble", notify=None)
        self.parts[number] = plain
        self.size += len(plain)
        if number == 1:
            self.first_next = inner_next
        return len(self.parts) == self.total

    def payloads(self) -> list[Payload]:
        data = b"".join(self.parts[i] for i in range(1, self.total + 1))
        return decode_inner(self.first_next, data)
