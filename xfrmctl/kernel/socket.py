"""The NETLINK_XFRM socket: pyroute2's asyncio core, XFRM decoding, batches and dumps.

Requests are sent in batches (many netlink messages in one sendmsg), then each reply or error
is collected by sequence number, so N objects cost one round-trip instead of N. The kernel keeps
processing a batch after an error, so each request gets its own result, and callers decide what
to roll back. Everything sent is bytes from xfrmctl.kernel.wire; pyroute2 opens the socket and
decodes what comes back. A Connection serves one batch or dump at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import struct
from collections.abc import AsyncIterator, Sequence
from typing import Any

from pyroute2.netlink import (
    NETLINK_XFRM,
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
)
from pyroute2.netlink.nlsocket import AsyncNetlinkSocket

from xfrmctl.kernel.errors import ErrorContext, KernelError, XfrmError
from xfrmctl.kernel.marshal import ExtAckError, XfrmMarshal, ext_ack_message
from xfrmctl.kernel.request import Request
from xfrmctl.kernel.wire import NLMSG_HDR

__all__ = ["Connection", "ExtAckError", "Request", "XfrmMarshal", "XfrmSocket"]

SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32

# Requests go without NLM_F_ACK, so only a failure or a reply (ALLOCSPI, GETSA) takes space in
# the receive buffer: at most about 2 KiB of skb truesize each. A batch stays inside the buffer.
ANSWER_TRUESIZE = 2048
# The kernel grows its SA and policy hash tables in a work item, one doubling per run, and that
# cannot run in the middle of a sendmsg: a batch into empty tables starts small and doubles.
FIRST_BATCH = 128
MIN_BATCH = 32
MAX_BATCH = 4096
MAX_DATAGRAM = 1 << 20
NLMSG_NOOP = 1
_NLMSG_START = struct.Struct("=IHHI")
_ERRNO = struct.Struct("=i")
SEQ_BASE = 0x40000000
REPLY_TIMEOUT = 30.0
RECV_BYTES = 65536
BUFFER_BYTES = 8 * 1024 * 1024


class XfrmSocket(AsyncNetlinkSocket):  # type: ignore[misc]
    """A NETLINK_XFRM socket; `netns` names a network namespace (None: the current one)."""

    marshal_class = XfrmMarshal

    def __init__(self, netns: str | None = None, groups: int = 0) -> None:
        # flags=0: a mistyped namespace name is an error, not a new empty namespace.
        super().__init__(family=NETLINK_XFRM, ext_ack=True, netns=netns, groups=groups, flags=0)

    def setup_socket(self) -> socket.socket:
        sock: socket.socket = super().setup_socket()
        sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
        for opt in (SO_RCVBUFFORCE, SO_SNDBUFFORCE):
            # Without CAP_NET_ADMIN the kernel refuses; the plain SO_RCVBUF then applies.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, opt, BUFFER_BYTES)
        return sock


class Connection:
    """Request/response and batching over one XfrmSocket."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self.sock = XfrmSocket(netns=netns)
        self._seq = SEQ_BASE
        self._max_batch = 0  # requests per sendmsg, from the receive buffer once it is open
        self._max_datagram = MAX_DATAGRAM

    async def open(self) -> None:
        try:
            await self.sock.setup_endpoint()
            await self.sock.bind()
        except OSError as exc:
            where = f"network namespace {self.netns!r}" if self.netns else "this namespace"
            raise XfrmError(
                f"cannot open an XFRM netlink socket in {where}: {exc.strerror or exc}",
                code=exc.errno or errno.EIO,
            ) from exc

    def close(self) -> None:
        self.sock.close()

    @property
    def portid(self) -> int:
        """The `nlmsg_pid` our requests carry, and with them the kernel's notifications of
        the changes they make (`kernel.echo_filter`); the socket's bound port once open."""
        return int(self.sock.epid or os.getpid())

    async def batch(self, requests: Sequence[Request]) -> Sequence[Request]:
        """Send requests in as few sendmsg calls as possible; fill in each one's result."""
        if any(req.flags & NLM_F_DUMP == NLM_F_DUMP for req in requests):
            # The kernel sends a dump over several reads, after the barrier that ends a batch.
            raise ValueError("dump requests cannot be batched: use Connection.dump_raw()")
        await self.sock.setup_endpoint()
        if self._max_batch == 0:
            sock = self.sock.socket
            rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            self._max_batch = min(MAX_BATCH, max(MIN_BATCH, rcvbuf // ANSWER_TRUESIZE))
            sndbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
            self._max_datagram = min(MAX_DATAGRAM, sndbuf - 64)  # the kernel keeps 32 bytes
        bodies = [req.body for req in requests]
        start, limit = 0, min(FIRST_BATCH, self._max_batch)
        while start < len(requests):
            end, size = start + 1, 16 + len(bodies[start])
            while end < len(requests) and end - start < limit:
                size += 16 + len(bodies[end])
                if size > self._max_datagram:
                    break
                end += 1
            await self._round_trip(requests[start:end], bodies[start:end])
            start, limit = end, min(2 * limit, self._max_batch)
        return requests

    def _next_seq(self) -> int:
        # Outside pyroute2's own range (0xFF-0xFFFF): replies to these land in queue 0.
        self._seq = self._seq + 1 if self._seq < 0x7FFFFFFF else SEQ_BASE
        return self._seq

    async def _round_trip(self, requests: Sequence[Request], bodies: Sequence[bytes]) -> None:
        """Send requests in one sendmsg, without NLM_F_ACK, then an acked NLMSG_NOOP.

        The kernel answers each request in order, and without NLM_F_ACK only with its reply
        or its error; the NOOP's ACK comes last, so when it arrives every request without an
        error has succeeded. One answer to read per failure, not one per request.
        """
        pid = self.portid
        pending: dict[int, Request] = {}
        parts: list[bytes] = []
        header = NLMSG_HDR.pack
        for req, body in zip(requests, bodies, strict=True):
            seq = self._next_seq()
            parts.append(header(16 + len(body), req.msg_type, req.flags & ~NLM_F_ACK, seq, pid))
            parts.append(body)
            req.sending()
            pending[seq] = req
        barrier = self._next_seq()
        parts.append(header(16, NLMSG_NOOP, NLM_F_REQUEST | NLM_F_ACK, barrier, pid))
        try:
            self.sock.send(b"".join(parts))
        except OSError as exc:
            code = exc.errno or errno.EIO
            raise XfrmError(f"netlink send failed: {exc.strerror or exc}", code=code) from exc
        while True:
            try:
                datagram = await self._receive(len(pending))
            except OSError as exc:  # ENOBUFS: the kernel dropped answers
                self._fail_all(pending, exc.errno or errno.EIO)
                return
            if self._dispatch(datagram, pending, barrier):
                return

    async def _receive(self, waiting: int) -> bytes:
        """The next datagram of answers to this connection's requests.

        The kernel handles a whole batch inside send(), so the answers are already queued on the
        socket: read them directly instead of one event-loop turn per datagram."""
        queue = self.sock.msg_queue
        try:
            datagram: bytes = queue.root.get_nowait()  # what the asyncio reader already took
            queue.root.task_done()
        except asyncio.QueueEmpty:
            try:
                datagram = self.sock.socket.recv(RECV_BYTES, socket.MSG_DONTWAIT)
            except BlockingIOError:
                datagram = await self._wait(queue, waiting)
        if not datagram:
            raise XfrmError("the XFRM netlink socket was closed", code=errno.EBADF)
        return datagram

    @staticmethod
    def _fail_all(pending: dict[int, Request], code: int) -> None:
        """Answers were lost: which requests failed is unknown, so each reports the loss."""
        for lost in pending.values():
            lost.error = KernelError.from_netlink(lost.msg_type, code, None, lost.ctx)
        pending.clear()

    @staticmethod
    async def _wait(queue: Any, waiting: int) -> bytes:
        try:
            data: bytes = await asyncio.wait_for(queue.get(0), REPLY_TIMEOUT)
        except TimeoutError:
            raise XfrmError(
                f"the kernel did not answer {waiting} XFRM requests within {REPLY_TIMEOUT} s",
                code=errno.ETIMEDOUT,
            ) from None
        return data

    def _dispatch(self, data: bytes, pending: dict[int, Request], barrier: int) -> bool:
        """File each message of a datagram with its request; True once the barrier is acked."""
        offset = 0
        while offset + 16 <= len(data):
            length, mtype, _flags, seq = _NLMSG_START.unpack_from(data, offset)
            if length < 16:
                break
            if mtype == NLMSG_ERROR:
                code = _ERRNO.unpack_from(data, offset + 16)[0]
                if seq == barrier:
                    if code:  # cannot happen for a NOOP, but then nothing is known
                        self._fail_all(pending, -code)
                    pending.clear()
                    return True
                if seq == 0:
                    # pyroute2 queues a fake error here when the socket fails (e.g. ENOBUFS).
                    self._fail_all(pending, abs(code))
                    return True
                req = pending.pop(seq, None)
                if req is not None and code:
                    text = ext_ack_message(data, offset, length)
                    req.error = KernelError.from_netlink(req.msg_type, -code, text, req.ctx)
            elif mtype != NLMSG_DONE and (req := pending.get(seq)) is not None:
                req.add_reply(data[offset : offset + length])
            offset += (length + 3) & ~3
        return False

    async def request(self, req: Request) -> list[Any]:
        """One request; raises its error."""
        await self.batch([req])
        if req.error is not None:
            raise req.error
        return req.replies or []

    async def dump_raw(
        self, msg_type: int, body: bytes, ctx: ErrorContext | None = None
    ) -> AsyncIterator[list[bytes]]:
        """Every message of a dump (GETSA, GETPOLICY), a datagram's worth at a time, undecoded
        (each one netlink message from its header: `marshal.decode_replies` decodes them, a
        reader that needs a few fixed fields takes them in place); the kernel's error raised."""
        await self.sock.setup_endpoint()
        seq = self._next_seq()
        header = NLMSG_HDR.pack(
            16 + len(body), msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, self.sock.epid or os.getpid()
        )
        code: int | None = None
        text: str | None = None
        try:
            self.sock.send(header + body)
        except OSError as exc:
            code = exc.errno or errno.EIO
        while code is None:
            try:
                datagram = await self._receive(1)
            except OSError as exc:  # ENOBUFS: the kernel dropped part of the dump
                code = exc.errno or errno.EIO
                break
            messages, code, text = self._dump_part(datagram, seq)
            if messages:
                yield messages
        if code:
            raise KernelError.from_netlink(msg_type, code, text, ctx)

    @staticmethod
    def _dump_part(data: bytes, seq: int) -> tuple[list[bytes], int | None, str | None]:
        """The dump's messages in one datagram, and once it ends (NLMSG_DONE or an error) its
        errno (0: complete) and the kernel's extended-ack text."""
        messages: list[bytes] = []
        offset = 0
        while offset + 16 <= len(data):
            length, mtype, _flags, msg_seq = _NLMSG_START.unpack_from(data, offset)
            if length < 16:
                break
            if msg_seq == 0 and mtype == NLMSG_ERROR:
                # pyroute2 queues a fake error here when the socket fails (e.g. ENOBUFS).
                return messages, abs(_ERRNO.unpack_from(data, offset + 16)[0]) or errno.EIO, None
            if msg_seq == seq:
                if mtype in (NLMSG_DONE, NLMSG_ERROR):
                    code = -_ERRNO.unpack_from(data, offset + 16)[0] if length >= 20 else 0
                    text = ext_ack_message(data, offset, length) if code else None
                    return messages, code, text
                messages.append(data[offset : offset + length])
            offset += (length + 3) & ~3
        return messages, None, None
