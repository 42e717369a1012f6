"""`start_action: start` through the start window (daemon/starts.py, `settings.start_window`):
at most `window` IKE SAs connecting at once, the rest in order, none started twice."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from daemon_helpers import BASE_PORT, RecordingKernel, make_daemon, until
from daemon_helpers import write_config as _write

from xfrmctl.client import ControlClient
from xfrmctl.daemon.main import run_daemon
from xfrmctl.daemon.starts import StartQueue
from xfrmctl.ike.errors import LocalProtocolError
from xfrmctl.ike.exchanges import IkeState
from xfrmctl.ike.settings import EndpointConfig

PORT = BASE_PORT + 760
PATIENCE = 4.0  # the fake engine's retransmission timeout


class FakeEngine:
    """What the queue asks of the engine: a connection's IKE SAs in a state."""

    def __init__(self) -> None:
        self.config = EndpointConfig(retransmit_timeout=PATIENCE)
        self.states: dict[int, IkeState] = {}
        self.conn_of: dict[int, str] = {}
        self.gone: set[str] = set()  # connections a reload removed

    def ike_ids(self, conn: str, state: IkeState | None = None) -> list[int]:
        return [i for i, c in self.conn_of.items() if c == conn and self.states[i] == state]

    def initiate(self, conn: str, children: list[str]) -> int:
        if conn in self.gone:
            raise LocalProtocolError(f"no connection named {conn!r}")
        sa_id = len(self.states) + 1
        self.states[sa_id], self.conn_of[sa_id] = IkeState.INIT_SENT, conn
        return sa_id


def started(engine: FakeEngine) -> list[str]:
    return list(engine.conn_of.values())


def queued(window: int, n: int) -> tuple[FakeEngine, StartQueue]:
    """A queue of `n` connections to start, filled once at time 0."""
    engine = FakeEngine()
    queue = StartQueue(engine, engine.initiate)  # type: ignore[arg-type]
    queue.window = window
    for i in range(n):
        queue.add(f"c{i}", ["net"])
    queue.fill(0.0)
    return engine, queue


def test_the_window_bounds_connecting_ike_sas_and_keeps_the_order() -> None:
    engine, queue = queued(2, 6)
    assert started(engine) == ["c0", "c1"] and queue.waiting == 4
    engine.states[1] = IkeState.AUTH_SENT  # still connecting
    queue.fill(1.0)
    assert started(engine) == ["c0", "c1"]
    engine.states[1] = IkeState.ESTABLISHED  # unknown to the queue until the host says so
    queue.fill(1.0)
    assert started(engine) == ["c0", "c1"]
    queue.settled(1)  # the IkeSaEstablished event
    queue.fill(1.0)
    assert started(engine) == ["c0", "c1", "c2"]
    del engine.states[2], engine.conn_of[2]  # failed and forgotten
    queue.settled(2)  # the IkeSaDeleted event
    engine.gone.add("c3")  # removed by a reload: skipped
    engine.conn_of[99], engine.states[99] = "c4", IkeState.ESTABLISHED  # up meanwhile
    queue.fill(1.0)
    assert started(engine) == ["c0", "c2", "c4", "c5"] and queue.waiting == 0


def test_a_start_unanswered_for_a_retransmission_timeout_makes_room() -> None:
    """A dead peer must not hold the connections behind it through every retransmission."""
    engine, queue = queued(2, 5)
    queue.fill(PATIENCE - 0.1)
    assert started(engine) == ["c0", "c1"]  # both still INIT_SENT, within the patience
    queue.fill(PATIENCE + 0.1)
    assert started(engine) == ["c0", "c1", "c2", "c3"]
    queue.fill(PATIENCE + 1.0)
    assert started(engine) == ["c0", "c1", "c2", "c3"]  # c2 and c3 have their own patience


def test_window_zero_starts_everything_at_once() -> None:
    engine, _ = queued(0, 100)
    assert len(started(engine)) == 100


