"""IKE_AUTH waiting for certificate revocation status (RFC 4945 §5.1.3, RFC 5280 §6.3, RFC 6960).

Contract: sans-IO. When the peer's chain needs a CRL or OCSP answer the cache lacks, the IKE SA
is parked here (`park`): a `RevocationFetchNeeded` event asks the host to fetch, and nothing
else of the engine waits. `fetched` puts the host's answers into the cache and resumes the
parked IKE_AUTH, which then decides with what it has (the fetches that failed are not asked
again). A parked IKE SA holds only its requests, the failures so far and how to resume; it
is timed out by the IKE SA's own timer table (`deadline`/`timed_out`) after twice the fetch
timeout, as if every fetch had failed, so the policy still decides (a responder's half-open
timeout still bounds the whole).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from xfrmctl.ike.crypto import revocation_data as rv
from xfrmctl.ike.errors import ProtocolError
from xfrmctl.ike.events import RevocationFetchNeeded
from xfrmctl.ike.revocation_state import Wait

if TYPE_CHECKING:
    from xfrmctl.ike.sa import IkeSa


GRACE = 2.0  # the host has this many fetch timeouts to answer before the fetches count as failed


class RevocationPending(ProtocolError):
    """Raised out of an IKE_AUTH request handler that parked: answer nothing yet."""


def failures(sa: IkeSa) -> dict[tuple[str, str], str]:
    wait = sa.ep.revocations.waits.get(sa.id)
    return wait.failures if wait is not None else {}


def waiting(sa: IkeSa) -> bool:
    """Is a fetch out for this IKE SA (its IKE_AUTH must not be handled again meanwhile)?"""
    wait = sa.ep.revocations.waits.get(sa.id)
    return wait is not None and wait.asked


def park(
    sa: IkeSa,
    need: rv.NeedFetch,
    timeout: float,
    resume: Callable[[float], None],
    now: float,
) -> None:
    waits = sa.ep.revocations.waits
    old = waits.get(sa.id)
    deadline = old.deadline if old else now + GRACE * timeout
    known = old.failures if old else {}
    waits[sa.id] = Wait(dict(need.requests), resume, deadline, known)
    sa.ep.trace_note(
        sa.remote, sa.id, "IKE_AUTH waits for " + ", ".join(r.uri for r in need.requests)
    )
    sa.emit(RevocationFetchNeeded(sa.conn_name, sa.id, tuple(need.requests), timeout))


def fetched(sa: IkeSa, results: Sequence[rv.FetchResult], now: float) -> None:
    """The host's answers: cache what verifies, note what failed, resume IKE_AUTH."""
    from xfrmctl.ike.crypto.revocation import absorb  # start-up cost: loads x509 (certs only)

    wait = sa.ep.revocations.waits.get(sa.id)
    if wait is None or not wait.asked:
        return
    when = sa.ep.wall_clock()
    by_uri = {(r.kind, r.uri): r for r in results}
    for req, links in wait.requests.items():
        result = by_uri.get(
            (req.kind, req.uri), rv.FetchResult(req.kind, req.uri, None, "no answer")
        )
        why = absorb(result, links, sa.ep.revocations.cache, when)
        if why:
            wait.failures[(req.kind, req.uri)] = why
    _resume(sa, wait, now)


def _resume(sa: IkeSa, wait: Wait, now: float) -> None:
    wait.asked = False
    try:
        wait.resume(now)
    finally:
        if not wait.asked:  # not parked again
            sa.ep.revocations.waits.pop(sa.id, None)


def deadline(sa: IkeSa) -> float | None:
    wait = sa.ep.revocations.waits.get(sa.id)
    return wait.deadline if wait is not None and wait.asked else None


def timed_out(sa: IkeSa, now: float) -> None:
    """No answer in time: every fetch counts as failed and the policy decides."""
    wait = sa.ep.revocations.waits.get(sa.id)
    if wait is None:
        return
    for req in wait.requests:
        wait.failures.setdefault((req.kind, req.uri), "no answer in time")
    wait.deadline = now  # a second park would not wait again
    _resume(sa, wait, now)


def forget(sa: IkeSa) -> None:
    sa.ep.revocations.waits.pop(sa.id, None)
