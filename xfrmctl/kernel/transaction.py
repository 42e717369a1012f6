"""Install and remove whole Child SAs safely, in one netlink round trip, with rollback.

Order: SAs first (inbound, then outbound), then policies (in, fwd, out), in one batch, which
the kernel carries out in order: a policy goes in after the SA it needs, so nothing is sent in
cleartext that should be protected and nothing is dropped for lack of an SA; the outbound
policy comes last because it switches traffic on. The kernel does not stop a batch at the
first error: when an SA fails, the policies that went in after it are taken out again (or put
back as they were) with the SAs that did go in, and the caller gets the error. A policy the
caller does not hold goes in with NEWPOLICY: where the kernel already has one there (a trap,
someone else's), it refuses, and only then is the old one read back and replaced, in a
second round trip. Each Child SA set up took two round trips and a GETPOLICY per policy before
(issue 15).

IPComp (RFC 3173) adds an SA per direction: each goes in just before the ESP/AH SA of its
direction and out just after it, so the templates (comp, then esp) never miss one.

A rekey splits the pair (make-before-break): `install_children(outbound=False)` puts in the new
inbound SA and the policies while the old outbound SA keeps carrying traffic (same reqid, so
the policies find it); `install_outbound` switches to the new one once the peer is known to
have its inbound SA; `remove_children(keep_inbound=True)` then `remove_inbound` let the old
inbound SA linger for packets in flight.

Ownership: every SA and templated policy xfrmctl installs carries a reqid from a reserved range,
so a restarted daemon can find its stale objects and leave everyone else's alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from xfrmctl.kernel import policy as policy_ops
from xfrmctl.kernel import sa as sa_ops
from xfrmctl.kernel.errors import NotFoundError, ObjectExistsError, XfrmError
from xfrmctl.kernel.socket import Connection, Request
from xfrmctl.kernel.types import SA, Dir, Policy, PolicyId


@dataclass(frozen=True, slots=True)
class Ownership:
    """reqids in [base, base + size) belong to this xfrmctl instance."""

    base: int = 0x58460000  # "XF\0\0"
    size: int = 0x10000

    def reqid(self, n: int) -> int:
        if not 0 < n < self.size:
            raise ValueError(f"reqid index {n} outside 1..{self.size - 1}")
        return self.base + n

    def owns_reqid(self, reqid: int) -> bool:
        return self.base <= reqid < self.base + self.size

    def owns_sa(self, sa: SA) -> bool:
        return self.owns_reqid(sa.reqid)

    def owns_policy(self, policy: Policy) -> bool:
        return any(self.owns_reqid(t.reqid) for t in policy.templates)


DEFAULT_OWNERSHIP = Ownership()


@dataclass(frozen=True, slots=True)
class ChildSA:
    """The kernel side of one IKE Child SA.

    `inbound_larval`: the inbound SPI came from ALLOCSPI, so the inbound SA replaces that larval
    state (UPDSA) instead of being added. `comp_in`/`comp_out`: the IPComp SAs, when the pair
    compresses (their CPI is their SPI).
    """

    inbound: SA
    outbound: SA
    policies: tuple[Policy, ...] = ()
    inbound_larval: bool = True
    comp_in: SA | None = None
    comp_out: SA | None = None

    def ordered_policies(self) -> list[Policy]:
        rank = {Dir.IN: 0, Dir.FWD: 1, Dir.OUT: 2}
        return sorted(self.policies, key=lambda p: rank[p.dir])


class TransactionError(XfrmError):
    """A step failed; `cause` is its error, `rollback_errors` what could not be undone."""

    def __init__(self, message: str, cause: XfrmError, rollback_errors: list[XfrmError]) -> None:
        super().__init__(message, code=cause.code, ext_ack=cause.ext_ack)
        self.cause = cause
        self.rollback_errors = rollback_errors


def _failures(requests: Sequence[Request]) -> list[XfrmError]:
    return [r.error for r in requests if r.error is not None]


async def _undo(conn: Connection, undo: list[Request]) -> list[XfrmError]:
    await conn.batch(undo)
    return [e for e in _failures(undo) if not isinstance(e, NotFoundError)]


async def install_children(
    conn: Connection,
    children: Sequence[ChildSA],
    *,
    replace_policies: bool = True,
    outbound: bool = True,
    known: Callable[[PolicyId], Policy | None] | None = None,
) -> None:
    """Install Child SAs all or nothing. `replace_policies` replaces existing (e.g. trap)
    policies and restores them on rollback; otherwise existing ones are an error. Without
    `outbound` the outbound SAs are left for `install_outbound` (rekeys). `known` answers what
    the caller installed and still holds at a policy identity: that one is replaced in place,
    and is what a rollback restores, without asking the kernel (a rekey's policies are all
    its own)."""
    sa_reqs: list[tuple[SA, Request]] = []
    for child in children:
        if child.comp_in is not None:
            sa_reqs.append((child.comp_in, sa_ops.add_request(child.comp_in)))
        inbound = (
            sa_ops.update_request(child.inbound)
            if child.inbound_larval
            else sa_ops.add_request(child.inbound)
        )
        sa_reqs.append((child.inbound, inbound))
        if outbound:
            sa_reqs += _outbound_requests(child)
    policies = [p for child in children for p in child.ordered_policies()]
    previous: list[Policy | None] = [
        known(p.id) if known is not None and replace_policies else None for p in policies
    ]
    pol_reqs = [
        policy_ops.add_request(p) if old is None else policy_ops.update_request(p)
        for p, old in zip(policies, previous, strict=True)
    ]
    await conn.batch([r for _, r in sa_reqs] + pol_reqs)
    failed = _failures([r for _, r in sa_reqs])
    if not failed and replace_policies:
        await _replace_taken(conn, policies, pol_reqs, previous)
    if failed := failed or _failures(pol_reqs):
        steps = list(zip(policies, pol_reqs, previous, strict=True))
        leftovers = await _roll_back(conn, sa_reqs, steps)
        # "Already there" is what the other failure left unreplaced, not the cause.
        cause = min(failed, key=lambda e: isinstance(e, ObjectExistsError))
        raise TransactionError(f"Child SA install failed: {cause}", cause, leftovers)


async def _replace_taken(
    conn: Connection, policies: list[Policy], pol_reqs: list[Request], previous: list[Policy | None]
) -> None:
    """The policies the kernel already had (NEWPOLICY: EEXIST), someone else's or a stale
    one: each read back, for a rollback to restore, and replaced, in one round trip (the
    kernel answers a batch in order). Not when any policy failed otherwise: that rolls back."""
    taken = [i for i, r in enumerate(pol_reqs) if isinstance(r.error, ObjectExistsError)]
    if not taken or len(taken) != len(_failures(pol_reqs)):
        return
    lookups = [policy_ops.get_request(policies[i].id) for i in taken]
    updates = [policy_ops.update_request(policies[i]) for i in taken]
    await conn.batch(lookups + updates)
    for i, look, update in zip(taken, lookups, updates, strict=True):
        if look.ok and look.replies:
            previous[i] = policy_ops.decode_policy(look.replies[0])
        pol_reqs[i] = update


async def _roll_back(
    conn: Connection,
    sa_reqs: list[tuple[SA, Request]],
    steps: list[tuple[Policy, Request, Policy | None]],
) -> list[XfrmError]:
    """Undo what went in, in the reverse order: each policy back as it was (or gone), then
    the SAs (larval inbound states are gone once updated; deleting the SA frees the SPI too)."""
    undo: list[Request] = []
    for pol, req, old in reversed(steps):
        if req.ok:
            undo.append(
                policy_ops.delete_request(pol.id) if old is None else policy_ops.update_request(old)
            )
    undo += [sa_ops.delete_request(sa.id) for sa, r in reversed(sa_reqs) if r.ok]
    return await _undo(conn, undo)


async def install_child(
    conn: Connection,
    child: ChildSA,
    *,
    replace_policies: bool = True,
    outbound: bool = True,
    known: Callable[[PolicyId], Policy | None] | None = None,
) -> None:
    await install_children(
        conn, [child], replace_policies=replace_policies, outbound=outbound, known=known
    )


async def install_outbound(conn: Connection, child: ChildSA) -> None:
    """The outbound SA that `install_children(outbound=False)` left out (and its IPComp SA);
    from now on the outbound policy's traffic may use it."""
    reqs = _outbound_requests(child)
    await conn.batch([r for _, r in reqs])
    if failed := _failures([r for _, r in reqs]):
        undo = [sa_ops.delete_request(sa.id) for sa, r in reversed(reqs) if r.ok]
        leftovers = await _undo(conn, undo)
        raise TransactionError(f"outbound SA install failed: {failed[0]}", failed[0], leftovers)


