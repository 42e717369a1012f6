"""Child SA transactions against an in-memory kernel that decodes the real request bytes."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
from collections.abc import AsyncIterator, Sequence
from ipaddress import ip_address
from typing import Any

import pytest

from xfrmctl.kernel import transaction as tx
from xfrmctl.kernel import wire
from xfrmctl.kernel.errors import ErrorContext, KernelError
from xfrmctl.kernel.marshal import decode_replies
from xfrmctl.kernel.messages import Msg, xfrm_msg
from xfrmctl.kernel.policy import decode_policy
from xfrmctl.kernel.sa import decode_sa
from xfrmctl.kernel.socket import Request
from xfrmctl.kernel.types import (
    SA,
    Aead,
    Comp,
    Dir,
    Mark,
    Mode,
    Policy,
    PolicyId,
    Proto,
    SaId,
    Selector,
    Template,
)

A, B = ip_address("192.0.2.1"), ip_address("192.0.2.2")
OWN = tx.Ownership()


def _parse(msg: xfrm_msg, mtype: int) -> Any:
    """A request as the kernel reads it: `Request.msg` is already decoded from its bytes."""
    assert msg["header"]["type"] == mtype
    return msg


def _reply(mtype: int, body: bytes) -> Any:
    """A kernel message with this body, decoded (NEWSA/NEWPOLICY replies share the requests'
    layout)."""
    (parsed,) = decode_replies([wire.NLMSG_HDR.pack(16 + len(body), mtype, 0, 0, 0) + body])
    return parsed


def _sa_id(parsed: Any) -> SaId:
    from xfrmctl.kernel.fields import get_mark, unpack_addr

    return SaId(
        unpack_addr(parsed["daddr"], parsed["family"]),
        parsed["spi"],
        Proto(parsed["proto"]),
        get_mark(parsed),  # the kernel finds a marked SA only by its mark too
    )


def _policy_id(parsed: Any) -> PolicyId:
    from xfrmctl.kernel.fields import get_mark, get_selector

    return PolicyId(
        get_selector(parsed),
        Dir(parsed["dir"]),
        get_mark(parsed),
        parsed.get_attr("XFRMA_IF_ID") or 0,
    )


class FakeKernel:
    """Applies batches like the kernel: in order, each request on its own, errors per request."""

    def __init__(self) -> None:
        self.sas: dict[SaId, SA] = {}
        self.larval: set[SaId] = set()
        self.policies: dict[PolicyId, Policy] = {}
        self.batches: list[list[tuple[str, str]]] = []
        self.reject: set[object] = set()  # SaId or PolicyId to refuse with EINVAL

    def _fail(self, req: Request, code: int) -> None:
        req.error = KernelError.from_netlink(req.msg_type, code, None, req.ctx)

    async def request(self, req: Request) -> list[Any]:
        """As `Connection.request`: one request through `batch`, its error raised."""
        await self.batch([req])
        if req.error is not None:
            raise req.error
        return req.replies or []

    async def batch(self, requests: Sequence[Request]) -> Sequence[Request]:
        log = []
        for req in requests:
            parsed = _parse(req.msg, req.msg_type)
            req.replies, req.error = [], None
            t = Msg(req.msg_type)
            if t in (Msg.NEWSA, Msg.UPDSA):
                sa = decode_sa(parsed)
                log.append((t.name, f"{sa.spi:#x}"))
                if sa.id in self.reject:
                    self._fail(req, errno.EINVAL)
                elif t == Msg.NEWSA and sa.id in self.sas:
                    self._fail(req, errno.EEXIST)
                elif t == Msg.UPDSA and sa.id not in self.larval:
                    self._fail(req, errno.ESRCH)
                else:
                    self.larval.discard(sa.id)
                    self.sas[sa.id] = sa
            elif t == Msg.DELSA:
                sid = _sa_id(parsed)
                log.append((t.name, f"{sid.spi:#x}"))
                if self.sas.pop(sid, None) is None:
                    self._fail(req, errno.ESRCH)
            elif t in (Msg.NEWPOLICY, Msg.UPDPOLICY):
                pol = decode_policy(parsed)
                log.append((t.name, pol.dir.name))
                if pol.id in self.reject:
                    self._fail(req, errno.EINVAL)
                elif t == Msg.NEWPOLICY and pol.id in self.policies:
                    self._fail(req, errno.EEXIST)
                else:
                    self.policies[pol.id] = pol
            elif t in (Msg.DELPOLICY, Msg.GETPOLICY):
                pid = _policy_id(parsed)
                log.append((t.name, pid.dir.name))
                found = self.policies.get(pid)
                if found is None:
                    self._fail(req, errno.ENOENT)
                elif t == Msg.DELPOLICY:
                    del self.policies[pid]
                else:
                    req.replies = [_reply(Msg.NEWPOLICY, wire.policy_body(found))]
        self.batches.append(log)
        return requests

    async def dump_raw(
        self, msg_type: int, body: bytes, ctx: ErrorContext | None = None
    ) -> AsyncIterator[list[bytes]]:
        if msg_type == Msg.GETSA:
            mtype, bodies = Msg.NEWSA, [wire.sa_body(sa) for sa in self.sas.values()]
        else:
            mtype, bodies = Msg.NEWPOLICY, [wire.policy_body(p) for p in self.policies.values()]
        # two messages a datagram, as the kernel packs several into each
        raw = [wire.NLMSG_HDR.pack(16 + len(b), mtype, 0, 0, 0) + b for b in bodies]
        for i in range(0, len(raw), 2):
            yield raw[i : i + 2]


def child(n: int = 1, reqid: int | None = None) -> tx.ChildSA:
    rid = OWN.reqid(n) if reqid is None else reqid
    key = bytes(36)
    inbound = SA(B, A, 0x1000 + n, mode=Mode.TUNNEL, reqid=rid, aead=Aead("rfc4106(gcm(aes))", key))
    outbound = SA(
        A, B, 0x2000 + n, mode=Mode.TUNNEL, reqid=rid, aead=Aead("rfc4106(gcm(aes))", key)
    )
    local, remote = (
        Selector.of(f"10.1.{n}.0/24", "10.2.0.0/16"),
        Selector.of("10.2.0.0/16", f"10.1.{n}.0/24"),
    )
    t_out = Template(Proto.ESP, Mode.TUNNEL, rid, A, B)
    t_in = Template(Proto.ESP, Mode.TUNNEL, rid, B, A)
    return tx.ChildSA(
        inbound,
        outbound,
        (
            Policy(local, Dir.OUT, (t_out,)),
            Policy(remote, Dir.IN, (t_in,)),
            Policy(remote, Dir.FWD, (t_in,)),
        ),
    )


def kernel_and_child() -> tuple[FakeKernel, tx.ChildSA]:
    """A Child SA whose inbound SPI the kernel allocated (a larval state), and that kernel."""
    k = FakeKernel()
    c = child()
    k.larval.add(c.inbound.id)
    return k, c


def trap_under(k: FakeKernel, c: tx.ChildSA) -> Policy:
    """A trap policy in the kernel where `c`'s inbound policy goes."""
    trap_in = Policy(c.policies[1].selector, Dir.IN, (Template(reqid=OWN.reqid(1)),), priority=7)
    k.policies[trap_in.id] = trap_in
    return trap_in


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_install_in_order_in_one_round_trip() -> None:
    k, c = kernel_and_child()
    run(tx.install_child(k, c))  # type: ignore[arg-type]
    assert k.batches == [
        [
            ("UPDSA", "0x1001"),
            ("NEWSA", "0x2001"),
            ("NEWPOLICY", "IN"),
            ("NEWPOLICY", "FWD"),
            ("NEWPOLICY", "OUT"),
        ],
    ]
    assert set(k.sas) == {c.inbound.id, c.outbound.id}
    assert set(k.policies.values()) == set(c.policies)


