"""xfrmctl against xfrmctl in the real kernel: negotiate, carry traffic, show status, tear down."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from netlab import Host, Network
from prometheus_client.parser import text_string_to_metric_families
from xfrmctl_host import Xfrmctl, write_psk

VARIANTS = [("transport", "esp"), ("tunnel", "esp"), ("transport", "ah"), ("tunnel", "ah")]


def connection(name: str, me: str, peer: str, psk: Path, **child: str) -> str:
    """One connection's YAML; IDs carry the connection's name, so that a responder holding
    several connections to the same peer address picks the one the initiator means."""
    other = "b" if name.startswith("a") else "a"
    suffix = name[1:]
    proposals = (
        "esp_proposals: [aes256gcm16]" if child["protocol"] == "esp" else "ah_proposals: [sha256]"
    )
    return f"""
  tun{suffix}:
    local_addrs: [{me}]
    remote_addrs: [{peer}]
    proposals: [aes256gcm16-prfsha384-x25519]
    local: {{id: {name}.lab.example, auth: psk}}
    remote: {{id: {other}{suffix}.lab.example, auth: psk}}
    psk_file: {psk}
    children:
      net:
        mode: {child["mode"]}
        protocol: {child["protocol"]}
        local_ts: [{child["local_ts"]}]
        remote_ts: [{child["remote_ts"]}]
        {proposals}
