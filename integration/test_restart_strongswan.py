"""Graceful restart against strongSwan (issue 12, item 1): one scenario, one charon.

A steady ping (20/s) crosses the tunnel while the xfrmctl daemon is restarted three times with a
restart stop (SIGUSR2, then SIGTERM): no packet lost, the same SPIs, every IKE SA adopted with
its rekey deadlines carried over (not restarted), and charon sees no new IKE_SA_INIT. Then the
adopted IKE SA still works with charon: charon rekeys the Child SA, we rekey the Child SA and the
IKE SA, our DPD is answered. (The rekey timers lie beyond the test, so a slow restart on a loaded
machine cannot rekey mid-restart; tests/ike/test_snapshot.py shows carried timers fire.) Then
kill -9 and a start: no state file, so a clean start with INITIAL_CONTACT and charon drops its
old SA. Finally a plain stop removes everything.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from interop import assert_only_esp, ping_stats, wait_for
from netlab import Network
from strongswan import Charon, swanctl_conf
from xfrmctl_host import Xfrmctl, write_psk

PSK = "restart lab secret, not for production"
A_ID, B_ID = "a.lab.example", "b.lab.example"
A_IP, B_IP = "10.95.0.1", "10.95.0.2"
# Rekey deadlines beyond the test: the restarts must carry them, not fire them (three restarts
# took 38 s in a quiet lab and over 60 s on a loaded machine).
CHILD_REKEY, IKE_REKEY = 900, 960
SLACK = 2  # seconds a carried deadline may move


def xfrmctl_config(workdir: Path, state: Path) -> Path:
    psk = write_psk(workdir, "a", PSK)
    cfg = workdir / "a.yaml"
    cfg.write_text(
        f"settings:\n  restart_state: {state}\n"
        f"connections:\n  rs:\n    local_addrs: [{A_IP}]\n    remote_addrs: [{B_IP}]\n"
        f"    local: {{id: {A_ID}, auth: psk}}\n    remote: {{id: {B_ID}, auth: psk}}\n"
        f"    psk_file: {psk}\n    rekey_time: {IKE_REKEY}s\n    rand_time: 0s\n"
        "    over_time: 120s\n    dpd_delay: 4s\n"
        "    children:\n      net:\n        mode: transport\n"
        f"        local_ts: [{A_IP}/32]\n        remote_ts: [{B_IP}/32]\n"
        f"        rekey_time: {CHILD_REKEY}s\n        life_time: 1200s\n        rand_time: 0s\n"
    )
    return cfg


def charon_config() -> str:
    conn = (
        f"  rs {{\n    version = 2\n    local_addrs = {B_IP}\n    remote_addrs = {A_IP}\n"
        "    proposals = aes256gcm16-prfsha384-x25519\n    rekey_time = 0s\n"
        f"    local {{\n      auth = psk\n      id = {B_ID}\n    }}\n"
        f"    remote {{\n      auth = psk\n      id = {A_ID}\n    }}\n"
        "    children {\n      net {\n        mode = transport\n"
        f"        local_ts = {B_IP}/32\n        remote_ts = {A_IP}/32\n"
        "        esp_proposals = aes256gcm16\n        rekey_time = 0s\n      }\n    }\n  }\n"
    )
    return swanctl_conf([conn], [(A_ID, B_ID, PSK)])


def child_spis(status: dict[str, Any]) -> tuple[str, ...]:
    """SPIs of the newest installed Child SA of the newest established IKE SA (a rekey
    briefly shows the old ones beside them)."""
    ikes = [i for i in status["ike_sas"] if i["state"] == "ESTABLISHED"]
    kids = [c for c in ikes[-1]["children"] if c["state"] == "INSTALLED"] if ikes else []
    return (kids[-1]["spi_in"], kids[-1]["spi_out"]) if kids else ()


def rekey_deadlines(da: Xfrmctl) -> list[tuple[float, float]]:
    """When the established IKE SA and its newest Child SA are due to rekey (monotonic), each
    as an interval: the daemon computes `rekey_in` (whole seconds) at some point between our
    request and its reply, which may take seconds under TCG."""
    sent = time.monotonic()
    status = da.status()
    received = time.monotonic()
    (ike,) = [i for i in status["ike_sas"] if i["state"] == "ESTABLISHED"]
    kids = [c for c in ike["children"] if c["state"] == "INSTALLED"]
    return [(sent + x["rekey_in"], received + x["rekey_in"] + 1) for x in (ike, kids[-1])]


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[1] + SLACK and b[0] <= a[1] + SLACK


def ike_spis(charon: Charon) -> tuple[str, ...]:
    """The established IKE SA's SPIs as charon lists them."""
    raw = charon.sa_summary("rs")
    found = re.findall(
        r"state=ESTABLISHED .*?initiator-spi=([0-9a-f]+) .*?responder-spi=([0-9a-f]+)", raw
    )
    return tuple(found[-1]) if found else ()


def restart_stop(da: Xfrmctl) -> None:
    """What the Ansible role does: SIGUSR2 (keep the tunnels), then the SIGTERM of a restart."""
    assert da.proc is not None
    da.proc.send_signal(signal.SIGUSR2)
    wait_for(lambda: "next stop is a restart stop" in da.log.read_text(), "SIGUSR2 seen", 30)
    assert da.stop() == 0, da.log.read_text()[-3000:]


