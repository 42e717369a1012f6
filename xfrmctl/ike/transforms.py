"""Proposal and transform values shared by the SA payload codec, proposal parsing and selection.

These are plain values: the codec adds the proposal number and SPI on the wire, the proposal
parser builds them from strongSwan syntax, and the engine selects among them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xfrmctl.ike.iana import (
    EncrId,
    EsnId,
    IntegId,
    KeId,
    PrfId,
    ProtocolId,
    TransformType,
    name_of,
)

_ID_ENUMS = {
    TransformType.ENCR: EncrId,
    TransformType.PRF: PrfId,
    TransformType.INTEG: IntegId,
    TransformType.KE: KeId,
    TransformType.ESN: EsnId,
}


@dataclass(frozen=True, order=True, slots=True)
class Transform:
    """One transform: its type, its IANA ID and, for variable-length ciphers, the key length."""

    type: TransformType
    id: int
    key_length: int | None = None  # bits; the KEY_LENGTH attribute

    def __str__(self) -> str:
        name = name_of(_ID_ENUMS[self.type], self.id)
        return f"{name}_{self.key_length}" if self.key_length is not None else name


@dataclass(frozen=True, slots=True)
class Proposal:
    """A proposal: a protocol and, per transform type, the acceptable alternatives.

    `num` and `spi` are wire details: zero/empty in configured proposals, filled in by the
    engine when it builds an SA payload and by the codec when it parses one.
    """

    protocol: ProtocolId
    transforms: tuple[Transform, ...]
    num: int = 0
    spi: bytes = field(default=b"", compare=False)

    def of_type(self, ttype: TransformType) -> tuple[Transform, ...]:
        return tuple(t for t in self.transforms if t.type == ttype)


KEPT_MAX = 256  # distinct transform sets shared; a peer cycling through more gets copies
_kept: dict[tuple[Transform, ...], tuple[Transform, ...]] = {}


def kept(p: Proposal) -> Proposal:
    """The agreed proposal as an SA keeps it: its transforms one tuple shared by every SA that
    agreed on the same ones (a decoded proposal is a dozen objects; thousands of SAs keep one
    each, issue 15). The SPI stays the SA's own."""
    transforms = _kept.get(p.transforms)
    if transforms is None:
        if len(_kept) >= KEPT_MAX:
            return p
        transforms = _kept[p.transforms] = p.transforms
    return p if transforms is p.transforms else Proposal(p.protocol, transforms, p.num, p.spi)
