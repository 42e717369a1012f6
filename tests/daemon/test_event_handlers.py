"""The daemon has a handler for every event the engine emits, and runs it for that event."""

from __future__ import annotations

import ipaddress
import logging

import pytest

from xfrmctl.daemon.core import Daemon
from xfrmctl.ike import events as ev


def event_types() -> list[type[ev.Event]]:
    return [
        t
        for t in vars(ev).values()
        if isinstance(t, type) and issubclass(t, ev.Event) and t is not ev.Event
    ]


@pytest.mark.parametrize("kind", event_types(), ids=lambda t: t.__name__)
def test_every_engine_event_has_a_handler(kind: type[ev.Event]) -> None:
    assert kind in Daemon._EVENT_HANDLERS, f"{kind.__name__} would be ignored by the daemon"


def test_the_handler_of_the_event_runs(caplog: pytest.LogCaptureFixture) -> None:
    event = ev.IkeSaReauthenticated("site-b", 3, 7)
    daemon = Daemon.__new__(Daemon)  # the handler needs nothing of a started daemon
    with caplog.at_level(logging.INFO, logger="xfrmctl"):
        daemon._on_event(event)
    assert "site-b: IKE SA #3 reauthenticated as #7" in caplog.text
    peer = (ipaddress.ip_address("192.0.2.1"), 500)
    violation = ev.ProtocolViolation(peer, "junk")
    with caplog.at_level(logging.DEBUG, logger="xfrmctl"):
        daemon._on_event(violation)
    assert "dropped a message from 192.0.2.1: junk" in caplog.text
