"""Incoming CREATE_CHILD_SA requests (RFC 7296 §1.3): which of its three uses, and whether now.

A REKEY_SA notify for ESP/AH rekeys a Child SA (`child_rekey`), an SA payload of IKE
proposals rekeys the IKE SA (`ike_rekey`), anything else makes a new Child SA
(`child_create`). While our own IKE rekey is in flight we answer Child SA requests with
TEMPORARY_FAILURE, and an IKE rekey while a Child SA exchange of ours is in flight likewise
(§2.25): the peer retries once ours is done.
"""

from __future__ import annotations

from xfrmctl.ike import child_create, child_rekey, ike_rekey
from xfrmctl.ike.iana import NotifyType, ProtocolId
from xfrmctl.ike.message import Message
from xfrmctl.ike.negotiation import first, notifies
from xfrmctl.ike.payloads import NotifyPayload, Payload, SaPayload
from xfrmctl.ike.sa import IkeSa


def _busy_with(sa: IkeSa, kind: type) -> bool:
    return sa.outstanding is not None and isinstance(sa.outstanding.task, kind)


def _rekeys_ike(payloads: list[Payload]) -> bool:
    sa_p = first(payloads, SaPayload)
    return (
        sa_p is not None
        and bool(sa_p.proposals)
        and all(p.protocol == ProtocolId.IKE for p in sa_p.proposals)
    )


def handle_request(sa: IkeSa, msg: Message, payloads: list[Payload], now: float) -> list[Payload]:
    rekey = notifies(payloads).get(NotifyType.REKEY_SA)
    if rekey is not None and rekey.protocol in (ProtocolId.ESP, ProtocolId.AH):
        if _busy_with(sa, ike_rekey.IkeRekeyTask):
            return [NotifyPayload(NotifyType.TEMPORARY_FAILURE)]
        return child_rekey.handle_request(sa, payloads, rekey, now)
    if _rekeys_ike(payloads):
        if _busy_with(sa, child_create.CreateChildTask):
            return [NotifyPayload(NotifyType.TEMPORARY_FAILURE)]
        return ike_rekey.handle_request(sa, payloads, now)
    if _busy_with(sa, ike_rekey.IkeRekeyTask):
        return [NotifyPayload(NotifyType.TEMPORARY_FAILURE)]
    response, _ = child_create.respond_child(sa, payloads, now)
    return response