def dpd_count(charon: Charon) -> int:
    """Empty INFORMATIONAL requests charon received: our liveness checks (RFC 7296 §2.4)."""
    return len(re.findall(r"parsed INFORMATIONAL request \d+ \[ \]", charon.log_text()))


def charon_inits(charon: Charon) -> int:
    return len(re.findall(r"parsed IKE_SA_INIT request", charon.log_text()))


@pytest.mark.long
def test_restarts_keep_the_tunnel_then_kill9_starts_clean(net: Network, lab_out: Path) -> None:
    workdir = lab_out / "restart-strongswan"
    shutil.rmtree(workdir, ignore_errors=True)  # charon appends to its log: start afresh
    workdir.mkdir(parents=True, exist_ok=True)
    a, b = net.host("a"), net.host("b")
    sw, _ = net.bridge([(a, f"{A_IP}/24"), (b, f"{B_IP}/24")])
    state = Path("/run/xfrmctl-lab") / f"{a.ns}-restart.json"
    charon = Charon(b, workdir, charon_config())
    da = Xfrmctl(a, workdir, xfrmctl_config(workdir, state))
    try:
        da.cli("up", "rs")
        before = child_spis(da.status())
        deadlines = rekey_deadlines(da)
        ike_before = ike_spis(charon)
        assert before and ike_before, (da.status(), charon.sa_summary("rs"))
        inits = charon_inits(charon)
        assert inits == 1, charon.log_text()[-3000:]
        with net.capture(sw, "br0") as cap:
            pinger = a.popen(
                ["ping", "-n", "-q", "-i", "0.05", "-W", "2", B_IP],  # until SIGINT
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            time.sleep(1)
            restarts_began = time.monotonic()
            for _ in range(3):
                restart_stop(da)
                assert state.stat().st_mode & 0o777 == 0o600
                assert len(a.xfrm_sa_counters()) == 2, "the kernel state went with the daemon"
                da.spawn().wait_ready()
                assert not state.exists(), "the state file outlived its adoption"
                report = da.status()
                assert report["ike_sas"][0]["adopted"] is True, report
                assert child_spis(report) == before, (report, before)
                assert ike_spis(charon) == ike_before
                carried = rekey_deadlines(da)
                assert all(map(overlap, carried, deadlines)), (
                    "rekey deadlines not carried over",
                    carried,
                    deadlines,
                )
            restarts_took = time.monotonic() - restarts_began
            time.sleep(1)
            pinger.send_signal(signal.SIGINT)  # ping prints its statistics and exits
            out, _ = pinger.communicate(timeout=30)
        sent, received = ping_stats(out)
        # 20 pings a second were due all along (half that rate proves it never stalled)
        assert sent > 10 * restarts_took and received == sent, (out, restarts_took)
        assert_only_esp(cap.text)
        assert charon_inits(charon) == inits, "charon saw a new IKE_SA_INIT"
        assert "clean start" not in da.log.read_text(), da.log.read_text()

        # The adopted IKE SA keeps working with charon: our rekeys, our DPD, its rekey.
        dpds = dpd_count(charon)
        da.cli("rekey", "rs")
        wait_for(lambda: child_spis(da.status()) not in ((), before), "our Child SA rekey", 30)
        da.cli("rekey", "rs", "--ike")
        wait_for(lambda: ike_spis(charon) not in ((), ike_before), "our IKE SA rekey", 30)
        assert "rekeyed to" in da.log.read_text()
        ours = child_spis(da.status())
        charon.swanctl("--rekey", "--child", "net")
        wait_for(lambda: child_spis(da.status()) not in ((), ours), "charon's Child SA rekey", 30)
        wait_for(lambda: dpd_count(charon) > dpds, "our DPD reaching charon", 20)
        assert charon.ike_sa_count("rs") == 1
        assert "is dead" not in da.log.read_text(), da.log.read_text()
        assert a.ping(B_IP, count=5, interval=0.1)
        assert charon_inits(charon) == inits, "a rekey or DPD made charon start over"

        # kill -9: no state file, so a clean start with INITIAL_CONTACT.
        contacts = charon.log_text().count("N(INIT_CONTACT)")
        da.kill9()
        assert not state.exists()
        da.spawn().wait_ready()
        assert "clean start: no state file" in da.log.read_text(), da.log.read_text()
        assert "stale XFRM objects" in da.log.read_text(), da.log.read_text()
        da.cli("up", "rs")
        assert da.status()["ike_sas"][0]["adopted"] is False
        wait_for(lambda: charon.ike_sa_count("rs") == 1, "charon to drop its old IKE SA", 30)
        assert charon_inits(charon) == inits + 1
        assert charon.log_text().count("N(INIT_CONTACT)") == contacts + 1
        assert a.ping(B_IP, count=5, interval=0.1)

        # A plain stop still tears everything down.
        assert da.stop() == 0
        assert a.xfrm_state_text().strip() == "", a.xfrm_state_text()
        assert a.xfrm_dir_policies() == "", a.xfrm_policy_text()
        wait_for(lambda: charon.ike_sa_count("rs") == 0, "charon to hear our DELETE", 20)
        assert not state.exists()
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\n--- xfrmctl log ---\n{da.log.read_text()[-5000:]}\n"
            f"--- charon log ---\n{charon.log_text()[-5000:]}"
        ) from None
    finally:
        da.stop()
        charon.stop()