def test_failed_sa_takes_out_the_policies_that_went_in_after_it() -> None:
    k, c = kernel_and_child()
    k.reject.add(c.outbound.id)
    with pytest.raises(tx.TransactionError, match="invalid request") as info:
        run(tx.install_child(k, c))  # type: ignore[arg-type]
    assert info.value.rollback_errors == []
    assert k.sas == {} and k.policies == {}
    assert k.batches[1:] == [
        [("DELPOLICY", "OUT"), ("DELPOLICY", "FWD"), ("DELPOLICY", "IN"), ("DELSA", "0x1001")]
    ]


def test_failed_sa_puts_back_a_held_policy_it_replaced() -> None:
    k, c = kernel_and_child()
    k.reject.add(c.outbound.id)
    trap_in = trap_under(k, c)
    held = {trap_in.id: trap_in}
    with pytest.raises(tx.TransactionError):
        run(tx.install_child(k, c, known=held.get))  # type: ignore[arg-type]
    assert ("UPDPOLICY", "IN") in k.batches[0]
    assert k.policies == {trap_in.id: trap_in} and k.sas == {}


def test_a_policy_already_there_is_read_back_and_replaced() -> None:
    """NEWPOLICY for what the caller does not hold; where the kernel has one (here a trap
    someone else put in), its refusal makes a second round trip: the old one read back, the
    new one in its place."""
    k, c = kernel_and_child()
    trap_under(k, c)
    run(tx.install_child(k, c))  # type: ignore[arg-type]
    assert k.batches[1:] == [[("GETPOLICY", "IN"), ("UPDPOLICY", "IN")]]
    assert set(k.policies.values()) == set(c.policies)


