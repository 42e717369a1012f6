"""xfrmctl against strongSwan's charon in the real kernel (issue 5, scenario 4).

Both directions (xfrmctl initiates, strongSwan initiates), PSK and ECDSA P-256 certificates,
and two proposal families (AES-GCM + X25519, AES-CBC/HMAC + MODP-3072). Four combinations
cover every value of each axis. Python starts very slowly under TCG, so one xfrmctl daemon and
one charon serve all scenarios: each scenario is its own connection on its own address pair.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from interop import (
    A_ID,
    B_ID,
    CBC,
    CBC_IKE,
    GCM,
    GCM_IKE,
    PSK,
    Pki,
    Scenario,
    make_pki,
    non_socket_policies,
    ping_from,
    wait_for,
    xfrmctl_connection,
)
from netlab import Host, Network
from strongswan import Charon, PeerFiles, swanctl_conf, swanctl_connection
from xfrmctl_host import Xfrmctl

SCENARIOS = [
    Scenario("xfrmctl", "psk", GCM_IKE, "aes256gcm16", "tunnel", GCM, 1),
    Scenario("strongswan", "psk", CBC_IKE, "aes128-sha256", "tunnel", CBC, 2),
    Scenario("xfrmctl", "pubkey", CBC_IKE, "aes128-sha256", "transport", CBC, 3),
    Scenario("strongswan", "pubkey", GCM_IKE, "aes256gcm16", "tunnel", GCM, 4),
]


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


def charon_connection(sc: Scenario) -> str:
    return swanctl_connection(
        name=sc.id,
        child="net",
        local_addr=sc.b_addr,
        remote_addr=sc.a_addr,
        local_id=B_ID,
        remote_id=A_ID,
        auth=sc.auth,
        ike_proposal=sc.ike,
        esp_proposal=sc.esp,
        mode=sc.mode,
        local_ts=f"{sc.b_addr}/32",
        remote_ts=f"{sc.a_addr}/32",
        cert_name="b",
    )


@dataclass
class Lab:
    net: Network
    a: Host
    b: Host
    sw: Host
    xfrmctl: Xfrmctl
    charon: Charon


@pytest.fixture(scope="module")
def lab(pki: Pki) -> Iterator[Lab]:
    """Host a runs xfrmctl, host b runs charon; one address pair per scenario on one switch."""
    base = os.environ.get("XFRMCTL_LAB_OUT")
    root = Path(base) if base else Path(tempfile.mkdtemp())
    workdir = root / "interop-strongswan"
    workdir.mkdir(parents=True, exist_ok=True)
    net = Network(workdir)
    try:
        a, b = net.host("a"), net.host("b")
        first = SCENARIOS[0]
        sw, devs = net.bridge([(a, f"{first.a_addr}/24"), (b, f"{first.b_addr}/24")])
        for sc in SCENARIOS[1:]:
            a.run(f"ip addr add {sc.a_addr}/24 dev {devs['a']}")
            b.run(f"ip addr add {sc.b_addr}/24 dev {devs['b']}")
        b_cert, b_key = pki.leaves[B_ID]
        charon = Charon(
            b,
            workdir,
            swanctl_conf([charon_connection(sc) for sc in SCENARIOS], [(A_ID, B_ID, PSK)]),
            PeerFiles(cert=b_cert, key=b_key, ca=pki.ca),
        )
        cfg = workdir / "a.yaml"
        conns = "".join(xfrmctl_connection(workdir, sc, pki) for sc in SCENARIOS)
        cfg.write_text("connections:\n" + conns)
        xfrmctl = Xfrmctl(a, workdir, cfg)
        yield Lab(net, a, b, sw, xfrmctl, charon)
        codes = (xfrmctl.stop(), charon.stop())
        assert codes[0] == 0, xfrmctl.log.read_text()
        for host in (a, b):
            assert host.xfrm_state_text().strip() == "", host.xfrm_state_text()
            assert host.xfrm_policy_text().strip() == "", host.xfrm_policy_text()
    finally:
        net.close()


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_interop(lab: Lab, sc: Scenario) -> None:
    a, b, charon, da = lab.a, lab.b, lab.charon, lab.xfrmctl
    try:
        if sc.initiator == "xfrmctl":
            da.cli("up", sc.id)
        else:
            charon.initiate(sc.id, "net")
        # Poll the kernel (cheap) rather than the CLI (a Python start, slow under TCG).
        wait_for(lambda: len(a.xfrm_sa_counters()) == 2, "xfrmctl to install both ESP SAs")

        with lab.net.capture(lab.sw, "br0", f"host {sc.a_addr}") as cap:
            assert ping_from(a, sc.a_addr, sc.b_addr, 4), "no traffic through the SAs"
            assert ping_from(b, sc.b_addr, sc.a_addr, 2), "no traffic from strongSwan's side"
        assert "ESP(" in cap.text, cap.text
        assert "ICMP echo" not in cap.text, cap.text

        status = da.status()
        (ike,) = [s for s in status["ike_sas"] if s["name"] == sc.id]
        assert ike["state"] == "ESTABLISHED", ike
        assert ike["initiator"] is (sc.initiator == "xfrmctl"), ike
        assert ike["local_addr"] == sc.a_addr and ike["remote_addr"] == sc.b_addr, ike
        assert ike["proposal"] == sc.ike, ike
        assert ike["local_id"] == A_ID and ike["remote_id"] == B_ID, ike
        (child,) = ike["children"]
        assert child["name"] == "net" and child["state"] == "INSTALLED", child
        assert child["mode"] == sc.mode and child["protocol"].lower() == "esp", child
        assert child["proposal"] == sc.esp, child
        assert child["local_ts"] == [f"{sc.a_addr}/32"], child
        assert child["remote_ts"] == [f"{sc.b_addr}/32"], child
        assert child["packets_out"] >= 6 and child["packets_in"] >= 6, child
        spi_in = int(child["spi_in"], 16)
        assert any(sa.spi == spi_in and sa.packets >= 6 for sa in a.xfrm_sa_counters())

        # strongSwan agrees on what was negotiated.
        raw = charon.sa_summary(sc.id)
        assert "state=ESTABLISHED" in raw, raw
        for field in sc.swan_ike:
            assert field in raw, (field, raw)
        swan_spi_in = {int(x, 16) for x in re.findall(r"\bspi-in=([0-9a-fA-F]+)", raw)}
        assert int(child["spi_out"], 16) in swan_spi_in, raw

        da.cli("down", sc.id)
        wait_for(lambda: charon.ike_sa_count(sc.id) == 0, "strongSwan to drop the IKE SA", 30)
        time.sleep(0.5)
        for host in (a, b):
            assert host.xfrm_state_text().strip() == "", host.xfrm_state_text()
            assert non_socket_policies(host) == "", host.xfrm_policy_text()
    except AssertionError as exc:
        da.cli("down", sc.id, check=False)  # do not leave SAs behind for the next scenario
        raise AssertionError(
            f"{exc}\n--- xfrmctl log ---\n{da.log.read_text()}\n"
            f"--- charon log ---\n{charon.log_text()}"
        ) from None


def ike_spis(raw: str) -> set[str]:
    """Initiator SPIs of the established IKE SAs in `swanctl --list-sas --raw` output."""
    return set(re.findall(r"state=ESTABLISHED .*?initiator-spi=([0-9a-f]+)", raw))


def test_rekey_by_strongswan(lab: Lab) -> None:
    """strongSwan rekeys the Child SA, then the IKE SA: traffic keeps flowing on new SPIs."""
    sc = SCENARIOS[1]  # strongSwan initiates, PSK, AES-CBC/HMAC
    a, charon, da = lab.a, lab.charon, lab.xfrmctl
    try:
        charon.initiate(sc.id, "net")
        wait_for(lambda: len(a.xfrm_sa_counters()) == 2, "xfrmctl to install both ESP SAs")
        old = {sa.spi for sa in a.xfrm_sa_counters()}

        charon.swanctl("--rekey", "--ike", sc.id, "--child", "net")
        wait_for(
            lambda: len({sa.spi for sa in a.xfrm_sa_counters()} - old) == 2,
            "xfrmctl to install the rekeyed Child SA",
        )
        spi_before = ike_spis(charon.sa_summary(sc.id))
        charon.swanctl("--rekey", "--ike", sc.id)

        def ike_rekeyed() -> bool:
            spis = ike_spis(charon.sa_summary(sc.id))
            return len(spis) == 1 and not spis & spi_before

        wait_for(ike_rekeyed, "the IKE SA rekey to complete", 60)
        raw = charon.sa_summary(sc.id)

        with lab.net.capture(lab.sw, "br0", f"host {sc.a_addr}") as cap:
            assert ping_from(a, sc.a_addr, sc.b_addr, 4), "no traffic after the rekeys"
        assert "ESP(" in cap.text and "ICMP echo" not in cap.text, cap.text

        status = da.status()
        (ike,) = [s for s in status["ike_sas"] if s["name"] == sc.id]
        assert ike["state"] == "ESTABLISHED" and ike["proposal"] == sc.ike, ike
        (child,) = [c for c in ike["children"] if c["state"] == "INSTALLED"]
        assert int(child["spi_in"], 16) not in old and int(child["spi_out"], 16) not in old
        assert child["packets_out"] >= 4 and child["packets_in"] >= 4, child
        swan_spi_in = {int(x, 16) for x in re.findall(r"\bspi-in=([0-9a-fA-F]+)", raw)}
        assert int(child["spi_out"], 16) in swan_spi_in, raw

        da.cli("down", sc.id)
        wait_for(lambda: charon.ike_sa_count(sc.id) == 0, "strongSwan to drop the IKE SA", 30)
        time.sleep(0.5)
        for host in (a, lab.b):
            assert host.xfrm_state_text().strip() == "", host.xfrm_state_text()
            assert non_socket_policies(host) == "", host.xfrm_policy_text()
    except AssertionError as exc:
        da.cli("down", sc.id, check=False)
        raise AssertionError(
            f"{exc}\n--- xfrmctl log ---\n{da.log.read_text()}\n"
            f"--- charon log ---\n{charon.log_text()}"
        ) from None
