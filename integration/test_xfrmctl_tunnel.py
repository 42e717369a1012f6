"""xfrmctl against xfrmctl in the real kernel: negotiate, carry traffic, show status, tear down."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from netlab import Network
from xfrmctl_host import Xfrmctl, write_psk


def config(
    workdir: Path,
    name: str,
    me: str,
    peer: str,
    mode: str,
    protocol: str,
    local_ts: str,
    remote_ts: str,
) -> Path:
    psk = write_psk(workdir, name)
    proposals = "esp_proposals: [aes256gcm16]" if protocol == "esp" else "ah_proposals: [sha256]"
    cfg = workdir / f"{name}.yaml"
    cfg.write_text(f"""
connections:
  tun:
    local_addrs: [{me}]
    remote_addrs: [{peer}]
    proposals: [aes256gcm16-prfsha384-x25519]
    local: {{id: {name}.lab.example, auth: psk}}
    remote: {{id: {"b" if name == "a" else "a"}.lab.example, auth: psk}}
    psk_file: {psk}
    children:
      net:
        mode: {mode}
        protocol: {protocol}
        local_ts: [{local_ts}]
        remote_ts: [{remote_ts}]
        {proposals}
""")
    return cfg


@pytest.mark.parametrize(
    ("mode", "protocol"),
    [("transport", "esp"), ("tunnel", "esp"), ("transport", "ah"), ("tunnel", "ah")],
    ids=["esp-transport", "esp-tunnel", "ah-transport", "ah-tunnel"],
)
def test_up_traffic_status_down(net: Network, lab_out: Path, mode: str, protocol: str) -> None:
    workdir = lab_out / f"xfrmctl-{mode}-{protocol}"
    workdir.mkdir(parents=True, exist_ok=True)
    a, b = net.host("a"), net.host("b")
    sw, _ = net.bridge([(a, "10.99.0.1/24"), (b, "10.99.0.2/24")])
    da = Xfrmctl(
        a,
        workdir,
        config(
            workdir, "a", "10.99.0.1", "10.99.0.2", mode, protocol, "10.99.0.1/32", "10.99.0.2/32"
        ),
        wait=False,
    )
    db = Xfrmctl(
        b,
        workdir,
        config(
            workdir, "b", "10.99.0.2", "10.99.0.1", mode, protocol, "10.99.0.2/32", "10.99.0.1/32"
        ),
    )
    da.wait_ready()
    try:
        up = da.cli("up", "tun")
        assert "tun" in up.stdout

        with net.capture(sw, "br0") as cap:
            assert a.ping("10.99.0.2", count=5), "no traffic through the negotiated SAs"
        text = cap.text
        if protocol == "esp":
            assert "ESP(" in text and "ICMP echo" not in text, text
        else:
            blocks = text.split("\n")
            assert "AH(" in text, text
            assert all("AH(" in ln for ln in blocks if "proto ICMP" in ln), text

        status = json.loads(da.cli("status", "--json").stdout)
        (ike,) = status["ike_sas"]
        assert ike["name"] == "tun" and ike["state"] == "ESTABLISHED"
        assert ike["local_addr"] == "10.99.0.1" and ike["remote_addr"] == "10.99.0.2"
        assert ike["proposal"].startswith("aes256gcm16")
        (child,) = ike["children"]
        assert child["state"] == "INSTALLED"
        assert child["mode"] == mode and child["protocol"].lower() == protocol
        assert child["local_ts"] == ["10.99.0.1/32"] and child["remote_ts"] == ["10.99.0.2/32"]
        assert child["packets_out"] >= 5 and child["bytes_in"] > 0, child
        spi_in = int(child["spi_in"], 16)
        assert any(sa.spi == spi_in and sa.packets >= 5 for sa in a.xfrm_sa_counters())

        da.cli("down", "tun")
        time.sleep(0.5)
        for host in (a, b):
            assert host.xfrm_state_text().strip() == "", host.xfrm_state_text()
            # Only the daemon's own per-socket bypass policies ("socket in/out") may remain.
            assert host.xfrm_dir_policies() == "", host.xfrm_policy_text()
    finally:
        codes = (da.stop(), db.stop())
    assert codes == (0, 0), (da.log.read_text(), db.log.read_text())
    for host in (a, b):
        assert host.xfrm_state_text().strip() == ""
        assert host.xfrm_policy_text().strip() == "", host.xfrm_policy_text()


def test_net_to_net_between_gateways(net: Network, lab_out: Path) -> None:
    """Scenario 2: left — gw-a ==ESP== gw-b — right; xfrmctl on the gateways protects subnets."""
    workdir = lab_out / "xfrmctl-net-to-net"
    workdir.mkdir(parents=True, exist_ok=True)
    left, gwa, gwb, _right, sw = net.gateways()
    da = Xfrmctl(
        gwa,
        workdir,
        config(
            workdir, "a", "192.0.2.1", "192.0.2.2", "tunnel", "esp", "10.1.0.0/16", "10.2.0.0/16"
        ),
        wait=False,
    )
    db = Xfrmctl(
        gwb,
        workdir,
        config(
            workdir, "b", "192.0.2.2", "192.0.2.1", "tunnel", "esp", "10.2.0.0/16", "10.1.0.0/16"
        ),
    )
    da.wait_ready()
    try:
        da.cli("up", "tun")
        with net.capture(sw, "br0") as cap:
            assert left.ping("10.2.0.2", count=5), "no traffic between the subnets"
        assert "ESP(" in cap.text and "ICMP echo" not in cap.text, cap.text
        (ike,) = da.status()["ike_sas"]
        (child,) = ike["children"]
        assert child["mode"] == "tunnel"
        assert child["local_ts"] == ["10.1.0.0/16"] and child["remote_ts"] == ["10.2.0.0/16"]
        assert child["packets_out"] >= 5 and child["packets_in"] >= 5, child
        # The gateways' own traffic is outside the selectors: it is neither protected nor held.
        assert gwa.ping("192.0.2.2", count=1)
        da.cli("down", "tun")
        time.sleep(0.5)
        for host in (gwa, gwb):
            assert host.xfrm_state_text().strip() == "", host.xfrm_state_text()
            assert host.xfrm_dir_policies() == "", host.xfrm_policy_text()
    finally:
        codes = (da.stop(), db.stop())
    assert codes == (0, 0), (da.log.read_text(), db.log.read_text())
