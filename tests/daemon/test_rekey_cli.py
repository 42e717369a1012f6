"""`xfrmctl rekey NAME[/CHILD] [--ike]` through the real control socket, against two daemons on
loopback: the Child SA (or the IKE SA) is replaced with new SPIs, and bad names or nothing to
rekey are clear errors."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon_helpers import BASE_PORT, cli, served_pair, write_config

from xfrmctl.client import ControlClient

PORT = BASE_PORT + 1000


def ike_sa(sock: Path) -> dict[str, Any]:
    report = ControlClient(sock).call("status", {"name": "tun"})
    sas = [s for s in report["ike_sas"] if s["state"] == "ESTABLISHED"]
    assert len(sas) == 1, report
    found: dict[str, Any] = sas[0]
    return found


def eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_rekey_child_and_ike_sa_through_the_cli(tmp_path: Path) -> None:
    ids = ("a.example", "b.example")
    a_cfg = write_config(tmp_path, "a", "127.0.0.1", "127.0.0.2", PORT, PORT + 2, *ids)
    b_cfg = write_config(tmp_path, "b", "127.0.0.2", "127.0.0.1", PORT + 2, PORT, *ids[::-1])
    with served_pair(a_cfg, b_cfg) as (a, b):
        code, _, err = cli(a.sock, "rekey", "tun")
        assert code == 1 and "NOT_UP" in err and "no established installed Child SA" in err, err
        assert cli(a.sock, "up", "tun")[0] == 0

        before = ike_sa(a.sock)
        (child,) = before["children"]
        code, out, err = cli(a.sock, "rekey", "tun/host")
        assert code == 0 and "tun/host: rekeying 1 Child SA(s)" in out, err

        def child_rekeyed() -> bool:
            children = ike_sa(a.sock)["children"]
            return [c["spi_in"] for c in children] not in ([], [child["spi_in"]])

        eventually(child_rekeyed, "a new Child SA")
        # The responder rekeys too: `rekey` works from either end.
        (mine,) = ike_sa(a.sock)["children"]
        code, out, _ = cli(b.sock, "rekey", "tun")
        assert code == 0 and "rekeying 1 Child SA(s)" in out, out
        eventually(
            lambda: [c["spi_in"] for c in ike_sa(a.sock)["children"]] not in ([], [mine["spi_in"]]),
            "the responder's rekey",
        )

        code, out, _ = cli(a.sock, "rekey", "--ike", "tun")
        assert code == 0 and "tun: rekeying 1 IKE SA(s)" in out, out
        eventually(lambda: ike_sa(a.sock)["unique_id"] != before["unique_id"], "a new IKE SA")
        assert len(ike_sa(a.sock)["children"]) == 1, "the Child SA moved to the new IKE SA"

        code, _, err = cli(a.sock, "rekey", "tun/nope")
        assert code == 1 and "UNKNOWN_CHILD" in err, err
        code, _, err = cli(a.sock, "rekey", "nope")
        assert code == 1 and "UNKNOWN_CONNECTION" in err, err
        code, _, err = cli(a.sock, "rekey", "--ike", "tun/host")
        assert code == 2 and "--ike rekeys the whole IKE SA" in err, err
