"""`xfrmctl up` and `xfrmctl explain [--json]` through the real control socket, against two
daemons on loopback whose ESP proposals disagree."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from daemon_helpers import BASE_PORT, make_daemon, write_config
from typer.testing import CliRunner

from xfrmctl.cli import app
from xfrmctl.daemon.control import ControlServer

PORT = BASE_PORT + 880
T = TypeVar("T")
runner = CliRunner()


@contextmanager
def daemons(a_cfg: Path, b_cfg: Path) -> Iterator[Path]:
    """Both daemons in a background loop; daemon a's control socket, for the CLI."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    short = Path(tempfile.mkdtemp(prefix="xe", dir="/tmp"))

    def run(coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(30)

    try:
        da, ha, _ = run(make_daemon(a_cfg))
        db, _, _ = run(make_daemon(b_cfg))
        server = ControlServer(short / "x.sock", ha)
        run(server.start())
        try:
            yield short / "x.sock"
        finally:
            run(server.close())
            run(da.stop())
            run(db.stop())
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
        shutil.rmtree(short, ignore_errors=True)


def cli(sock: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--socket", str(sock), *args])
    return result.exit_code, result.stdout, result.stderr


def test_up_failure_and_explain_show_the_diagnosis(tmp_path: Path) -> None:
    ids = ("a.example", "b.example")
    a_cfg = write_config(tmp_path, "a", "127.0.0.1", "127.0.0.2", PORT, PORT + 2, *ids)
    b_cfg = write_config(
        tmp_path, "b", "127.0.0.2", "127.0.0.1", PORT + 2, PORT, *ids[::-1], esp="aes128-sha256"
    )
    with daemons(a_cfg, b_cfg) as sock:
        code, out, _ = cli(sock, "explain", "tun")
        assert code == 0 and "tun: no failed negotiation on record" in out, out
        code, _, err = cli(sock, "up", "tun")
        assert code == 1, err
        assert "up tun failed: NO_PROPOSAL_CHOSEN" in err, err
        assert "the peer accepted none of our ESP proposals for child host" in err, err
        assert '"proposals"' not in err, err  # the diagnosis instead of the raw offers
        code, out, _ = cli(sock, "explain", "tun")
        assert code == 0, out
        lines = out.splitlines()
        assert lines[0] == "tun: child host failed: NO_PROPOSAL_CHOSEN, we were the initiator"
        assert any(line.startswith("  ! ESP proposals") for line in lines), out
        assert "(not revealed by the peer)" in out and "suggested change:" in out, out
        assert "\n".join(lines[1:]) in err  # `up` printed the same text
        code, out, _ = cli(sock, "explain", "tun", "--json")
        report = json.loads(out)
        assert report["connection"] == "tun" and report["failure"]["child"] == "host"
        assert report["failure"]["hidden"] and report["failure"]["suggestions"], report
        code, _, err = cli(sock, "explain", "nope")
        assert code == 1 and "UNKNOWN_CONNECTION" in err and "'nope'" in err, err
