"""Certificate chains against strongSwan in the real kernel (issue 11, items 2 and 3).

An RSA-4096 chain root → intermediate → leaf makes IKE_AUTH too big for one datagram, and
both hosts drop IP fragments before reassembly (an nftables prerouting rule, as middleboxes
do): IKE only gets through with RFC 7383 fragmentation. Cases, one xfrmctl and one charon,
one address pair each:

- nofrag: xfrmctl `fragmentation: false` initiates: its IKE_AUTH is IP-fragmented, dropped.
- frag-out / frag-in: fragmentation in both roles; each side sends its intermediate (RFC 7296
  §3.6) and verifies the other's chain; xfrmctl holds a second, cross-signed intermediate and
  sends only the path to the CA charon's CERTREQ names (§3.7).
- inter-configured / inter-missing: charon sends its leaf only; its intermediate is in
  xfrmctl's remote.cacerts (accepted), or not (refused, naming the missing link).
- ed25519: Ed25519 CA and leaves on both sides (RFC 8420).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID
from lab_keys import rsa_key
from netlab import Host, Network
from strongswan import Charon, swanctl_conf
from xfrmctl_host import Xfrmctl

from xfrmctl.client import ClientError, ControlClient

A_ID, B_ID, B2_ID = "xfrmctl.pki.example", "charon.pki.example", "charon2.pki.example"
EDA_ID, EDB_ID = "ed-xfrmctl.pki.example", "ed-charon.pki.example"
Key = CertificateIssuerPrivateKeyTypes
PEM = serialization.Encoding.PEM


@dataclass(frozen=True)
class Case:
    name: str
    subnet: int
    initiator: str  # xfrmctl | strongswan
    charon_cert: str  # which leaf charon proves itself with
    charon_id: str

    @property
    def a(self) -> str:
        return f"10.98.{self.subnet}.1"

    @property
    def b(self) -> str:
        return f"10.98.{self.subnet}.2"


CASES = [
    Case("nofrag", 1, "xfrmctl", "b.pem", B_ID),
    Case("frag-out", 2, "xfrmctl", "b.pem", B_ID),
    Case("frag-in", 3, "strongswan", "b.pem", B_ID),
    Case("inter-configured", 4, "xfrmctl", "b2.pem", B2_ID),
    Case("inter-missing", 5, "xfrmctl", "b2.pem", B2_ID),
    Case("ed25519", 6, "xfrmctl", "ed-b.pem", EDB_ID),
]


def _issue(
    cn: str, key: Key, issuer: tuple[x509.Certificate, Key] | None, ca: bool
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    signer, signer_key = issuer if issuer else (None, key)
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(signer.subject if signer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()),
            False,
        )
    )
    if ca:
        ku = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        b = b.add_extension(ku, critical=True)
    else:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
    digest = None if isinstance(signer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return b.sign(signer_key, digest)


def _key_pem(key: Key) -> bytes:
    return key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def write_pki(xdir: Path, sdir: Path) -> None:
    """xfrmctl's files in `xdir`, charon's in its swanctl folder `sdir`."""
    rsa4k = [rsa_key(4096, i) for i in range(3)]  # made on the host: see lab_keys
    root = (_issue("PKI Root A", rsa4k[0], None, True), rsa4k[0])
    inter = (_issue("PKI Intermediate", rsa4k[1], root, True), rsa4k[1])
    a = _issue(A_ID, rsa4k[2], inter, False)
    root_b_key = ec.generate_private_key(ec.SECP256R1())
    root_b = (_issue("PKI Root B", root_b_key, None, True), root_b_key)
    cross = _issue("PKI Intermediate", rsa4k[1], root_b, True)  # same name and key
    # charon's own intermediate: one it sends, and names in its CERTREQs (as it does with
    # every CA certificate it holds), but on none of xfrmctl's paths
    inter_c_key, b_key = rsa_key(2048, 0), rsa_key(2048, 1)
    inter_c = (_issue("PKI Intermediate C", inter_c_key, root, True), inter_c_key)
    b = _issue(B_ID, b_key, inter_c, False)
    inter2_key, b2_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    inter2 = (_issue("PKI Intermediate 2", inter2_key, root, True), inter2_key)
    b2 = _issue(B2_ID, b2_key, inter2, False)
    ed_keys = [ed25519.Ed25519PrivateKey.generate() for _ in range(3)]
    ed_root = (_issue("PKI Ed25519 Root", ed_keys[0], None, True), ed_keys[0])
    ed_a, ed_b = (
        _issue(EDA_ID, ed_keys[1], ed_root, False),
        _issue(EDB_ID, ed_keys[2], ed_root, False),
    )
    files = {
        xdir / "a-chain.pem": a.public_bytes(PEM) + inter[0].public_bytes(PEM),
        xdir / "cross.pem": cross.public_bytes(PEM),
        xdir / "a.key": _key_pem(rsa4k[2]),
        xdir / "root.pem": root[0].public_bytes(PEM),
        xdir / "inter2.pem": inter2[0].public_bytes(PEM),
        xdir / "ed-root.pem": ed_root[0].public_bytes(PEM),
        xdir / "ed-a.pem": ed_a.public_bytes(PEM),
        xdir / "ed-a.key": _key_pem(ed_keys[1]),
        sdir / "x509" / "b.pem": b.public_bytes(PEM),
        sdir / "x509" / "inter-c.pem": inter_c[0].public_bytes(PEM),  # sent, not trusted
        sdir / "x509" / "b2.pem": b2.public_bytes(PEM),
        sdir / "x509" / "ed-b.pem": ed_b.public_bytes(PEM),
        sdir / "x509ca" / "root.pem": root[0].public_bytes(PEM),
        sdir / "x509ca" / "ed-root.pem": ed_root[0].public_bytes(PEM),
        sdir / "private" / "b.pem": _key_pem(b_key),
        sdir / "private" / "b2.pem": _key_pem(b2_key),
        sdir / "private" / "ed-b.pem": _key_pem(ed_keys[2]),
    }
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if path.suffix == ".key" or path.parent.name == "private":
            path.chmod(0o600)


def xfrmctl_conn(c: Case, d: Path) -> str:
    if c.name == "ed25519":
        local = f"id: {EDA_ID}, auth: pubkey, certs: [{d / 'ed-a.pem'}], key: {d / 'ed-a.key'}"
        cacerts = [d / "ed-root.pem"]
    else:
        chain = f"[{d / 'a-chain.pem'}, {d / 'cross.pem'}]"
        local = f"id: {A_ID}, auth: pubkey, certs: {chain}, key: {d / 'a.key'}"
        cacerts = [d / "root.pem"] + ([d / "inter2.pem"] if c.name == "inter-configured" else [])
    remote = f"id: {c.charon_id}, auth: pubkey, cacerts: [{', '.join(map(str, cacerts))}]"
    frag = "    fragmentation: false\n" if c.name == "nofrag" else ""
    return (
        f"  {c.name}:\n    local_addrs: [{c.a}]\n    remote_addrs: [{c.b}]\n{frag}"
        f"    local: {{{local}}}\n    remote: {{{remote}}}\n"
        f"    children:\n      net:\n        local_ts: [{c.a}/32]\n        remote_ts: [{c.b}/32]\n"
    )


def charon_conn(c: Case) -> str:
    a_id, ca = (EDA_ID, "ed-root.pem") if c.name == "ed25519" else (A_ID, "root.pem")
    return (
        f"  {c.name} {{\n    version = 2\n    local_addrs = {c.b}\n    remote_addrs = {c.a}\n"
        "    proposals = aes256gcm16-prfsha384-x25519\n    fragmentation = yes\n"
        f"    local {{\n      auth = pubkey\n      id = {c.charon_id}\n"
        f"      certs = {c.charon_cert}\n    }}\n"
        f"    remote {{\n      auth = pubkey\n      id = {a_id}\n      cacerts = {ca}\n    }}\n"
        f"    children {{\n      net {{\n        local_ts = {c.b}/32\n"
        f"        remote_ts = {c.a}/32\n        esp_proposals = aes256gcm16\n"
        "      }\n    }\n  }\n"
    )


def drop_ip_fragments(host: Host) -> None:
    """Drop every IP fragment on arrival, before the kernel could reassemble it."""
    host.run("nft add table ip pki")
    host.run(["nft", "add chain ip pki pre { type filter hook prerouting priority -500 ; }"])
    host.run(["nft", "add rule ip pki pre ip frag-off & 0x3fff != 0 counter drop"])


def dropped(host: Host) -> int:
    out = host.run("nft list chain ip pki pre").stdout
    m = re.search(r"counter packets (\d+)", out)
    assert m, out
    return int(m.group(1))


@dataclass
class Lab:
    net: Network
    a: Host
    b: Host
    xfrmctl: Xfrmctl
    charon: Charon


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    base = os.environ.get("XFRMCTL_LAB_OUT")
    workdir = (Path(base) if base else Path(tempfile.mkdtemp())) / "pki-strongswan"
    workdir.mkdir(parents=True, exist_ok=True)
    net = Network(workdir)
    try:
        a, b = net.host("a"), net.host("b")
        _, devs = net.bridge([(a, f"{CASES[0].a}/24"), (b, f"{CASES[0].b}/24")])
        for c in CASES[1:]:
            a.run(f"ip addr add {c.a}/24 dev {devs['a']}")
            b.run(f"ip addr add {c.b}/24 dev {devs['b']}")
        drop_ip_fragments(a)
        drop_ip_fragments(b)
        xdir = workdir / "xfrmctl-files"
        write_pki(xdir, workdir / f"{b.name}-swanctl")  # Charon's folder, filled before it starts
        cfg = workdir / "a.yaml"
        cfg.write_text("connections:\n" + "".join(xfrmctl_conn(c, xdir) for c in CASES))
        xfrmctl = Xfrmctl(a, workdir, cfg, wait=False)  # its Python start beside charon's
        charon = Charon(b, workdir, swanctl_conf([charon_conn(c) for c in CASES], []))
        xfrmctl.wait_ready()
        yield Lab(net, a, b, xfrmctl, charon)
        assert xfrmctl.stop() == 0, xfrmctl.log.read_text()
        charon.stop()
        assert a.xfrm_state_text().strip() == "", a.xfrm_state_text()
    finally:
        net.close()


def _established(lab: Lab, c: Case) -> None:
    (ike,) = [s for s in lab.xfrmctl.status()["ike_sas"] if s["name"] == c.name]
    assert ike["state"] == "ESTABLISHED" and ike["remote_id"] == c.charon_id, ike
    assert ike["initiator"] is (c.initiator == "xfrmctl"), ike
    assert lab.charon.ike_sa_count(c.name) == 1


def _check_case(lab: Lab, c: Case) -> None:
    da = lab.xfrmctl
    if c.name == "nofrag":
        # Over the control socket from this process: a CLI call costs seconds under TCG.
        with pytest.raises(ClientError, match="no answer"):
            ControlClient(da.sock, timeout=8).call("up", {"name": c.name, "child": None})
        ControlClient(da.sock).call("down", {"name": c.name, "child": None})
        assert lab.charon.ike_sa_count(c.name) == 0
        return
    if c.name == "inter-missing":
        proc = da.cli("up", c.name, check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 1 and "AUTHENTICATION_FAILED" in out, out
        assert f"no issuer for CN={B2_ID}: its issuer 'CN=PKI Intermediate 2'" in out, out
        return
    if c.initiator == "xfrmctl":
        ControlClient(da.sock).call("up", {"name": c.name, "child": None})
    else:
        lab.charon.initiate(c.name, "net")
    _established(lab, c)


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_pki_against_strongswan(lab: Lab, c: Case) -> None:
    start = len(lab.charon.log_text())
    frags_a, frags_b = dropped(lab.a), dropped(lab.b)
    try:
        _check_case(lab, c)
        log = lab.charon.log_text()[start:]
        if c.name == "nofrag":
            assert dropped(lab.b) > frags_b, "the unfragmented IKE_AUTH should be IP-fragmented"
            assert "received end entity cert" not in log, log  # IKE_AUTH never arrived
            return
        assert (dropped(lab.a), dropped(lab.b)) == (frags_a, frags_b), "no IP fragment expected"
        if c.name in ("frag-out", "frag-in"):
            # RFC 7383 both ways: charon split its own IKE_AUTH and reassembled ours
            assert re.search(r"splitting IKE message \(\d+ bytes\) into \d+ fragments", log), log
            assert "reassembled fragmented IKE message" in log, log
            # CERTREQ for Root A: xfrmctl sends the path to it, not the cross-signed one
            assert log.count("received issuer cert") == 1, log
            assert 'received issuer cert "CN=PKI Intermediate"' in log, log
            assert 'sending issuer cert "CN=PKI Intermediate C"' in log, log
            assert "reached self-signed root ca with a path length of 1" in log, log
        if c.name == "inter-configured":
            assert "sending issuer cert" not in log, log  # charon sends its leaf alone
        if c.name == "ed25519":
            assert f"authentication of '{EDA_ID}' with ED25519 successful" in log, log
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\n--- xfrmctl log ---\n{lab.xfrmctl.log.read_text()[-6000:]}\n"
            f"--- charon log ---\n{lab.charon.log_text()[start:][-6000:]}"
        ) from None
