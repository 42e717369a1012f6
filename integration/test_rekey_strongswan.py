"""xfrmctl-initiated rekeys against strongSwan under a steady ping (issue 9, section 4): three
Child SA rekeys and one IKE SA rekey while 20 packets a second flow, and none is lost. The
strongSwan side never rekeys itself (rekey_time = 0), so every rekey is xfrmctl's."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from interop import assert_only_esp, ping_stats
from netlab import Network
from strongswan import Charon, swanctl_conf
from xfrmctl_host import Xfrmctl, write_psk

PSK = "rekey lab secret, not for production"
A_ID, B_ID = "a.lab.example", "b.lab.example"
A_IP, B_IP = "10.94.0.1", "10.94.0.2"


def xfrmctl_config(workdir: Path) -> Path:
    psk = write_psk(workdir, "a", PSK)
    cfg = workdir / "a.yaml"
    cfg.write_text(
        f"connections:\n  rk:\n    local_addrs: [{A_IP}]\n    remote_addrs: [{B_IP}]\n"
        f"    local: {{id: {A_ID}, auth: psk}}\n    remote: {{id: {B_ID}, auth: psk}}\n"
        f"    psk_file: {psk}\n    rekey_time: 25s\n    rand_time: 0s\n    over_time: 60s\n"
        "    children:\n      net:\n        mode: transport\n"
        f"        local_ts: [{A_IP}/32]\n        remote_ts: [{B_IP}/32]\n"
        "        rekey_time: 10s\n        life_time: 60s\n        rand_time: 0s\n"
    )
    return cfg


def charon_config() -> str:
    conn = (
        f"  rk {{\n    version = 2\n    local_addrs = {B_IP}\n    remote_addrs = {A_IP}\n"
        "    proposals = aes256gcm16-prfsha384-x25519\n    rekey_time = 0s\n"
        f"    local {{\n      auth = psk\n      id = {B_ID}\n    }}\n"
        f"    remote {{\n      auth = psk\n      id = {A_ID}\n    }}\n"
        "    children {\n      net {\n        mode = transport\n"
        f"        local_ts = {B_IP}/32\n        remote_ts = {A_IP}/32\n"
        "        esp_proposals = aes256gcm16\n        rekey_time = 0s\n      }\n    }\n  }\n"
    )
    return swanctl_conf([conn], [(A_ID, B_ID, PSK)])


def ike_spi(raw: str) -> str:
    found = re.findall(r"state=ESTABLISHED .*?initiator-spi=([0-9a-f]+)", raw)
    assert len(found) == 1, raw
    return str(found[0])


@pytest.mark.long
def test_xfrmctl_rekeys_against_strongswan_lose_nothing(net: Network, lab_out: Path) -> None:
    workdir = lab_out / "rekey-strongswan"
    workdir.mkdir(parents=True, exist_ok=True)
    a, b = net.host("a"), net.host("b")
    sw, _ = net.bridge([(a, f"{A_IP}/24"), (b, f"{B_IP}/24")])
    charon = Charon(b, workdir, charon_config())
    da = Xfrmctl(a, workdir, xfrmctl_config(workdir))
    try:
        da.cli("up", "rk")
        first_ike = ike_spi(charon.sa_summary("rk"))
        first = da.status()["ike_sas"][0]["children"][0]
        with net.capture(sw, "br0") as cap:
            out = a.run(f"ping -n -q -i 0.05 -c 660 -W 2 {B_IP}", check=False, timeout=120)
        sent, received = ping_stats(out.stdout)
        assert sent == 660 and received == sent, out.stdout
        assert_only_esp(cap.text)
        log = da.log.read_text()
        assert log.count("Child SA ready") >= 3 and "rekeyed to" in log, log[-4000:]
        assert ike_spi(charon.sa_summary("rk")) != first_ike, "strongSwan kept the old IKE SA"
        (ike,) = da.status()["ike_sas"]
        (child,) = [c for c in ike["children"] if c["state"] == "INSTALLED"]
        assert child["spi_in"] != first["spi_in"] and child["spi_out"] != first["spi_out"]
        da.cli("down", "rk")
        deadline = time.monotonic() + 30
        while charon.ike_sa_count("rk") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert charon.ike_sa_count("rk") == 0
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\n--- xfrmctl log ---\n{da.log.read_text()[-5000:]}\n"
            f"--- charon log ---\n{charon.log_text()[-5000:]}"
        ) from None
    finally:
        codes = (da.stop(), charon.stop())
    assert codes[0] == 0
    assert a.xfrm_state_text().strip() == "", a.xfrm_state_text()
