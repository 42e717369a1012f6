"""IPv6 against strongSwan in the real kernel (issue 9, section 4): an IKE SA over IPv6 outer
addresses carrying IPv6 and IPv4 inner traffic (one child each), both pinged through, only
ESP over IPv6 on the wire, and nothing left afterwards."""

from __future__ import annotations

import time
from pathlib import Path

from netlab import Network
from strongswan import Charon, swanctl_conf
from xfrmctl_host import Xfrmctl, write_psk

PSK = "ipv6 lab secret, not for production"
A_ID, B_ID = "a.lab.example", "b.lab.example"
A6, B6 = "fd00:97::1", "fd00:97::2"
INNER = {  # child: (xfrmctl's inner address, strongSwan's, prefix length)
    "net6": ("fd00:96:1::1", "fd00:96:2::1", 128),
    "net4": ("10.96.1.1", "10.96.2.1", 32),
}


def xfrmctl_config(workdir: Path) -> Path:
    psk = write_psk(workdir, "a", PSK)
    children = "".join(
        f"      {name}:\n        local_ts: [{mine}/{bits}]\n        remote_ts: [{theirs}/{bits}]\n"
        for name, (mine, theirs, bits) in INNER.items()
    )
    cfg = workdir / "a.yaml"
    cfg.write_text(
        f"connections:\n  six:\n    local_addrs: [{A6}]\n    remote_addrs: [{B6}]\n"
        f"    local: {{id: {A_ID}, auth: psk}}\n    remote: {{id: {B_ID}, auth: psk}}\n"
        f"    psk_file: {psk}\n    children:\n{children}"
    )
    return cfg


def charon_config() -> str:
    children = "".join(
        f"      {name} {{\n        local_ts = {theirs}/{bits}\n"
        f"        remote_ts = {mine}/{bits}\n        esp_proposals = aes256gcm16\n      }}\n"
        for name, (mine, theirs, bits) in INNER.items()
    )
    conn = (
        f"  six {{\n    version = 2\n    local_addrs = {B6}\n    remote_addrs = {A6}\n"
        "    proposals = aes256gcm16-prfsha384-x25519\n"
        f"    local {{\n      auth = psk\n      id = {B_ID}\n    }}\n"
        f"    remote {{\n      auth = psk\n      id = {A_ID}\n    }}\n"
        f"    children {{\n{children}    }}\n  }}\n"
    )
    return swanctl_conf([conn], [(A_ID, B_ID, PSK)])


def test_ipv6_outer_with_ipv6_and_ipv4_inner(net: Network, lab_out: Path) -> None:
    workdir = lab_out / "ipv6-strongswan"
    workdir.mkdir(parents=True, exist_ok=True)
    a, b = net.host("a"), net.host("b")
    sw, devs = net.bridge([(a, "10.95.0.1/24"), (b, "10.95.0.2/24")])
    a.run(f"ip -6 addr add {A6}/64 dev {devs['a']} nodad")
    b.run(f"ip -6 addr add {B6}/64 dev {devs['b']} nodad")
    for host, side in ((a, 0), (b, 1)):
        for mine_theirs in INNER.values():
            addr, bits = mine_theirs[side], mine_theirs[2]
            host.run(f"ip addr add {addr}/{bits} dev lo")
    a.run(f"ip -6 route add fd00:96:2::/64 via {B6}")
    b.run(f"ip -6 route add fd00:96:1::/64 via {A6}")
    a.run(f"ip route add 10.96.2.0/24 via inet6 {B6}")
    b.run(f"ip route add 10.96.1.0/24 via inet6 {A6}")
    charon = Charon(b, workdir, charon_config())
    da = Xfrmctl(a, workdir, xfrmctl_config(workdir))
    try:
        da.cli("up", "six")
        status = da.status()
        (ike,) = status["ike_sas"]
        assert (ike["local_addr"], ike["remote_addr"]) == (A6, B6), ike
        assert sorted(c["name"] for c in ike["children"]) == ["net4", "net6"], ike
        with net.capture(sw, "br0") as cap:
            for mine, theirs, _ in INNER.values():
                ping = a.run(f"ping -n -c 3 -i 0.3 -W 2 -I {mine} {theirs}", check=False)
                assert ping.returncode == 0, (mine, ping.stdout)
        assert f"{A6} > {B6}: ESP(" in cap.text and f"{B6} > {A6}: ESP(" in cap.text, cap.text
        assert "echo request" not in cap.text, "cleartext on the wire:\n" + cap.text
        assert "state=ESTABLISHED" in charon.sa_summary("six")
        da.cli("down", "six")
        deadline = time.monotonic() + 30
        while charon.ike_sa_count("six") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert charon.ike_sa_count("six") == 0
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\n--- xfrmctl log ---\n{da.log.read_text()[-5000:]}\n"
            f"--- charon log ---\n{charon.log_text()[-5000:]}"
        ) from None
    finally:
        codes = (da.stop(), charon.stop())
    assert codes[0] == 0
    assert a.xfrm_state_text().strip() == "", a.xfrm_state_text()