def test_failed_policy_restores_previous_trap_and_removes_sas() -> None:
    k, c = kernel_and_child()
    trap_in = trap_under(k, c)
    out_policy = next(p for p in c.policies if p.dir == Dir.OUT)
    k.reject.add(out_policy.id)
    with pytest.raises(tx.TransactionError) as info:
        run(tx.install_child(k, c))  # type: ignore[arg-type]
    assert "policy out" in str(info.value)
    assert k.sas == {}
    assert k.policies == {trap_in.id: trap_in}  # the trap is back exactly as it was
    # The trap was never replaced: a failure other than "already there" rolls back at once.
    assert k.batches[1:] == [[("DELPOLICY", "FWD"), ("DELSA", "0x2001"), ("DELSA", "0x1001")]]


def test_a_replaced_policy_is_put_back_when_a_later_step_fails() -> None:
    k, c = kernel_and_child()
    trap_in = trap_under(k, c)
    out_policy = next(p for p in c.policies if p.dir == Dir.OUT)
    k.policies[out_policy.id] = out_policy  # taken too, and its replacement refused below
    original = k.batch

    async def refuse_replacing_out(requests: Any) -> Any:
        if len(k.batches) == 1:
            k.reject.add(out_policy.id)
        return await original(requests)

    k.batch = refuse_replacing_out  # type: ignore[method-assign]
    with pytest.raises(tx.TransactionError):
        run(tx.install_child(k, c))  # type: ignore[arg-type]
    assert k.batches[1] == [
        ("GETPOLICY", "IN"),
        ("GETPOLICY", "OUT"),
        ("UPDPOLICY", "IN"),
        ("UPDPOLICY", "OUT"),
    ]
    assert k.policies == {trap_in.id: trap_in, out_policy.id: out_policy}
    assert k.sas == {}


def test_known_policies_are_not_asked_for_and_are_what_a_rollback_restores() -> None:
    """A rekey's policies are the caller's own: it says what it holds, so they are replaced
    in place, never read back, and a failed install puts back the caller's version."""
    k, c = kernel_and_child()
    trap_in = trap_under(k, c)
    held = {trap_in.id: trap_in}
    out_policy = next(p for p in c.policies if p.dir == Dir.OUT)
    k.reject.add(out_policy.id)
    with pytest.raises(tx.TransactionError):
        run(tx.install_child(k, c, known=held.get))  # type: ignore[arg-type]
    assert not [pid for batch in k.batches for op, pid in batch if op == "GETPOLICY"]
    assert k.policies == {trap_in.id: trap_in}
    assert ("UPDPOLICY", "IN") in k.batches[1]


def test_without_replace_existing_policy_is_an_error() -> None:
    k, c = kernel_and_child()
    k.policies[c.policies[0].id] = c.policies[0]
    with pytest.raises(tx.TransactionError, match="policy already exists"):
        run(tx.install_child(k, c, replace_policies=False))  # type: ignore[arg-type]
    assert k.policies == {c.policies[0].id: c.policies[0]} and k.sas == {}


