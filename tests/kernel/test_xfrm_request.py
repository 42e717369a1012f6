"""Requests: what they send, and what they make only when read (message, context, replies)."""

from __future__ import annotations

import errno
import struct
from ipaddress import ip_address

import pytest

from xfrmctl.kernel import wire
from xfrmctl.kernel.errors import AlgorithmUnavailableError, KernelError
from xfrmctl.kernel.messages import Msg, xfrm_usersa_info
from xfrmctl.kernel.policy import delete_request as policy_delete_request
from xfrmctl.kernel.sa import add_request, allocspi_request, decode_sa, delete_request
from xfrmctl.kernel.socket import Request
from xfrmctl.kernel.types import SA, Aead, Dir, Mark, PolicyId, SaId, Selector, SpiRange, SpiRequest

A, B = ip_address("192.0.2.1"), ip_address("192.0.2.2")
SA_ = SA(A, B, 0x1234, aead=Aead("rfc4106(gcm(aes))", bytes(36)), mark=Mark(3))


def test_sa_request_sends_wire_bytes_and_decodes_the_message_only_when_read() -> None:
    req = add_request(SA_)
    assert req.body == wire.sa_body(SA_)
    assert req._msg is None and req._ctx is None  # nothing made yet
    assert isinstance(req.msg, xfrm_usersa_info) and req.msg["id_spi"] == 0x1234
    assert req.msg["header"]["type"] == Msg.NEWSA and decode_sa(req.msg) == SA_
    assert req.ctx.what == SA_.id and req.ctx.module == "esp4"
    assert req.ctx.algorithms == {"aead": "rfc4106(gcm(aes))"}
    assert "pending" in repr(req)


def test_error_wording_comes_from_the_lazy_context() -> None:
    req = add_request(SA_)
    ack = "Requested AEAD algorithm not found"
    err = KernelError.from_netlink(req.msg_type, errno.ENOSYS, ack, req.ctx)
    assert isinstance(err, AlgorithmUnavailableError)
    assert str(err) == (
        f"{SA_.id}: algorithm rfc4106(gcm(aes)) not available in this kernel (kernel: {ack})"
    )
    pid = PolicyId(Selector.of("10.0.0.0/8", "10.1.0.0/16"), Dir.FWD)
    req = policy_delete_request(pid)
    err = KernelError.from_netlink(req.msg_type, errno.ENOENT, None, req.ctx)
    assert str(err) == "no such policy: policy fwd 10.0.0.0/8 -> 10.1.0.0/16"
    spi = allocspi_request(SpiRequest(A, B, spis=SpiRange(0x100, 0x1FF)))
    err = KernelError.from_netlink(spi.msg_type, errno.ENOENT, None, spi.ctx)
    assert "SPI allocation esp src 192.0.2.1 dst 192.0.2.2 range 0x100-0x1ff" in str(err)


def test_replies_are_kept_raw_and_decoded_on_first_read() -> None:
    req = delete_request(SaId(B, 0x1234), Mark(3))
    assert req.replies is None  # not sent
    req.sending()
    assert req.replies == [] and req.ok
    req.sending()
    reply = add_request(SA_).body
    assert reply is not None
    req.add_reply(struct.pack("=IHHII", 16 + len(reply), Msg.NEWSA, 0, 7, 0) + reply)
    assert req._raw is not None and len(req._raw) == 1
    (decoded,) = req.replies or []
    assert decoded["id_spi"] == 0x1234 and decoded.get_attr("XFRMA_MARK")["v"] == 3
    assert req._raw is None and req.replies == [decoded]


def test_dumps_are_refused_in_a_batch() -> None:
    import asyncio

    from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST

    from xfrmctl.kernel.socket import Connection

    async def batch_a_dump() -> None:
        conn = Connection()
        try:
            await conn.batch([Request(Msg.GETSA, b"", NLM_F_REQUEST | NLM_F_DUMP)])
        finally:
            conn.close()

    with pytest.raises(ValueError, match="dump requests cannot be batched"):
        asyncio.run(batch_a_dump())


def test_a_dump_ends_at_its_done_or_error_and_skips_other_answers() -> None:
    from xfrmctl.kernel.socket import Connection

    def message(mtype: int, seq: int, payload: bytes) -> bytes:
        return struct.pack("=IHHII", 16 + len(payload), mtype, 2, seq, 0) + payload

    sa = wire.sa_body(SA_)
    part = message(Msg.NEWSA, 7, sa) + message(Msg.NEWSA, 8, sa)  # 8: not this dump's
    assert Connection._dump_part(part, 7) == ([message(Msg.NEWSA, 7, sa)], None, None)
    done = message(Msg.NEWSA, 7, sa) + message(3, 7, struct.pack("=i", 0))  # NLMSG_DONE
    assert Connection._dump_part(done, 7) == ([message(Msg.NEWSA, 7, sa)], 0, None)
    ack = struct.pack("=HH", 4 + 8, 1) + b"no good\0"  # NLMSGERR_ATTR_MSG
    error = message(2, 7, struct.pack("=i", -errno.EPERM) + bytes(16) + ack)
    assert Connection._dump_part(error, 7) == ([], errno.EPERM, "no good")
    lost = message(2, 0, struct.pack("=i", -errno.ENOBUFS) + bytes(16))  # pyroute2's own
    assert Connection._dump_part(lost, 7) == ([], errno.ENOBUFS, None)
