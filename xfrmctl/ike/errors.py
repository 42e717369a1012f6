"""Protocol errors, split like h11: who is at fault decides what the engine does next.

`RemoteProtocolError` means the peer sent something wrong: the engine answers (when a notify
is given and the message was a request) and drops only the offending message or SA.
`LocalProtocolError` means our own configuration or API use is wrong: the host must fix it.
"""

from __future__ import annotations

from xfrmctl.ike.iana import NotifyType


class ProtocolError(Exception):
    """Base of every error the codec and the engine raise on their own."""


class LocalProtocolError(ProtocolError):
    """Our side is at fault: bad configuration, unknown connection name, API misuse."""


class RemoteProtocolError(ProtocolError):
    """The peer is at fault. `notify` is the error notify to answer a request with, if any."""

    def __init__(
        self,
        message: str,
        notify: NotifyType | None = NotifyType.INVALID_SYNTAX,
        notify_data: bytes = b"",
    ) -> None:
        super().__init__(message)
        self.notify = notify
        self.notify_data = notify_data


class MalformedMessage(RemoteProtocolError):
    """The bytes do not parse as IKEv2: a length, count or field is out of bounds."""


class UnsupportedCriticalPayload(RemoteProtocolError):
    """A payload we do not know had its critical bit set (RFC 7296 §2.5)."""

    def __init__(self, payload_type: int) -> None:
        super().__init__(
            f"unsupported critical payload type {payload_type}",
            NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD,
            bytes([payload_type]),
        )
        self.payload_type = payload_type