def test_remove_in_reverse_order_and_keep_policies_as_traps() -> None:
    k = FakeKernel()
    c1, c2 = child(1), child(2)
    k.larval |= {c1.inbound.id, c2.inbound.id}
    run(tx.install_children(k, [c1, c2]))  # type: ignore[arg-type]
    run(tx.remove_child(k, c1))  # type: ignore[arg-type]
    assert k.batches[-1] == [
        ("DELPOLICY", "OUT"),
        ("DELPOLICY", "FWD"),
        ("DELPOLICY", "IN"),
        ("DELSA", "0x2001"),
        ("DELSA", "0x1001"),
    ]
    run(tx.remove_child(k, c2, keep_policies=True))  # type: ignore[arg-type]
    assert k.sas == {} and set(k.policies.values()) == set(c2.policies)
    run(tx.remove_child(k, c2, keep_policies=True))  # type: ignore[arg-type]  # gone: no error


def test_cleanup_removes_only_our_objects() -> None:
    k = FakeKernel()
    ours, theirs = child(1), child(2, reqid=42)
    k.larval |= {ours.inbound.id, theirs.inbound.id}
    run(tx.install_children(k, [ours, theirs]))  # type: ignore[arg-type]
    report = run(tx.cleanup_stale(k))  # type: ignore[arg-type]
    assert set(report.sas) == {ours.inbound, ours.outbound}
    assert set(report.policies) == set(ours.policies)
    assert set(k.sas) == {theirs.inbound.id, theirs.outbound.id}
    assert set(k.policies.values()) == set(theirs.policies)


def test_ownership_range() -> None:
    assert OWN.owns_reqid(OWN.reqid(1)) and not OWN.owns_reqid(42)
    with pytest.raises(ValueError, match="reqid index"):
        OWN.reqid(0x10000)


def rekeyed(c: tx.ChildSA, bump: int = 0x100) -> tx.ChildSA:
    """The same traffic and reqid on new SPIs, as a Child SA rekey produces."""
    return dataclasses.replace(
        c,
        inbound=dataclasses.replace(c.inbound, spi=c.inbound.spi + bump),
        outbound=dataclasses.replace(c.outbound, spi=c.outbound.spi + bump),
        inbound_larval=False,
    )


def test_rekey_make_before_break_steps() -> None:
    k = FakeKernel()
    old = dataclasses.replace(child(), inbound_larval=False)
    new = rekeyed(old)
    run(tx.install_child(k, old))  # type: ignore[arg-type]
    run(tx.install_child(k, new, outbound=False))  # type: ignore[arg-type]
    # Only the new inbound SA went in; the old outbound SA still carries the traffic.
    assert k.batches[-2][:1] == [("NEWSA", "0x1101")]
    assert not any(op == "NEWSA" and spi == "0x2101" for op, spi in k.batches[-2])
    assert set(k.sas) == {old.inbound.id, old.outbound.id, new.inbound.id}
    assert set(k.policies.values()) == set(old.policies)
    run(tx.install_outbound(k, new))  # type: ignore[arg-type]
    assert k.batches[-1] == [("NEWSA", "0x2101")]
    run(tx.remove_child(k, old, keep_policies=True, keep_inbound=True))  # type: ignore[arg-type]
    assert k.batches[-1] == [("DELSA", "0x2001")]
    assert set(k.sas) == {old.inbound.id, new.inbound.id, new.outbound.id}
    run(tx.remove_inbound(k, old))  # type: ignore[arg-type]
    assert set(k.sas) == {new.inbound.id, new.outbound.id}
    run(tx.remove_inbound(k, old))  # type: ignore[arg-type]  # gone already: no error
    assert set(k.policies.values()) == set(old.policies), "the policies never left"


def test_outbound_install_failure_is_a_clear_error() -> None:
    k = FakeKernel()
    c = dataclasses.replace(child(), inbound_larval=False)
    run(tx.install_child(k, c, outbound=False))  # type: ignore[arg-type]
    k.sas[c.outbound.id] = c.outbound  # an SPI collision on the peer's side of the pair
    with pytest.raises(tx.TransactionError, match="outbound SA install failed") as info:
        run(tx.install_outbound(k, c))  # type: ignore[arg-type]
    assert "0x00002001" in str(info.value) and "exists" in str(info.value)


def test_remove_policies_outbound_first_and_gone_is_fine() -> None:
    k = FakeKernel()
    c = child()
    run(tx.install_policies(k, c.ordered_policies()))  # type: ignore[arg-type]
    run(tx.remove_policies(k, c.ordered_policies()))  # type: ignore[arg-type]
    assert k.batches[-1] == [("DELPOLICY", "OUT"), ("DELPOLICY", "FWD"), ("DELPOLICY", "IN")]
    assert k.policies == {}
    run(tx.remove_policies(k, c.ordered_policies()))  # type: ignore[arg-type]


