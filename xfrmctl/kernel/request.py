"""One netlink request in a batch and, after the batch, its outcome.

A request is its type, flags and body: the bytes after nlmsghdr, from xfrmctl.kernel.wire, which
is all that is sent. Thousands are built per batch, so a request allocates nothing beyond itself
and its body: the error context, the decoded replies and the request shown as a pyroute2
message are made only when read (each object that lives through a batch also costs Python's
garbage collector a visit).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST

from xfrmctl.kernel.errors import ErrorContext, XfrmError
from xfrmctl.kernel.marshal import decode_replies
from xfrmctl.kernel.messages import Msg, xfrm_msg
from xfrmctl.kernel.wire import NLMSG_HDR


class Request:
    """`body` is sent as is; `ctx` (what errors name) is `context(source)`, or `ctx` when
    given, made on first read."""

    __slots__ = (
        "_context",
        "_ctx",
        "_msg",
        "_raw",
        "_replies",
        "_sent",
        "_source",
        "body",
        "error",
        "flags",
        "msg_type",
    )

    def __init__(
        self,
        msg_type: int,
        body: bytes,
        flags: int = NLM_F_REQUEST | NLM_F_ACK,
        ctx: ErrorContext | None = None,
        *,
        source: Any = None,
        context: Callable[[Any], ErrorContext] | None = None,
    ) -> None:
        self.msg_type = msg_type
        self.flags = flags
        self.body = body
        self.error: XfrmError | None = None
        self._msg: xfrm_msg | None = None
        self._ctx = ctx
        self._source = source
        self._context = context
        self._replies: list[Any] | None = None
        self._raw: list[bytes] | None = None  # replies as received
        self._sent = False

    @property
    def msg(self) -> xfrm_msg:
        """The request as pyroute2 decodes its bytes (for tests and debugging; never sent)."""
        if self._msg is None:
            header = NLMSG_HDR.pack(16 + len(self.body), self.msg_type, self.flags, 0, 0)
            decoded: list[xfrm_msg] = decode_replies([header + self.body])
            self._msg = decoded[0]
        return self._msg

    @property
    def ctx(self) -> ErrorContext:
        """What the request is about, for error messages."""
        if self._ctx is None:
            self._ctx = ErrorContext() if self._context is None else self._context(self._source)
        return self._ctx

    @ctx.setter
    def ctx(self, value: ErrorContext) -> None:
        self._ctx = value

    @property
    def replies(self) -> list[Any] | None:
        """The kernel's answers (None before the request was sent), decoded on first read."""
        if self._raw is not None:
            replies = self._replies if self._replies is not None else []
            replies.extend(decode_replies(self._raw))
            self._raw, self._replies = None, replies
        elif self._replies is None and self._sent:
            self._replies = []
        return self._replies

    @replies.setter
    def replies(self, value: list[Any] | None) -> None:
        self._replies, self._raw, self._sent = value, None, value is not None

    def sending(self) -> None:
        """Forget the outcome of an earlier send."""
        self._replies = self._raw = self.error = None
        self._sent = True

    def add_reply(self, raw: bytes) -> None:
        if self._raw is None:
            self._raw = [raw]
        else:
            self._raw.append(raw)

    @property
    def ok(self) -> bool:
        return self.error is None

    def __repr__(self) -> str:
        outcome = "pending" if not self._sent else "ok" if self.ok else f"error {self.error}"
        return f"Request({_type_name(self.msg_type)} {self.ctx.what or ''}: {outcome})"


def _type_name(msg_type: int) -> str:
    try:
        return Msg(msg_type).name
    except ValueError:
        return str(msg_type)
