"""The last failed negotiation per connection, for `xfrmctl explain` (docs/control-protocol.md).

Contract: bounded memory, one record per configured connection: a newer failure replaces the
older one, and success clears it (an established IKE SA clears an IKE-level failure, an
installed Child SA its child's). Records hold the diagnosis (`xfrmctl.ike.diagnosis`), never
key material.
"""

from __future__ import annotations

import logging
from collections.abc import Container
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from xfrmctl.ike import events as ev

if TYPE_CHECKING:
    from xfrmctl.ike.diagnosis import Diagnosis

log = logging.getLogger("xfrmctl.daemon")


def _plain(event: ev.NegotiationFailed | ev.AuthenticationFailed) -> Diagnosis:
    code = event.reason if isinstance(event, ev.NegotiationFailed) else "AUTHENTICATION_FAILED"
    child = event.child if isinstance(event, ev.NegotiationFailed) else None
    from xfrmctl.ike.diagnosis import Diagnosis  # start-up cost: only once something failed

    return Diagnosis(event.conn, child, code, event.reason, "", event.reason, (), (), ())


@dataclass(frozen=True)
class Failure:
    diagnosis: Diagnosis
    at: datetime

    def to_json(self) -> dict[str, Any]:
        return {**self.diagnosis.to_json(), "at": self.at.strftime("%Y-%m-%dT%H:%M:%SZ")}


class FailureLog:
    def __init__(self) -> None:
        self._last: dict[str, Failure] = {}

    def record(
        self, event: ev.NegotiationFailed | ev.AuthenticationFailed, known: Container[str]
    ) -> Diagnosis:
        """Diagnose `event`; keep it if it names a configured connection."""
        from xfrmctl.ike.diagnosis import diagnose  # start-up cost: only once something failed

        try:
            diagnosis = diagnose(event)
        except Exception:  # a diagnosis bug must not cost the `up` waiter its answer
            log.exception("%s: cannot diagnose %s", event.conn, type(event).__name__)
            diagnosis = _plain(event)
        if event.conn in known:
            self._last[event.conn] = Failure(diagnosis, datetime.now(UTC))
        return diagnosis

    def succeeded(self, conn: str, child: str | None = None) -> None:
        """The IKE SA (child None) or one child came up: its failure is history."""
        last = self._last.get(conn)
        if last is not None and last.diagnosis.child == child:
            del self._last[conn]

    def get(self, conn: str) -> Failure | None:
        return self._last.get(conn)

    def forget_except(self, known: Container[str]) -> None:
        """After a reload: drop the records of connections that are gone."""
        for name in [n for n in self._last if n not in known]:
            del self._last[name]

    def __len__(self) -> int:
        return len(self._last)
