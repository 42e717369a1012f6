"""Messages for IKE SAs we do not have (RFC 7296 §2.21.4, §1.5).

A request for an unknown IKE SA gets an unprotected INFORMATIONAL response carrying
INVALID_IKE_SPI, so a peer whose SA we lost (we restarted) learns it at once instead of
retransmitting for minutes. Responses are never answered, and the answers are rate-limited
per source address (and in total) since the source is not authenticated.

Receiving INVALID_IKE_SPI is unauthenticated too: anyone on the path can forge it. So it never
deletes anything by itself; it only starts a liveness check (an empty INFORMATIONAL) on the
IKE SA it names, at most once per `dpd_hint_interval`. If the peer really lost the SA, that
check goes unanswered and the usual retransmission give-up declares the peer dead; if the
notify was forged, the peer answers and nothing changes.
"""

from __future__ import annotations

from xfrmctl.ike.exchanges import IkeState
from xfrmctl.ike.iana import ExchangeType, NotifyType
from xfrmctl.ike.liveness import DpdTask
from xfrmctl.ike.message import Message
from xfrmctl.ike.payloads import NotifyPayload, SkfPayload, SkPayload
from xfrmctl.ike.sa import Address, Host, IkeSa


def is_unprotected_invalid_spi(msg: Message) -> bool:
    """A response without SK whose payloads include an INVALID_IKE_SPI notify."""
    return (
        msg.is_response
        and any(
            isinstance(p, NotifyPayload) and p.notify_type == NotifyType.INVALID_IKE_SPI
            for p in msg.payloads
        )
        and not any(isinstance(p, SkPayload | SkfPayload) for p in msg.payloads)
    )


def answer_unknown_spi(ep: Host, msg: Message, local: Address, remote: Address, now: float) -> None:
    """Tell the sender of a request that we have no IKE SA for it, within the rate limit."""
    if msg.is_response or msg.exchange == ExchangeType.IKE_SA_INIT:
        ep.count("unknown_spi_ignored")
        return
    if not ep.invalid_spi_limiter.allow(remote[0], now):
        ep.count("invalid_ike_spi_rate_limited")
        return
    payloads = (NotifyPayload(NotifyType.INVALID_IKE_SPI),)
    # Same SPIs and message ID (§2.21.4); the I flag says we are the other party.
    reply = Message(
        msg.spi_i,
        msg.spi_r,
        ExchangeType.INFORMATIONAL,
        msg.message_id,
        True,
        not msg.from_initiator,
        payloads,
    )
    ep.trace_message("out", reply, payloads, local, remote)
    ep.send([reply.encode()], local, remote)
    ep.count("invalid_ike_spi_sent")


def on_invalid_spi(sa: IkeSa, now: float) -> None:
    """The peer may have lost this IKE SA: check liveness soon, never tear down on this alone."""
    sa.ep.count("invalid_ike_spi_received")
    if sa.state != IkeState.ESTABLISHED:
        return
    last = sa.invalid_spi_hint_at
    if last is not None and now - last < sa.ep.config.dpd_hint_interval:
        return
    sa.invalid_spi_hint_at = now
    if sa.outstanding is not None or sa.tasks:
        return  # a request is already in flight: its retransmissions are the liveness check
    timeout = sa.spec.dpd_timeout if sa.spec and sa.spec.dpd_timeout > 0 else None
    sa.queue(DpdTask(timeout), now)