"""


def config(workdir: Path, name: str, me: str, peer: str, conns: dict[str, dict[str, str]]) -> Path:
    psk = write_psk(workdir, name)
    cfg = workdir / f"{name}.yaml"
    body = "".join(connection(name + sfx, me, peer, psk, **c) for sfx, c in conns.items())
    cfg.write_text("connections:" + body)
    return cfg


def host_to_host(me: str, peer: str) -> dict[str, dict[str, str]]:
    return {
        f"-{mode}-{protocol}": {
            "mode": mode,
            "protocol": protocol,
            "local_ts": f"{me}/32",
            "remote_ts": f"{peer}/32",
        }
        for mode, protocol in VARIANTS
    }


@pytest.mark.long
def test_up_traffic_status_down(net: Network, lab_out: Path) -> None:
    """ESP and AH, each in transport and tunnel mode, one after the other between one pair of
    daemons: each variant is brought up, carries traffic (protected on the wire), shows in
    status, and leaves nothing in either kernel after `down`."""
    workdir = lab_out / "xfrmctl-host-to-host"
    workdir.mkdir(parents=True, exist_ok=True)
    a, b = net.host("a"), net.host("b")
    sw, _ = net.bridge([(a, "10.99.0.1/24"), (b, "10.99.0.2/24")])
    cfg_a = config(workdir, "a", "10.99.0.1", "10.99.0.2", host_to_host("10.99.0.1", "10.99.0.2"))
    cfg_a.write_text("settings:\n  key_export: true\n" + cfg_a.read_text())  # xfrmctl keys
    cfg_b = config(workdir, "b", "10.99.0.2", "10.99.0.1", host_to_host("10.99.0.2", "10.99.0.1"))
    # a's daemon and CLI run as a user runs them (the console script, exec'd cold), not
    # forked from the lab's zygote as elsewhere
    da = Xfrmctl(a, workdir, cfg_a, wait=False, cold=True)
    db = Xfrmctl(b, workdir, cfg_b)
    da.wait_ready()
    try:
        for mode, protocol in VARIANTS:
            up_traffic_status_down(net, sw, da, b, mode, protocol)
    finally:
        codes = (da.stop(), db.stop())
    assert codes == (0, 0), (da.log.read_text(), db.log.read_text())
    for host in (a, b):
        assert host.xfrm_state_text().strip() == ""
        assert host.xfrm_policy_text().strip() == "", host.xfrm_policy_text()


def up_traffic_status_down(
    net: Network, sw: Host, da: Xfrmctl, b: Host, mode: str, protocol: str
) -> None:
    name, a = f"tun-{mode}-{protocol}", da.host
    with net.capture(sw, "br0") as cap:
        up = da.cli("up", name)
        assert name in up.stdout
        assert a.ping("10.99.0.2", count=5), f"{name}: no traffic through the negotiated SAs"
    text = cap.text
    if (mode, protocol) == ("tunnel", "esp"):
        decrypt_with_exported_keys(da, cap.pcap, name)
    if protocol == "esp":
        assert "ESP(" in text and "ICMP echo" not in text, f"{name}:\n{text}"
    else:
        assert "AH(" in text, f"{name}:\n{text}"
        assert all("AH(" in ln for ln in text.split("\n") if "proto ICMP" in ln), text

    status = json.loads(da.cli("status", "--json").stdout)
    (ike,) = status["ike_sas"]
    assert ike["name"] == name and ike["state"] == "ESTABLISHED", ike
    assert ike["local_addr"] == "10.99.0.1" and ike["remote_addr"] == "10.99.0.2"
    assert ike["proposal"].startswith("aes256gcm16")
    (child,) = ike["children"]
    assert child["state"] == "INSTALLED"
    assert child["mode"] == mode and child["protocol"].lower() == protocol, child
    assert child["local_ts"] == ["10.99.0.1/32"] and child["remote_ts"] == ["10.99.0.2/32"]
    assert child["packets_out"] >= 5 and child["bytes_in"] > 0, child
    spi_in = int(child["spi_in"], 16)
    assert any(sa.spi == spi_in and sa.packets >= 5 for sa in a.xfrm_sa_counters())

    da.cli("down", name)
    time.sleep(0.5)
    for host in (a, b):
        assert host.xfrm_state_text().strip() == "", f"{name}: {host.xfrm_state_text()}"
        # Only the daemon's own per-socket bypass policies ("socket in/out") may remain.
        assert host.xfrm_dir_policies() == "", f"{name}: {host.xfrm_policy_text()}"


def decrypt_with_exported_keys(da: Xfrmctl, pcap: Path, name: str) -> None:
    """`xfrmctl keys --wireshark` while the SAs live, then tshark with those tables: the
    capture's IKE_AUTH shows its identities and AUTH, and its ESP the inner ICMP echoes."""
    # 0700 and off the 9p share (like the control sockets), gone once read.
    keys = Path(tempfile.mkdtemp(prefix="xfrmctl-keys-", dir="/run"))
    began = time.monotonic()
    try:
        out = da.cli("keys", "--wireshark", str(keys), "--i-know-this-writes-secrets")
        assert "(2 ESP SAs)" in out.stdout and "(1 IKE SAs)" in out.stdout, out.stdout
        assert out.stderr == "", out.stderr  # nothing left out
        env = dict(os.environ, WIRESHARK_CONFIG_DIR=str(keys))
        shark = subprocess.run(
            ["tshark", "-r", str(pcap), "-o", "esp.enable_encryption_decode:TRUE", "-V"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    finally:
        shutil.rmtree(keys, ignore_errors=True)
    took = f"# keys and tshark took {time.monotonic() - began:.1f} s\n"
    (da.workdir / f"{name}-tshark.txt").write_text(took + shark.stdout + shark.stderr)
    assert shark.returncode == 0 and "Error loading table" not in shark.stderr, shark.stderr
    decrypted = shark.stdout
    for shown in (  # only in IKE_AUTH's decrypted payloads
        "ID_FQDN: a-tunnel-esp.lab.example",
        "ID_FQDN: b-tunnel-esp.lab.example",
        "Authentication Method: Shared Key Message Integrity Code",
    ):
        assert shown in decrypted, f"{name}: IKE_AUTH not decrypted, no {shown!r}"
    assert "Echo (ping) request" in decrypted and "Echo (ping) reply" in decrypted, name
    assert decrypted.count("Echo (ping) request") >= 5, f"{name}: not every ESP packet decrypted"


def net_to_net(local: str, remote: str) -> dict[str, dict[str, str]]:
    return {"": {"mode": "tunnel", "protocol": "esp", "local_ts": local, "remote_ts": remote}}


METRICS = "127.0.0.1:9468"
# A raw HTTP GET: a bare `python3 -S` starts in a fraction of urllib's time in the slow guest.
SCRAPE = (
    "import socket,sys; s=socket.create_connection(('127.0.0.1',9468),5); "
    "s.sendall(b'GET /metrics HTTP/1.0\\r\\n\\r\\n'); b=b''\n"
    "while (c:=s.recv(65536)): b+=c\n"
    "sys.stdout.write(b.decode())"
)


def scrape(host: Host) -> dict[tuple[str, str], float]:
    """xfrmctl_* samples from gw-a's metrics endpoint, by (name, child label or "")."""
    reply = host.run(["python3", "-S", "-c", SCRAPE], timeout=20).stdout
    head, _, body = reply.replace("\r\n", "\n").partition("\n\n")
    assert head.startswith("HTTP/1.0 200"), reply
    return {
        (s.name, s.labels.get("child", "")): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if s.labels.get("connection", "tun") == "tun"
    }


def test_net_to_net_between_gateways(net: Network, lab_out: Path) -> None:
    """Scenario 2: left — gw-a ==ESP== gw-b — right; xfrmctl on the gateways protects subnets.
    gw-a serves Prometheus metrics: the IKE SA gauge and the kernel's counters follow."""
    workdir = lab_out / "xfrmctl-net-to-net"
    workdir.mkdir(parents=True, exist_ok=True)
    left, gwa, gwb, _right, sw = net.gateways()
    cfg_a = config(workdir, "a", "192.0.2.1", "192.0.2.2", net_to_net("10.1.0.0/16", "10.2.0.0/16"))
    cfg_a.write_text(f"settings:\n  metrics: {{listen: {METRICS}}}\n" + cfg_a.read_text())
    da = Xfrmctl(gwa, workdir, cfg_a, wait=False)
    db = Xfrmctl(
        gwb,
        workdir,
        config(workdir, "b", "192.0.2.2", "192.0.2.1", net_to_net("10.2.0.0/16", "10.1.0.0/16")),
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
        up = scrape(gwa)
        assert up[("xfrmctl_ike_sas_up", "")] == 1, up
        assert up[("xfrmctl_child_sa_out_packets_total", "net")] >= 5, up
        assert up[("xfrmctl_child_sa_in_packets_total", "net")] >= 5, up
        assert up[("xfrmctl_child_sa_in_bytes_total", "net")] >= 5 * 84, up  # ICMP echo replies
        assert up[("xfrmctl_child_sa_out_bytes_total", "net")] >= 5 * 84, up
        assert up[("xfrmctl_child_sa_integrity_failures_total", "net")] == 0, up
        assert up[("xfrmctl_kernel_install_seconds_count", "")] == 1, up
        # The gateways' own traffic is outside the selectors: it is neither protected nor held.
        assert gwa.ping("192.0.2.2", count=1)
        da.cli("down", "tun")
        time.sleep(0.5)
        for host in (gwa, gwb):
            assert host.xfrm_state_text().strip() == "", host.xfrm_state_text()
            assert host.xfrm_dir_policies() == "", host.xfrm_policy_text()
        down = scrape(gwa)
        assert down[("xfrmctl_ike_sas_up", "")] == 0, down
        assert down[("xfrmctl_ike_sa_setups_total", "")] == 1, down
    finally:
        codes = (da.stop(), db.stop())
    assert codes == (0, 0), (da.log.read_text(), db.log.read_text())
