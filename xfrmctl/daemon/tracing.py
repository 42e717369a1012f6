"""Debug traces of IKE messages in the daemon's log (`--log-level debug`).

The engine's `MessageTrace` lines are already secret-free (sizes instead of keys, nonces and
AUTH data); here each line becomes one DEBUG record prefixed with the connection name (or the
peer's address before an IKE SA exists), so `journalctl | grep NAME` finds a whole exchange.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from xfrmctl.ike.events import MessageTrace
from xfrmctl.ike.status import IkeSaStatus

trace_log = logging.getLogger("xfrmctl.daemon.trace")


def tracing_wanted() -> bool:
    return trace_log.isEnabledFor(logging.DEBUG)


class MessageLog:
    def __init__(self, ike_sas: Callable[[], Iterable[IkeSaStatus]]) -> None:
        self._ike_sas = ike_sas
        self._conn_of: dict[int, str] = {}  # IKE SA id -> connection name

    def log(self, event: MessageTrace) -> None:
        name = None
        if event.ike_sa_id is not None:
            name = self._conn_of.get(event.ike_sa_id)
            if name is None:
                self._conn_of.update((s.ike_sa_id, s.conn) for s in self._ike_sas())
                name = self._conn_of.get(event.ike_sa_id)
        who = name or f"{event.remote[0]}[{event.remote[1]}]"
        for line in event.lines:
            trace_log.debug("%s: %s", who, line)

    def forget(self, ike_sa_id: int) -> None:
        self._conn_of.pop(ike_sa_id, None)
