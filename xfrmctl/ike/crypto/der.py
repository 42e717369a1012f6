"""The few DER structures RFC 7427 AUTH data needs: AlgorithmIdentifier and RSASSA-PSS params.

`cryptography` has no public AlgorithmIdentifier codec, and the structures involved are tiny,
so this is a strict minimal reader/writer rather than an ASN.1 dependency.
"""

from __future__ import annotations

from xfrmctl.ike.crypto.errors import CryptoError

NULL = b"\x05\x00"
_SEQUENCE = 0x30
_OID = 0x06
_INTEGER = 0x02


class DerError(CryptoError):
    """Malformed DER in AUTH data."""


def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(size))) + size + content


def seq(content: bytes) -> bytes:
    return tlv(_SEQUENCE, content)


def integer(value: int) -> bytes:
    if value < 0:
        raise ValueError("negative DER integers are not needed here")
    return tlv(_INTEGER, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray((40 * arcs[0] + arcs[1],))
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(reversed(chunk))
    return tlv(_OID, bytes(body))


def oid_text(encoded: bytes) -> str:
    """Dotted form of an encoded OID, for error messages."""
    try:
        tag, body, _ = read_tlv(encoded, 0)
    except DerError:
        return "<malformed OID>"
    if tag != _OID or not body:
        return "<malformed OID>"
    arcs = [body[0] // 40, body[0] % 40]
    value = 0
    for b in body[1:]:
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(value)
            value = 0
    return ".".join(map(str, arcs))


def read_tlv(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """(tag, content, position after) of the element at `pos`."""
    if pos + 2 > len(data):
        raise DerError("truncated DER element")
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 3 or pos + n > len(data):
            raise DerError("bad DER length")
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    if pos + length > len(data):
        raise DerError("DER element longer than its container")
    return tag, data[pos : pos + length], pos + length


def _whole(data: bytes, tag: int, what: str) -> bytes:
    got, content, end = read_tlv(data, 0)
    if got != tag or end != len(data):
        raise DerError(f"expected a single DER {what}")
    return content


def sequence_items(data: bytes) -> list[tuple[int, bytes]]:
    """The (tag, content) of each element of a SEQUENCE."""
    content = _whole(data, _SEQUENCE, "SEQUENCE")
    items, pos = [], 0
    while pos < len(content):
        tag, body, pos = read_tlv(content, pos)
        items.append((tag, body))
    return items


def algorithm_identifier(data: bytes) -> tuple[bytes, bytes]:
    """(encoded OID, encoded parameters) of an AlgorithmIdentifier; NULL parameters are b""."""
    content = _whole(data, _SEQUENCE, "AlgorithmIdentifier")
    tag, _, end = read_tlv(content, 0)
    if tag != _OID:
        raise DerError("AlgorithmIdentifier does not start with an OID")
    params = content[end:]
    if params:
        read_tlv(params, 0)
        if _whole(params, params[0], "parameter") == b"" and params[0] == NULL[0]:
            params = b""
    return content[:end], params


def read_integer(data: bytes) -> int:
    content = _whole(data, _INTEGER, "INTEGER")
    if not content or content[0] & 0x80:
        raise DerError("bad DER INTEGER")
    return int.from_bytes(content, "big")