def _outbound_requests(child: ChildSA) -> list[tuple[SA, Request]]:
    out = [] if child.comp_out is None else [(child.comp_out, sa_ops.add_request(child.comp_out))]
    return [*out, (child.outbound, sa_ops.add_request(child.outbound))]


def _deletes(*sas: SA | None) -> list[Request]:
    return [sa_ops.delete_request(sa.id) for sa in sas if sa is not None]


async def remove_children(
    conn: Connection,
    children: Sequence[ChildSA],
    *,
    keep_policies: bool = False,
    keep_inbound: bool = False,
) -> None:
    """Remove in the reverse of install order; objects already gone are not an error.

    `keep_policies` deletes only the SAs: templated policies then act as traps (ACQUIRE), which
    is what a rekey or an on-demand connection wants. `keep_inbound` leaves the inbound SAs for
    packets still in flight; `remove_inbound` takes them later."""
    requests: list[Request] = []
    if not keep_policies:
        for child in children:
            requests += [
                policy_ops.delete_request(p.id) for p in reversed(child.ordered_policies())
            ]
    for child in children:
        requests += _deletes(child.outbound, child.comp_out)
        if not keep_inbound:
            requests += _deletes(child.inbound, child.comp_in)
    await _remove(conn, requests, "Child SA removal")


