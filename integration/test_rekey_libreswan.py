"""Rekeys against Libreswan in both directions, under a steady ping (issue 9, section 4).

Pluto rekeys on command (`whack --rekey-ipsec`, `--rekey-ike`) with xfrmctl's timers off:
xfrmctl, the responder, installs its new outbound SA only once the old pair is deleted, and
nothing is lost. xfrmctl rekeys on its timers: as the initiator it sends on the new SA as
soon as pluto's answer is in, so pluto's kernel never drops a request (before, our old
outbound SA outlived pluto's old inbound one, which pluto deletes at once on our DELETE).
The one window left is pluto's: it sends on its new outbound SA the moment it answers, while
our new inbound SA needs pluto's nonce and goes in only once the answer is processed; a
reply landing in it is dropped by our kernel for want of the SA (XfrmInNoStates), and the
test shows every lost reply is such a drop. strongSwan, as a responder, waits as xfrmctl
does, and loses nothing (test_rekey_strongswan.py).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from interop import assert_only_esp, ping_stats
from libreswan import LibreswanConn, Pluto
from netlab import Host, Network
from xfrmctl_host import Xfrmctl, write_psk

PSK = "libreswan rekey lab secret, not for production"
A_ID, B_ID = "a.lab.example", "b.lab.example"
A_IP, B_IP = "10.93.0.1", "10.93.0.2"


def xfrmctl_config(workdir: Path, rekeys: bool) -> Path:
    """With `rekeys`, xfrmctl rekeys the Child SA every 10 s and the IKE SA at 25 s."""
    ike_rekey, child_rekey = ("25s", "10s") if rekeys else ("0s", "0s")
    psk = write_psk(workdir, "a", PSK)
    cfg = workdir / "a.yaml"
    cfg.write_text(
        f"connections:\n  rk:\n    local_addrs: [{A_IP}]\n    remote_addrs: [{B_IP}]\n"
        "    proposals: [aes256gcm16-prfsha384-x25519]\n"
        f"    local: {{id: {A_ID}, auth: psk}}\n    remote: {{id: {B_ID}, auth: psk}}\n"
        f"    psk_file: {psk}\n    rekey_time: {ike_rekey}\n    rand_time: 0s\n"
        "    over_time: 10m\n"
        "    children:\n      net:\n        mode: tunnel\n"
        f"        local_ts: [{A_IP}/32]\n        remote_ts: [{B_IP}/32]\n"
        f"        rekey_time: {child_rekey}\n        life_time: 10m\n        rand_time: 0s\n"
    )
    return cfg


def child_spis(host_text: str) -> set[str]:
    return {
        line.split("spi ")[1].split()[0] for line in host_text.splitlines() if " spi 0x" in line
    }


def no_state_drops(host: Host) -> int:
    """Inbound packets the kernel dropped for want of an SA with their SPI."""
    for line in host.run("cat /proc/net/xfrm_stat").stdout.splitlines():
        name, _, value = line.partition(" ")
        if name == "XfrmInNoStates":
            return int(value)
    raise AssertionError("no XfrmInNoStates in /proc/net/xfrm_stat")


def start(net: Network, workdir: Path, rekeys: bool) -> tuple[Host, Host, Xfrmctl, Pluto]:
    a, b = net.host("a"), net.host("b")
    sw, _ = net.bridge([(a, f"{A_IP}/24"), (b, f"{B_IP}/24")])
    daemon = Xfrmctl(a, workdir, xfrmctl_config(workdir, rekeys))
    conn = LibreswanConn(
        "rk", B_IP, A_IP, B_ID, A_ID, "psk", "aes_gcm256-sha2_384-dh31", "aes_gcm256", "tunnel"
    )
    return a, sw, daemon, Pluto(b, workdir, [conn], [(B_ID, A_ID, PSK)])


def logs(daemon: Xfrmctl, pluto: Pluto) -> str:
    return (
        f"--- xfrmctl log ---\n{daemon.log.read_text()[-5000:]}\n"
        "--- pluto log ---\n" + "\n".join(pluto.conn_log("rk")[-60:])
    )


def stop(a: Host, daemon: Xfrmctl, pluto: Pluto) -> None:
    codes = (daemon.stop(), pluto.stop())
    assert codes[0] == 0
    assert a.xfrm_state_text().strip() == "", a.xfrm_state_text()


def test_xfrmctl_rekeys_against_libreswan_lose_only_what_pluto_sends_early(
    net: Network, lab_out: Path
) -> None:
    workdir = lab_out / "rekey-libreswan-ours"
    workdir.mkdir(parents=True, exist_ok=True)
    a, sw, da, pluto = start(net, workdir, rekeys=True)
    try:
        da.cli("up", "rk")
        before = child_spis(a.xfrm_state_text())
        ours_before, theirs_before = no_state_drops(a), no_state_drops(pluto.host)
        with net.capture(sw, "br0") as cap:
            out = a.run(f"ping -n -q -i 0.05 -c 660 -W 2 {B_IP}", check=False, timeout=120)
        sent, received = ping_stats(out.stdout)
        drops = no_state_drops(a) - ours_before
        assert no_state_drops(pluto.host) == theirs_before, "pluto dropped our ESP at a rekey"
        assert_only_esp(cap.text)
        log = da.log.read_text()
        rekeys = log.count("Child SA ready") - 1
        assert rekeys >= 3 and "rekeyed to" in log, log[-4000:]
        assert sent == 660, out.stdout
        # Each lost reply reached our kernel on pluto's new SA before we held it.
        assert sent - received <= drops <= 2 * rekeys, (out.stdout, drops, rekeys)
        ours = child_spis(a.xfrm_state_text())
        assert ours and not (ours & before), "xfrmctl's rekeys left the first SAs in place"
        da.cli("down", "rk")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{logs(da, pluto)}") from None
    finally:
        stop(a, da, pluto)


def test_libreswan_rekeys_lose_nothing(net: Network, lab_out: Path) -> None:
    workdir = lab_out / "rekey-libreswan-theirs"
    workdir.mkdir(parents=True, exist_ok=True)
    a, _, da, pluto = start(net, workdir, rekeys=False)
    try:
        da.cli("up", "rk")
        before = child_spis(a.xfrm_state_text())
        log = da.log.read_text()
        pinger = a.popen(
            ["ping", "-n", "-q", "-i", "0.05", "-c", "300", "-W", "2", B_IP],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        time.sleep(2)
        pluto.whack("--name", "rk", "--rekey-ipsec", timeout=60)
        time.sleep(3)
        pluto.whack("--name", "rk", "--rekey-ike", timeout=60)
        output, _ = pinger.communicate(timeout=90)
        sent, received = ping_stats(output)
        assert sent == 300 and received == sent, output
        after = da.log.read_text()
        assert after.count("Child SA ready") > log.count("Child SA ready"), "no Child SA rekey"
        theirs = child_spis(a.xfrm_state_text())
        assert theirs and not (theirs & before), "pluto's rekey did not replace the Child SA"
        assert after.count("rekeyed to") > log.count("rekeyed to"), "pluto's IKE rekey not seen"
        da.cli("down", "rk")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{logs(da, pluto)}") from None
    finally:
        stop(a, da, pluto)