def _many(tmp: Path, n: int, settings: str = "", port: int = PORT) -> tuple[Path, Path]:
    """An initiator with n connections to start (one /32 child each) and a responder."""
    a = _write(tmp, "a", "127.0.0.1", "127.0.0.2", port, port + 2, "a.x", "b.x")
    b = _write(tmp, "b", "127.0.0.2", "127.0.0.1", port + 2, port, "b.x", "a.x")
    text = a.read_text()
    head, conn = text.split("connections:\n")
    conns = "".join(
        conn.replace("  tun:", f"  c{i}:").replace(
            "        mode: transport\n",
            f"        mode: tunnel\n        local_ts: [10.1.0.{i}/32]\n"
            f"        remote_ts: [10.2.0.{i}/32]\n        start_action: start\n",
        )
        for i in range(n)
    )
    a.write_text(head.replace("settings:\n", f"settings:\n{settings}") + "connections:\n" + conns)
    b.write_text(
        b.read_text().replace(
            "        mode: transport\n",
            "        mode: tunnel\n        local_ts: [10.2.0.0/16]\n"
            "        remote_ts: [10.1.0.0/16]\n",
        )
    )
    return a, b


def test_loopback_daemons_start_every_connection_two_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xfrmctl.daemon import starts
    from xfrmctl.daemon.core import Daemon

    a, b = _many(tmp_path, 8)
    monkeypatch.setattr(starts, "DEFAULT_WINDOW", 2)
    in_flight: list[int] = []  # connecting IKE SAs as each start is made, itself included
    start = Daemon._start

    def counted(self: Daemon, conn: str, children: list[str]) -> int:
        connecting = (IkeState.INIT_SENT, IkeState.AUTH_SENT)
        in_flight.append(1 + sum(sa.state in connecting for sa in self.engine.sas.values()))
        return start(self, conn, children)

    monkeypatch.setattr(Daemon, "_start", counted)

    async def scenario() -> None:
        db, _, kb = await make_daemon(b)
        da, _, ka = await make_daemon(a)
        try:
            await until(lambda: len(ka.sas) == 8 and len(kb.sas) == 8, 30, "8 pairs each side")
            for n in range(8):
                assert len(da.engine.ike_ids(f"c{n}", IkeState.ESTABLISHED)) == 1
            assert da.starts.waiting == 0
        finally:
            await da.stop()
            await db.stop()

    asyncio.run(scenario())
    assert len(in_flight) == 8 and max(in_flight) == 2, in_flight


def test_the_setting_reaches_the_daemon_and_a_reload_changes_it(tmp_path: Path) -> None:
    """No peer answers: with start_window 2, two of five connections are connecting and
    three wait; a reload to 0 starts the rest."""
    sock = tmp_path / "xfrmctl.sock"
    a, _ = _many(tmp_path, 5, f"  socket: {sock}\n  start_window: 2\n", PORT + 10)

    def connecting(report: dict) -> int:
        return sum(ike["state"] == "CONNECTING" for ike in report["ike_sas"])

    async def scenario() -> tuple[int, int, int]:
        task = asyncio.create_task(run_daemon(a, None, RecordingKernel()))
        await until(lambda: sock.exists() or task.done(), 10, "control socket")
        client = ControlClient(sock)
        first = connecting(await asyncio.to_thread(client.call, "status", {"name": None}))
        a.write_text(a.read_text().replace("start_window: 2", "start_window: 0"))
        await asyncio.to_thread(client.call, "reload", {})
        await asyncio.sleep(0.2)
        second = connecting(await asyncio.to_thread(client.call, "status", {"name": None}))
        os.kill(os.getpid(), signal.SIGTERM)
        return first, second, await asyncio.wait_for(task, 20)

    first, second, code = asyncio.run(scenario())
    assert (first, second, code) == (2, 5, 0)


def test_a_dead_peer_does_not_hold_up_the_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nobody answers (no responder): with a window of one, each start makes room for the
    next after one retransmission timeout (0.5 s in these daemons)."""
    from xfrmctl.daemon import starts

    a, _ = _many(tmp_path, 3, port=PORT + 20)
    monkeypatch.setattr(starts, "DEFAULT_WINDOW", 1)

    async def scenario() -> None:
        da, _, _ = await make_daemon(a)
        try:
            names = [f"c{n}" for n in range(3)]
            await until(lambda: all(da.engine.ike_ids(n, IkeState.INIT_SENT) for n in names), 5)
        finally:
            await da.stop()

    asyncio.run(scenario())
