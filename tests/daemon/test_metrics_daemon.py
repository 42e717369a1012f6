"""`xfrmctl daemon` with settings.metrics: no TCP port without it, the endpoint with it, and
`reload` moves it, closes it, or is refused (saying why) when the new address is taken."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from daemon_helpers import BASE_PORT, RecordingKernel

from xfrmctl.client import ControlClient, RemoteError
from xfrmctl.daemon.main import run_daemon

PORT = BASE_PORT + 980  # UDP for IKE; TCP PORT + 5.. for metrics


def config(tmp: Path, metrics: str) -> Path:
    psk = tmp / "k.psk"
    psk.write_text("a secret\n")
    psk.chmod(0o600)
    cfg = tmp / "xfrmctl.yaml"
    cfg.write_text(
        f"settings:\n  socket: {tmp / 'ctl.sock'}\n  port: {PORT}\n  port_nat_t: {PORT + 1}\n"
        f"{metrics}"
        "connections:\n  c:\n    local_addrs: [127.0.0.1]\n    remote_addrs: [127.0.0.2]\n"
        "    local: {auth: psk, id: a.example}\n    remote: {auth: psk, id: b.example}\n"
        "    psk_file: k.psk\n    children:\n      n: {mode: transport}\n"
    )
    return cfg


def listening_tcp_ports() -> set[int]:
    """TCP ports this process listens on (the daemon runs in it)."""
    mine = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            mine.add(target[8:-1])
    ports = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with open(table) as f:
            for line in list(f)[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in mine:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def reload(tmp: Path) -> dict[str, object]:
    return ControlClient(tmp / "ctl.sock").call("reload", {})


async def run(tmp: Path, metrics: str, look: object) -> int:
    cfg = config(tmp, metrics)
    task = asyncio.create_task(run_daemon(cfg, None, RecordingKernel()))
    for _ in range(200):
        if (tmp / "ctl.sock").exists() or task.done():
            break
        await asyncio.sleep(0.02)
    assert not task.done(), f"the daemon exited early with {task.result()}"
    try:
        await look(cfg)  # type: ignore[operator]
    finally:
        os.kill(os.getpid(), signal.SIGTERM)
    return await asyncio.wait_for(task, 10)


def test_off_by_default_no_port_is_opened(tmp_path: Path) -> None:
    async def look(cfg: Path) -> None:
        assert listening_tcp_ports() == set()

    assert asyncio.run(run(tmp_path, "", look)) == 0


def test_reload_moves_closes_and_refuses(tmp_path: Path) -> None:
    first, second = PORT + 5, PORT + 6

    async def look(cfg: Path) -> None:
        assert listening_tcp_ports() == {first}
        text = cfg.read_text()
        cfg.write_text(text.replace(f":{first}}}", f":{second}}}"))
        await asyncio.to_thread(reload, tmp_path)
        assert listening_tcp_ports() == {second}
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", first))
        blocker.listen()
        try:
            cfg.write_text(text)
            try:
                await asyncio.to_thread(reload, tmp_path)
                raise AssertionError("a reload onto a taken port was accepted")
            except RemoteError as exc:
                said = f"{exc} {exc.details}"
                assert "metrics: cannot listen on 127.0.0.1:" in said, said
            assert listening_tcp_ports() == {first, second}  # the blocker's and ours
        finally:
            blocker.close()
        cfg.write_text(text.replace(f"  metrics: {{listen: 127.0.0.1:{first}}}\n", ""))
        await asyncio.to_thread(reload, tmp_path)
        assert listening_tcp_ports() == set()

    metrics = f"  metrics: {{listen: 127.0.0.1:{first}}}\n"
    assert asyncio.run(run(tmp_path, metrics, look)) == 0


def test_a_daemon_without_metrics_does_not_import_prometheus_client() -> None:
    """prometheus_client is imported at the first scrape: every daemon start would pay for it
    (seconds under emulation) though metrics are off by default."""
    code = "import sys, xfrmctl.daemon.main; print('prometheus_client' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out
