"""xfrmctl against Libreswan 4.10 (unpacked by lab.py install) in the real kernel (issue 4).

The same four combinations as the strongSwan interop test: both directions, PSK and ECDSA P-256
certificates, AES-GCM + X25519 and AES-CBC/HMAC + MODP-3072. One xfrmctl daemon and one pluto
serve all scenarios, each scenario on its own address pair (pluto picks the responder's
connection by address before it has seen an ID). Libreswan's view of what was negotiated comes
from its log, the only place pluto 4.10 prints the algorithms of a responder's SA.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from interop import (
    A_ID,
    B_ID,
    CBC_IKE,
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
from libreswan import LibreswanConn, Pluto
from netlab import Host, Network
from strongswan import PeerFiles
from xfrmctl_host import Xfrmctl

# xfrmctl proposal -> (Libreswan ike=/esp= syntax, what pluto logs for the negotiated SA)
LIBRESWAN_IKE = {
    GCM_IKE: (
        "aes_gcm256-sha2_384-dh31",
        "cipher=AES_GCM_16_256 integ=n/a prf=HMAC_SHA2_384 group=DH31",
    ),
    CBC_IKE: (
        "aes128-sha2_256-modp3072",
        "cipher=AES_CBC_128 integ=HMAC_SHA2_256_128 prf=HMAC_SHA2_256 group=MODP3072",
    ),
}
LIBRESWAN_ESP = {
    "aes256gcm16": ("aes_gcm256", "xfrm=AES_GCM_16_256-NONE"),
    "aes128-sha256": ("aes128-sha2_256", "xfrm=AES_CBC_128-HMAC_SHA2_256_128"),
}
SCENARIOS = [
    Scenario("xfrmctl", "psk", GCM_IKE, "aes256gcm16", "tunnel", (), 1),
    Scenario("libreswan", "psk", CBC_IKE, "aes128-sha256", "tunnel", (), 2),
    Scenario("xfrmctl", "pubkey", CBC_IKE, "aes128-sha256", "transport", (), 3),
    Scenario("libreswan", "pubkey", GCM_IKE, "aes256gcm16", "tunnel", (), 4),
]


def pluto_connection(sc: Scenario) -> LibreswanConn:
    return LibreswanConn(
        name=sc.id,
        left=sc.b_addr,
        right=sc.a_addr,
        left_id=B_ID,
        right_id=A_ID,
        auth=sc.auth,
        ike=LIBRESWAN_IKE[sc.ike][0],
        esp=LIBRESWAN_ESP[sc.esp][0],
        mode=sc.mode,
    )


@dataclass
class Lab:
    net: Network
    a: Host
    b: Host
    sw: Host
    xfrmctl: Xfrmctl
    pluto: Pluto


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


def scenario_hosts(net: Network) -> tuple[Host, Host, Host]:
    """Hosts a and b on one switch, each holding its address of every scenario."""
    a, b = net.host("a"), net.host("b")
    sw, devs = net.bridge([(a, f"{SCENARIOS[0].a_addr}/24"), (b, f"{SCENARIOS[0].b_addr}/24")])
    for sc in SCENARIOS[1:]:
        for host, addr in ((a, sc.a_addr), (b, sc.b_addr)):
            host.run(["ip", "addr", "add", f"{addr}/24", "dev", devs[host.name]])
    return a, b, sw


@pytest.fixture(scope="module")
def lab(pki: Pki) -> Iterator[Lab]:
    """Host a runs xfrmctl, host b runs pluto; one address pair per scenario on one switch."""
    workdir = Path(os.environ.get("XFRMCTL_LAB_OUT") or tempfile.mkdtemp()) / "interop-libreswan"
    workdir.mkdir(parents=True, exist_ok=True)
    net = Network(workdir)
    try:
        a, b, sw = scenario_hosts(net)
        # The daemon first: its Python start is the slow part under TCG, pluto's is not.
        cfg = workdir / "a.yaml"
        conns = "".join(xfrmctl_connection(workdir, sc, pki) for sc in SCENARIOS)
        cfg.write_text("connections:\n" + conns)
        xfrmctl = Xfrmctl(a, workdir, cfg)
        b_cert, b_key = pki.leaves[B_ID]
        pluto = Pluto(
            b,
            workdir,
            [pluto_connection(sc) for sc in SCENARIOS],
            [(B_ID, A_ID, PSK)],
            PeerFiles(cert=b_cert, key=b_key, ca=pki.ca),
        )
        yield Lab(net, a, b, sw, xfrmctl, pluto)
        assert xfrmctl.stop() == 0, xfrmctl.log.read_text()
        assert a.xfrm_state_text().strip() == "", a.xfrm_state_text()
        assert a.xfrm_policy_text().strip() == "", a.xfrm_policy_text()
        pluto.stop()
        assert b.xfrm_state_text().strip() == "", b.xfrm_state_text()
        assert "10.99." not in b.xfrm_policy_text(), b.xfrm_policy_text()
    finally:
        net.close()


def pluto_established(pluto: Pluto, sc: Scenario) -> tuple[str, str]:
    """Pluto's log lines announcing the scenario's IKE SA and Child SA."""
    lines = [line for line in pluto.conn_log(sc.id) if f'"{sc.id}" #' in line]
    # pluto logs the IKE algorithms when it sends IKE_SA_INIT's reply or IKE_AUTH's request.
    ike = [line for line in lines if "{cipher=" in line]
    child = [line for line in lines if "established Child SA" in line]
    if not ike or not child or not any("established IKE SA" in line for line in lines):
        raise AssertionError(
            "pluto did not log an established IKE and Child SA:\n" + "\n".join(lines)
        )
    return ike[-1], child[-1]


def xfrmctl_child(da: Xfrmctl, sc: Scenario) -> dict[str, Any]:
    """The scenario's Child SA from `xfrmctl status --json`, checked with its IKE SA."""
    status = da.status()
    (ike,) = [s for s in status["ike_sas"] if s["name"] == sc.id]
    want = {
        "state": "ESTABLISHED",
        "initiator": sc.initiator == "xfrmctl",
        "local_addr": sc.a_addr,
        "remote_addr": sc.b_addr,
        "local_id": A_ID,
        "remote_id": B_ID,
        "proposal": sc.ike,
    }
    assert {k: ike[k] for k in want} == want, ike
    (child,) = ike["children"]
    want = {
        "name": "net",
        "state": "INSTALLED",
        "mode": sc.mode,
        "protocol": "esp",
        "proposal": sc.esp,
        "local_ts": [f"{sc.a_addr}/32"],
        "remote_ts": [f"{sc.b_addr}/32"],
    }
    got = {k: child[k].lower() if k == "protocol" else child[k] for k in want}
    assert got == want, child
    assert min(child["packets_out"], child["packets_in"]) >= 6, child
    return dict(child)


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_interop(lab: Lab, sc: Scenario) -> None:
    a, b, pluto, da = lab.a, lab.b, lab.pluto, lab.xfrmctl
    try:
        if sc.initiator == "xfrmctl":
            da.cli("up", sc.id)
        else:
            pluto.initiate(sc.id)
        # Poll the kernel (cheap) rather than the CLI (a Python start, slow under TCG).
        wait_for(lambda: len(a.xfrm_sa_counters()) == 2, "xfrmctl to install both ESP SAs")

        with lab.net.capture(lab.sw, "br0", f"host {sc.a_addr}") as cap:
            assert ping_from(a, sc.a_addr, sc.b_addr, 4), "no traffic through the SAs"
            assert ping_from(b, sc.b_addr, sc.a_addr, 2), "no traffic from Libreswan's side"
        assert "ESP(" in cap.text, cap.text
        assert "ICMP echo" not in cap.text, cap.text

        child = xfrmctl_child(da, sc)
        spi_in = int(child["spi_in"], 16)
        assert any(sa.spi == spi_in and sa.packets >= 6 for sa in a.xfrm_sa_counters())

        # Libreswan agrees on algorithms, mode, selectors and SPIs.
        ike_line, child_line = pluto_established(pluto, sc)
        assert LIBRESWAN_IKE[sc.ike][1] in ike_line, ike_line
        assert LIBRESWAN_ESP[sc.esp][1] in child_line, child_line
        assert f"IPsec {sc.mode} [{sc.b_addr}-{sc.b_addr}:0-65535 0]" in child_line, child_line
        assert f"-> [{sc.a_addr}-{sc.a_addr}:0-65535 0]" in child_line, child_line
        spis = re.search(r"ESP(?:/\w+)*=>0x([0-9a-f]+) <0x([0-9a-f]+)", child_line)
        assert spis is not None, child_line
        assert int(spis[1], 16) == spi_in and int(spis[2], 16) == int(child["spi_out"], 16)

        da.cli("down", sc.id)
        wait_for(lambda: not pluto.established(sc.id), "Libreswan to drop the IKE SA", 30)
        time.sleep(0.5)
        assert a.xfrm_state_text().strip() == "", a.xfrm_state_text()
        assert non_socket_policies(a) == "", a.xfrm_policy_text()
        assert sc.a_addr not in b.xfrm_state_text(), b.xfrm_state_text()
    except AssertionError as exc:
        da.cli("down", sc.id, check=False)  # do not leave SAs behind for the next scenario
        raise AssertionError(
            f"{exc}\n--- xfrmctl log ---\n{da.log.read_text()}\n"
            f"--- pluto log (connection {sc.id}) ---\n" + "\n".join(pluto.conn_log(sc.id))
        ) from None
