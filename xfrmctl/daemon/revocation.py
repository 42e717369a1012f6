"""Fetching CRLs and OCSP answers for the engine (RFC 5280 §4.2.1.13, RFC 6960 Appendix A.1).

Contract: `RevocationFetcher.start` takes a `RevocationFetchNeeded` and, off the engine's
thread of control, fetches every request at once: a CRL by HTTP GET of its distribution point,
an OCSP request by HTTP POST (application/ocsp-request) to the responder. Each fetch is bounded
by the event's timeout and by a size limit; only http:// and https:// are fetched (a peer's
certificate must not make us read file:// or other schemes). Failures become error strings,
never exceptions: `deliver` always gets one result per request, and nothing is verified here
(the engine does that).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from xfrmctl.ike.crypto.revocation_data import SCHEMES, FetchRequest, FetchResult
from xfrmctl.ike.events import RevocationFetchNeeded

if TYPE_CHECKING:
    import urllib.request

log = logging.getLogger("xfrmctl.daemon.revocation")

MAX_SIZE = 16 * 1024 * 1024  # a CRL of a large CA is a few MiB
Deliver = Callable[[int, list[FetchResult]], None]


@functools.cache
def _opener() -> urllib.request.OpenerDirector:
    """The opener, built at the first fetch: urllib.request and http cost every daemon start
    ~15 ms (far more under the lab's emulation) and only certificate setups fetch."""
    import urllib.request  # start-up cost: only when a certificate's status is fetched

    class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
        """Redirects stay on http(s): urllib alone would follow one to ftp://."""

        def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
            if not newurl.startswith(SCHEMES):
                raise ValueError(f"redirected to {newurl!r}, which is not http:// or https://")
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    return urllib.request.build_opener(_HttpOnlyRedirects)


def _http(request: FetchRequest, timeout: float) -> bytes:
    """One blocking fetch (run in a thread); OSError or ValueError say why it failed."""
    import urllib.request  # start-up cost: only when a certificate's status is fetched

    if not request.uri.startswith(SCHEMES):
        raise ValueError("only http:// and https:// URIs are fetched")
    if request.kind == "ocsp":
        req = urllib.request.Request(
            request.uri,
            data=request.body,
            headers={"Content-Type": "application/ocsp-request"},
            method="POST",
        )
    else:
        req = urllib.request.Request(request.uri, method="GET")
    with _opener().open(req, timeout=timeout) as response:
        data: bytes = response.read(MAX_SIZE + 1)
    if len(data) > MAX_SIZE:
        raise ValueError(f"answer larger than {MAX_SIZE // 2**20} MiB")
    return data


def _why(exc: BaseException) -> str:
    import urllib.error  # start-up cost: loaded by the fetch that failed, free by now

    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


async def fetch_one(request: FetchRequest, timeout: float) -> FetchResult:
    try:
        data = await asyncio.wait_for(asyncio.to_thread(_http, request, timeout), timeout + 0.5)
    except (OSError, ValueError, TimeoutError) as exc:
        return FetchResult(request.kind, request.uri, None, _why(exc))
    return FetchResult(request.kind, request.uri, data)


async def fetch_all(requests: Sequence[FetchRequest], timeout: float) -> list[FetchResult]:
    return list(await asyncio.gather(*(fetch_one(r, timeout) for r in requests)))


class RevocationFetcher:
    """The fetches in flight, so that a daemon stop can cancel them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, event: RevocationFetchNeeded, deliver: Deliver) -> None:
        uris = ", ".join(f"{r.kind.upper()} {r.uri}" for r in event.requests)
        log.info(
            "%s: IKE SA #%d: fetching revocation status: %s", event.conn, event.ike_sa_id, uris
        )
        task = asyncio.create_task(self._run(event, deliver), name="revocation-fetch")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, event: RevocationFetchNeeded, deliver: Deliver) -> None:
        results = await fetch_all(event.requests, event.timeout)
        for r in results:
            if r.data is None:
                log.warning("%s: %s %s failed: %s", event.conn, r.kind.upper(), r.uri, r.error)
        deliver(event.ike_sa_id, results)

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
