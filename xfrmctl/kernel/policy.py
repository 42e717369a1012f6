"""Policies (SPD entries): the requests that add, update, delete, read and flush them (bodies
packed by xfrmctl.kernel.wire), and policies decoded from what the kernel sends."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST

from xfrmctl.kernel import wire
from xfrmctl.kernel.errors import ErrorContext
from xfrmctl.kernel.fields import (
    DecodeError,
    get_lifetime,
    get_mark,
    get_selector,
    is_zero,
    unpack_addr,
)
from xfrmctl.kernel.marshal import decode_replies
from xfrmctl.kernel.messages import POLICY_DIR_AT, Msg, message_type, unpack_templates
from xfrmctl.kernel.socket import Connection, Request
from xfrmctl.kernel.types import (
    Action,
    Dir,
    Mode,
    Policy,
    PolicyId,
    Proto,
    Template,
)

CREATE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
ACKED = NLM_F_REQUEST | NLM_F_ACK


def decode_templates(raw: bytes) -> tuple[Template, ...]:
    out = []
    for row in unpack_templates(raw):
        endpoints = not (is_zero(row["daddr"]) and is_zero(row["saddr"]))
        out.append(
            Template(
                proto=Proto(row["proto"]),
                mode=Mode(row["mode"]),
                reqid=row["reqid"],
                src=unpack_addr(row["saddr"], row["family"]) if endpoints else None,
                dst=unpack_addr(row["daddr"], row["family"]) if endpoints else None,
                spi=socket.ntohl(row["spi_be"]),
                optional=bool(row["optional"]),
                share=row["share"],
                aalgos=row["aalgos"],
                ealgos=row["ealgos"],
                calgos=row["calgos"],
            )
        )
    return tuple(out)


def decode_policy_info(info: Any, nlas: Any, prefix: str = "") -> Policy:
    """A policy from userpolicy_info fields (possibly prefixed, as in ACQUIRE) and NLAs."""
    try:
        raw_tmpl = nlas.get_attr("XFRMA_TMPL")
        return Policy(
            selector=get_selector(info, prefix=prefix + "sel_"),
            dir=Dir(info[prefix + "dir"]),
            templates=decode_templates(raw_tmpl) if raw_tmpl else (),
            action=Action(info[prefix + "action"]),
            priority=info[prefix + "priority"],
            mark=get_mark(nlas),
            if_id=nlas.get_attr("XFRMA_IF_ID") or 0,
            lifetime=get_lifetime(info, prefix),
            flags=info[prefix + "pflags"],
            index=info[prefix + "index"],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DecodeError(f"cannot decode a policy from the kernel: {exc}") from exc


def decode_policy(msg: Any) -> Policy:
    return decode_policy_info(msg, msg)


def decode_policy_attr(msg: Any) -> Policy:
    """The policy inside a DELPOLICY notification (xfrm_userpolicy_id + XFRMA_POLICY)."""
    info = msg.get_attr("XFRMA_POLICY")
    if info is None:
        raise DecodeError("DELPOLICY notification without XFRMA_POLICY")
    return decode_policy_info(info, msg)


def add_request(policy: Policy) -> Request:
    return _policy_request(Msg.NEWPOLICY, policy, CREATE)


def update_request(policy: Policy) -> Request:
    """Add or replace (UPDPOLICY creates the policy when it does not exist)."""
    return _policy_request(Msg.UPDPOLICY, policy, ACKED)


def _policy_request(msg_type: int, policy: Policy, flags: int) -> Request:
    body = wire.policy_body(policy)
    return Request(msg_type, body, flags, source=policy, context=ErrorContext)


def delete_request(pid: PolicyId) -> Request:
    return _policy_id_request(Msg.DELPOLICY, pid, ACKED)


def get_request(pid: PolicyId) -> Request:
    return _policy_id_request(Msg.GETPOLICY, pid, NLM_F_REQUEST)


def _policy_id_request(msg_type: int, pid: PolicyId, flags: int) -> Request:
    body = wire.policy_id_body(pid)
    return Request(msg_type, body, flags, source=pid, context=ErrorContext)


async def add_policy(conn: Connection, policy: Policy) -> None:
    await conn.request(add_request(policy))


async def update_policy(conn: Connection, policy: Policy) -> None:
    await conn.request(update_request(policy))


async def delete_policy(conn: Connection, pid: PolicyId) -> None:
    await conn.request(delete_request(pid))


async def get_policy(conn: Connection, pid: PolicyId) -> Policy:
    replies = await conn.request(get_request(pid))
    if not replies:
        raise DecodeError(f"the kernel answered GETPOLICY for {pid} with nothing")
    return decode_policy(replies[0])


async def dump_policies(conn: Connection) -> AsyncIterator[Policy]:
    async for raw in dump_policy_messages(conn):
        yield decode_policy_message(raw)


async def dump_policy_messages(conn: Connection) -> AsyncIterator[bytes]:
    """The SPD's NEWPOLICY messages, undecoded (see `messages.policy_print`)."""
    body = wire.POLICY_DUMP_BODY
    async for messages in conn.dump_raw(Msg.GETPOLICY, body, ErrorContext("policy dump")):
        for raw in messages:
            # Per-socket policies (dir >= 3: XFRM_POLICY_MAX + dir) are not SPD entries.
            if message_type(raw) == Msg.NEWPOLICY and raw[POLICY_DIR_AT] < 3:
                yield raw


def decode_policy_message(raw: bytes) -> Policy:
    (msg,) = decode_replies([raw])
    return decode_policy(msg)


def request_message(policy: Policy) -> bytes:
    """The NEWPOLICY message that installs `policy`, framed as the kernel would echo it."""
    body = wire.policy_body(policy)
    return wire.NLMSG_HDR.pack(16 + len(body), Msg.NEWPOLICY, 0, 0, 0) + body


async def flush_policies(conn: Connection) -> None:
    body = wire.FLUSH_POLICIES_BODY
    await conn.request(Request(Msg.FLUSHPOLICY, body, ACKED, ErrorContext("policy flush")))