async def remove_child(
    conn: Connection, child: ChildSA, *, keep_policies: bool = False, keep_inbound: bool = False
) -> None:
    await remove_children(conn, [child], keep_policies=keep_policies, keep_inbound=keep_inbound)


async def remove_inbound(conn: Connection, child: ChildSA) -> None:
    """The inbound SA `remove_children(keep_inbound=True)` left behind; gone is not an error."""
    await _remove(conn, _deletes(child.inbound, child.comp_in), "inbound SA removal")


async def remove_policies(conn: Connection, policies: Sequence[Policy]) -> None:
    """Delete policies in the reverse of `install_policies` order (outbound first, so no
    packet is left matching a half-removed set); already gone is not an error."""
    await _remove(
        conn, [policy_ops.delete_request(p.id) for p in reversed(policies)], "policy removal"
    )


async def _remove(conn: Connection, requests: list[Request], what: str) -> None:
    await conn.batch(requests)
    errors = [e for e in _failures(requests) if not isinstance(e, NotFoundError)]
    if errors:
        raise TransactionError(f"{what} incomplete: {errors[0]}", errors[0], errors)


async def install_policies(
    conn: Connection, policies: Sequence[Policy], *, replace: bool = True
) -> None:
    """Install policies in one batch (e.g. trap policies: templates but no SA, so the kernel
    sends ACQUIRE); on any failure the ones that went in are removed again."""
    make = policy_ops.update_request if replace else policy_ops.add_request
    reqs = [make(p) for p in policies]
    await conn.batch(reqs)
    if failed := _failures(reqs):
        undo = [
            policy_ops.delete_request(p.id) for p, r in zip(policies, reqs, strict=True) if r.ok
        ]
        leftovers = await _undo(conn, undo)
        raise TransactionError(f"policy install failed: {failed[0]}", failed[0], leftovers)


@dataclass
class CleanupReport:
    sas: list[SA] = field(default_factory=list)
    policies: list[Policy] = field(default_factory=list)
    errors: list[XfrmError] = field(default_factory=list)


async def cleanup_stale(
    conn: Connection,
    ownership: Ownership = DEFAULT_OWNERSHIP,
    keep: Callable[[SA | Policy], bool] = lambda _: False,
) -> CleanupReport:
    """Delete every SA and policy that is ours (by reqid) unless `keep` says otherwise;
    policies first, so no policy is left pointing at a missing SA."""
    report = CleanupReport()
    report.policies = [
        p async for p in policy_ops.dump_policies(conn) if ownership.owns_policy(p) and not keep(p)
    ]
    report.sas = [s async for s in sa_ops.dump_sas(conn) if ownership.owns_sa(s) and not keep(s)]
    requests = [policy_ops.delete_request(p.id) for p in report.policies]
    requests += [sa_ops.delete_request(s.id) for s in report.sas]
    await conn.batch(requests)
    report.errors = [e for e in _failures(requests) if not isinstance(e, NotFoundError)]
    return report
