"""Authentication against strongSwan in the real kernel (issue 9, section 2): each direction
its own method (RFC 7296 §2.15) in both roles, and pinned peer certificates (remote.certs)
without any CA, accepted and refused. One xfrmctl and one charon, one address pair each."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from interop import A_ID, B_ID, PSK, Pki, make_pki, wait_for
from netlab import Host, Network
from strongswan import Charon, PeerFiles, swanctl_conf
from xfrmctl_host import Xfrmctl, write_psk


@dataclass(frozen=True)
class Case:
    name: str
    subnet: int
    xfrmctl_local: str  # psk | pubkey
    xfrmctl_remote: str  # psk | pubkey | pinned | pinned-wrong
    initiator: str  # xfrmctl | strongswan

    @property
    def a(self) -> str:
        return f"10.97.{self.subnet}.1"

    @property
    def b(self) -> str:
        return f"10.97.{self.subnet}.2"


CASES = [
    Case("we-sign-they-psk", 1, "pubkey", "psk", "xfrmctl"),
    Case("we-psk-they-sign", 2, "psk", "pubkey", "strongswan"),
    Case("pinned", 3, "pubkey", "pinned", "xfrmctl"),
    Case("pinned-wrong", 4, "pubkey", "pinned-wrong", "xfrmctl"),
]


def xfrmctl_conn(c: Case, files: dict[str, Path]) -> str:
    local = f"id: {A_ID}, auth: psk"
    if c.xfrmctl_local == "pubkey":
        local = f"id: {A_ID}, auth: pubkey, certs: [{files['a.crt']}], key: {files['a.key']}"
    remote = {
        "psk": f"id: {B_ID}, auth: psk",
        "pubkey": f"id: {B_ID}, auth: pubkey, cacerts: [{files['ca.crt']}]",
        "pinned": f"id: {B_ID}, auth: pubkey, certs: [{files['b.crt']}]",
        "pinned-wrong": f"id: {B_ID}, auth: pubkey, certs: [{files['a.crt']}]",
    }[c.xfrmctl_remote]
    psk = f"    psk_file: {files['psk']}\n" if "psk" in (c.xfrmctl_local, c.xfrmctl_remote) else ""
    return (
        f"  {c.name}:\n    local_addrs: [{c.a}]\n    remote_addrs: [{c.b}]\n"
        f"    local: {{{local}}}\n    remote: {{{remote}}}\n{psk}"
        f"    children:\n      net:\n        local_ts: [{c.a}/32]\n        remote_ts: [{c.b}/32]\n"
    )


def charon_conn(c: Case) -> str:
    # strongSwan proves itself the way xfrmctl expects, and expects what xfrmctl uses.
    mine = "psk" if c.xfrmctl_remote == "psk" else "pubkey"
    local = f"auth = {mine}\n      id = {B_ID}" + (
        "\n      certs = b.pem" if mine == "pubkey" else ""
    )
    theirs = c.xfrmctl_local
    remote = f"auth = {theirs}\n      id = {A_ID}" + (
        "\n      cacerts = ca.pem" if theirs == "pubkey" else ""
    )
    return (
        f"  {c.name} {{\n    version = 2\n    local_addrs = {c.b}\n    remote_addrs = {c.a}\n"
        "    proposals = aes256gcm16-prfsha384-x25519\n"
        f"    local {{\n      {local}\n    }}\n    remote {{\n      {remote}\n    }}\n"
        f"    children {{\n      net {{\n        local_ts = {c.b}/32\n"
        f"        remote_ts = {c.a}/32\n        esp_proposals = aes256gcm16\n"
        "      }\n    }\n  }\n"
    )


def write_files(workdir: Path, pki: Pki) -> dict[str, Path]:
    files = {"psk": write_psk(workdir, "a", PSK)}
    for name, data in (
        ("ca.crt", pki.ca),
        ("a.crt", pki.leaves[A_ID][0]),
        ("b.crt", pki.leaves[B_ID][0]),
        ("a.key", pki.leaves[A_ID][1]),
    ):
        files[name] = workdir / name
        files[name].write_bytes(data)
    files["a.key"].chmod(0o600)
    return files


@dataclass
class Lab:
    net: Network
    a: Host
    sw: Host
    xfrmctl: Xfrmctl
    charon: Charon


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    base = os.environ.get("XFRMCTL_LAB_OUT")
    workdir = (Path(base) if base else Path(tempfile.mkdtemp())) / "auth-strongswan"
    workdir.mkdir(parents=True, exist_ok=True)
    net = Network(workdir)
    try:
        a, b = net.host("a"), net.host("b")
        sw, devs = net.bridge([(a, f"{CASES[0].a}/24"), (b, f"{CASES[0].b}/24")])
        for c in CASES[1:]:
            a.run(f"ip addr add {c.a}/24 dev {devs['a']}")
            b.run(f"ip addr add {c.b}/24 dev {devs['b']}")
        pki = make_pki()
        files = write_files(workdir, pki)
        charon = Charon(
            b,
            workdir,
            swanctl_conf([charon_conn(c) for c in CASES], [(A_ID, B_ID, PSK)]),
            PeerFiles(cert=pki.leaves[B_ID][0], key=pki.leaves[B_ID][1], ca=pki.ca),
        )
        cfg = workdir / "a.yaml"
        cfg.write_text("connections:\n" + "".join(xfrmctl_conn(c, files) for c in CASES))
        xfrmctl = Xfrmctl(a, workdir, cfg)
        yield Lab(net, a, sw, xfrmctl, charon)
        assert xfrmctl.stop() == 0, xfrmctl.log.read_text()
        charon.stop()
        assert a.xfrm_state_text().strip() == "", a.xfrm_state_text()
    finally:
        net.close()


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_auth_against_strongswan(lab: Lab, c: Case) -> None:
    da, charon, a = lab.xfrmctl, lab.charon, lab.a
    try:
        if c.xfrmctl_remote == "pinned-wrong":
            proc = da.cli("up", c.name, check=False)
            assert proc.returncode == 1, proc
            out = proc.stdout + proc.stderr
            assert "AUTHENTICATION_FAILED" in out, out
            assert "not one of the pinned peer certificates" in out, out
            assert f"CN={B_ID}" in out and "a.crt" in out, out
            assert charon.ike_sa_count(c.name) == 0
            return
        if c.initiator == "xfrmctl":
            da.cli("up", c.name)
        else:
            charon.initiate(c.name, "net")
        status = da.status()
        (ike,) = [s for s in status["ike_sas"] if s["name"] == c.name]
        assert ike["state"] == "ESTABLISHED" and ike["remote_id"] == B_ID, ike
        assert ike["initiator"] is (c.initiator == "xfrmctl")
        with lab.net.capture(lab.sw, "br0", f"host {c.a}") as cap:
            ping = a.run(f"ping -n -c 3 -i 0.3 -W 2 -I {c.a} {c.b}", check=False)
        assert ping.returncode == 0, ping.stdout
        assert "ESP(" in cap.text and "ICMP echo" not in cap.text, cap.text
        raw = charon.sa_summary(c.name)
        assert "state=ESTABLISHED" in raw, raw
        da.cli("down", c.name)
        wait_for(lambda: charon.ike_sa_count(c.name) == 0, "strongSwan to drop the IKE SA", 30)
    except AssertionError as exc:
        da.cli("down", c.name, check=False)
        raise AssertionError(
            f"{exc}\n--- xfrmctl log ---\n{da.log.read_text()[-5000:]}\n"
            f"--- charon log ---\n{charon.log_text()[-5000:]}"
        ) from None