def test_removal_error_other_than_gone_is_raised() -> None:
    k = FakeKernel()
    c = dataclasses.replace(child(), inbound_larval=False)
    run(tx.install_child(k, c))  # type: ignore[arg-type]

    async def broken(requests: Sequence[Request]) -> Sequence[Request]:
        for req in requests:
            k._fail(req, errno.EPERM)
        return requests

    k.batch = broken  # type: ignore[method-assign]
    with pytest.raises(tx.TransactionError, match="inbound SA removal incomplete"):
        run(tx.remove_inbound(k, c))  # type: ignore[arg-type]


def comp_child(n: int = 1, mark: Mark | None = None) -> tx.ChildSA:
    """A pair with IPComp: comp SAs (CPI as SPI, tunnel mode) under ESP in transport mode,
    and templates comp then esp; marks on the outbound SA, as swanctl's mark_out."""
    c = child(n)
    rid = c.inbound.reqid
    comp = Comp("deflate")
    esp_in = dataclasses.replace(c.inbound, mode=Mode.TRANSPORT)
    esp_out = dataclasses.replace(c.outbound, mode=Mode.TRANSPORT, mark=mark)
    comp_in = SA(B, A, 0x300 + n, Proto.COMP, Mode.TUNNEL, rid, comp=comp)
    comp_out = SA(A, B, 0x400 + n, Proto.COMP, Mode.TUNNEL, rid, comp=comp, mark=mark)
    policies = tuple(
        dataclasses.replace(
            p,
            templates=(
                Template(Proto.COMP, Mode.TUNNEL, rid, *(p.templates[0].src, p.templates[0].dst)),
                Template(Proto.ESP, Mode.TRANSPORT, rid),
            ),
            mark=mark if p.dir == Dir.OUT else None,
        )
        for p in c.policies
    )
    return tx.ChildSA(
        esp_in, esp_out, policies, inbound_larval=False, comp_in=comp_in, comp_out=comp_out
    )


def test_ipcomp_sas_go_in_before_their_esp_sa_and_out_after_it() -> None:
    k = FakeKernel()
    c = comp_child(mark=Mark(0x2A, 0xFF))
    run(tx.install_child(k, c))  # type: ignore[arg-type]
    assert k.batches[0][:4] == [
        ("NEWSA", "0x301"),
        ("NEWSA", "0x1001"),
        ("NEWSA", "0x401"),
        ("NEWSA", "0x2001"),
    ]
    assert c.comp_out is not None and c.comp_in is not None
    assert set(k.sas) == {c.comp_in.id, c.inbound.id, c.comp_out.id, c.outbound.id}
    # The marked outbound SAs are deleted by their id alone: it carries the mark.
    run(tx.remove_child(k, c))  # type: ignore[arg-type]
    assert k.batches[-1][-4:] == [
        ("DELSA", "0x2001"),
        ("DELSA", "0x401"),
        ("DELSA", "0x1001"),
        ("DELSA", "0x301"),
    ]
    assert k.sas == {} and k.policies == {}


def test_rekey_split_moves_the_ipcomp_sas_with_their_direction() -> None:
    k = FakeKernel()
    c = comp_child()
    assert c.comp_out is not None and c.comp_in is not None
    run(tx.install_child(k, c, outbound=False))  # type: ignore[arg-type]
    assert set(k.sas) == {c.comp_in.id, c.inbound.id}
    run(tx.install_outbound(k, c))  # type: ignore[arg-type]
    assert k.batches[-1] == [("NEWSA", "0x401"), ("NEWSA", "0x2001")]
    run(tx.remove_child(k, c, keep_inbound=True))  # type: ignore[arg-type]
    assert set(k.sas) == {c.comp_in.id, c.inbound.id}
    run(tx.remove_inbound(k, c))  # type: ignore[arg-type]
    assert k.sas == {}


def test_failed_outbound_sa_takes_its_ipcomp_sa_back() -> None:
    k = FakeKernel()
    c = comp_child()
    k.reject.add(c.outbound.id)
    with pytest.raises(tx.TransactionError, match="outbound SA install failed"):
        run(tx.install_outbound(k, c))  # type: ignore[arg-type]
    assert k.sas == {}
    assert k.batches[-1] == [("DELSA", "0x401")]
