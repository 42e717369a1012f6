"""What IKE_SA_INIT, CREATE_CHILD_SA and both rekeys negotiate alike: proposals, KE and nonces.

RFC 7296 §1.2/§1.3: the initiator offers numbered proposals with a KE payload for its first
choice of group; a responder that picks another group answers INVALID_KE_PAYLOAD naming it
(§1.2, §2.7), and the initiator retries once with that group if it offered it. The responder's
side checks the KE payload against the chosen proposal and computes the shared secret.
"""

from __future__ import annotations

import struct
from typing import TypeVar

from xfrmctl.ike.crypto.algorithms import Encr, Integ, Prf, encr_for, integ_for, prf_for
from xfrmctl.ike.crypto.errors import CryptoError
from xfrmctl.ike.crypto.keyexchange import KeyExchange, new_key_exchange
from xfrmctl.ike.events import Offer
from xfrmctl.ike.iana import KeId, NotifyType, TransformType
from xfrmctl.ike.payloads import KePayload, NotifyPayload, Payload
from xfrmctl.ike.proposals import format_proposal
from xfrmctl.ike.transforms import Proposal

NONCE_SIZE = 32

P = TypeVar("P", bound=Payload)


def numbered(proposals: tuple[Proposal, ...], spi: bytes = b"") -> tuple[Proposal, ...]:
    return tuple(Proposal(p.protocol, p.transforms, i + 1, spi) for i, p in enumerate(proposals))


def notifies(payloads: list[Payload]) -> dict[int, NotifyPayload]:
    return {p.notify_type: p for p in payloads if isinstance(p, NotifyPayload)}


def first(payloads: list[Payload], kind: type[P]) -> P | None:
    return next((p for p in payloads if isinstance(p, kind)), None)


def error_notify(payloads: list[Payload]) -> NotifyPayload | None:
    for p in payloads:
        if isinstance(p, NotifyPayload) and p.notify_type < 16384:
            return p
    return None


def ke_group(p: Proposal) -> int:
    groups = p.of_type(TransformType.KE)
    return groups[0].id if groups else KeId.NONE


def offered_groups(proposals: tuple[Proposal, ...]) -> set[int]:
    return {t.id for p in proposals for t in p.of_type(TransformType.KE)}


def ike_algorithms(chosen: Proposal) -> tuple[Prf, Integ | None, Encr]:
    """The PRF, integrity (None for AEAD) and cipher of an agreed IKE proposal."""
    integs = chosen.of_type(TransformType.INTEG)
    integ = integ_for(integs[0]) if integs and integs[0].id != 0 else None
    prf = prf_for(chosen.of_type(TransformType.PRF)[0])
    return prf, integ, encr_for(chosen.of_type(TransformType.ENCR)[0])


def ike_offer(proposals: tuple[Proposal, ...]) -> Offer:
    return Offer(proposals=proposals, proposal_text=tuple(format_proposal(p) for p in proposals))


def invalid_ke_group(payloads: list[Payload]) -> int | None:
    """The group an INVALID_KE_PAYLOAD answer asks for (0 when it names none), else None."""
    notify = notifies(payloads).get(NotifyType.INVALID_KE_PAYLOAD)
    if notify is None:
        return None
    return struct.unpack("!H", notify.data[:2])[0] if len(notify.data) >= 2 else 0


def retry_group(payloads: list[Payload], offered: tuple[Proposal, ...], sent: int) -> int | None:
    """The group to retry with after INVALID_KE_PAYLOAD: one we offered and did not send."""
    wanted = invalid_ke_group(payloads)
    if wanted is None or wanted == sent or wanted not in offered_groups(offered):
        return None
    return wanted


def invalid_ke_answer(group: int) -> NotifyPayload:
    return NotifyPayload(NotifyType.INVALID_KE_PAYLOAD, struct.pack("!H", group))


class BadKePayload(Exception):
    """The peer's KE data does not make a shared secret (wrong length, point not on curve)."""


def respond_ke(group: int, ke_p: KePayload) -> tuple[KeyExchange, bytes]:
    """Responder: our key exchange for `group` and the secret shared with the peer's KE.

    The caller has checked that `ke_p.group` is the chosen proposal's group (else it answers
    `invalid_ke_answer`); a malformed public value raises BadKePayload.
    """
    try:
        ke = new_key_exchange(KeId(group))
        return ke, ke.shared_secret(ke_p.data)
    except (CryptoError, ValueError) as exc:
        raise BadKePayload(str(exc)) from None
