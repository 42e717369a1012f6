"""`xfrmctl explain` against strongSwan in the real kernel (issue 13, item 3): each failure
is made by a real charon and the diagnosis text is checked. Proposal mismatch in both roles
(IKE as initiator and responder, ESP as responder), traffic selectors, identity, pre-shared
key and an untrusted CA; `up`'s failure output once. One xfrmctl and one charon, one address
pair per case on one bridge."""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from interop import A_ID, B_ID, PSK, make_pki
from netlab import Host, Network
from strongswan import Charon, PeerFiles, swanctl_conf
from xfrmctl_host import Xfrmctl, write_psk

GCM_IKE, CBC_IKE = "aes256gcm16-prfsha384-x25519", "aes128-sha256-modp3072"
WRONG_PSK = "a different lab secret"
MALLORY = "mallory.lab.example"
PSK_A, PSK_B = "psk-a.lab.example", "psk-b.lab.example"


@dataclass(frozen=True)
class Case:
    name: str
    subnet: int
    initiator: str  # "xfrmctl" or "strongswan"
    expect: tuple[str, ...]  # in `xfrmctl explain NAME`

    @property
    def a(self) -> str:
        return f"10.96.{self.subnet}.1"

    @property
    def b(self) -> str:
        return f"10.96.{self.subnet}.2"


CASES = [
    Case(
        "ike-init",
        1,
        "xfrmctl",
        (
            "IKE SA failed: NO_PROPOSAL_CHOSEN, we were the initiator",
            "the peer accepted none of our IKE proposals",
            "(not revealed by the peer)",
            "RFC 7296 §2.7",
        ),
    ),
    Case(
        "ike-resp",
        2,
        "strongswan",
        (
            "we were the responder",
            f"the peer offers only {CBC_IKE}",
            f"add `{CBC_IKE}` to `connections.ike-resp.proposals`",
        ),
    ),
    Case(
        "esp-resp",
        3,
        "strongswan",
        (
            "child net failed: NO_PROPOSAL_CHOSEN, we were the responder",
            "the peer offers only aes128-sha256",
            "add `aes128-sha256` to `connections.esp-resp.children.net.esp_proposals`",
        ),
    ),
    Case(
        "ts-resp",
        4,
        "strongswan",
        (
            "child net failed: TS_UNACCEPTABLE",
            "set `connections.ts-resp.children.net.local_ts: [10.96.4.1/32]`",
        ),
    ),
    Case(
        "id-resp",
        5,
        "strongswan",
        (
            "AUTHENTICATION_FAILED, we were the responder",
            f"no connection accepts identity {MALLORY} authenticating with psk",
            f"set `remote.id: {MALLORY}`",
        ),
    ),
    Case(
        "psk-resp",
        6,
        "strongswan",
        ("the pre-shared keys differ", "connections.psk-resp.psk_file"),
    ),
    Case(
        "ca-init",
        7,
        "xfrmctl",
        (
            "AUTHENTICATION_FAILED, we were the initiator",
            "issued by 'CN=xfrmctl interop CA', which is none of our trusted CAs",
            "other-ca.crt",
            "to `connections.ca-init.remote.cacerts`",
        ),
    ),
]


def xfrmctl_conn(c: Case, files: dict[str, Path]) -> str:
    local_id, remote_id = (PSK_A, PSK_B) if c.name == "psk-resp" else (A_ID, B_ID)
    remote = f"id: {remote_id}, auth: psk"
    if c.name == "ca-init":
        remote = f"id: {B_ID}, auth: pubkey, cacerts: [{files['other-ca.crt']}]"
    local_ts = "192.0.2.0/24" if c.name == "ts-resp" else f"{c.a}/32"
    return (
        f"  {c.name}:\n    local_addrs: [{c.a}]\n    remote_addrs: [{c.b}]\n"
        f"    proposals: [{GCM_IKE}]\n"
        f"    local: {{id: {local_id}, auth: psk}}\n    remote: {{{remote}}}\n"
        f"    psk_file: {files['psk']}\n"
        f"    children:\n      net:\n        local_ts: [{local_ts}]\n"
        f"        remote_ts: [{c.b}/32]\n        esp_proposals: [aes256gcm16]\n"
    )


def charon_conn(c: Case) -> str:
    ike = CBC_IKE if c.name in ("ike-init", "ike-resp") else GCM_IKE
    esp = "aes128-sha256" if c.name == "esp-resp" else "aes256gcm16"
    local_id, remote_id = {
        "id-resp": (MALLORY, A_ID),
        "psk-resp": (PSK_B, PSK_A),
    }.get(c.name, (B_ID, A_ID))
    local = f"auth = psk\n      id = {local_id}"
    if c.name == "ca-init":
        local = f"auth = pubkey\n      id = {B_ID}\n      certs = b.pem"
    return (
        f"  {c.name} {{\n    version = 2\n    local_addrs = {c.b}\n    remote_addrs = {c.a}\n"
        f"    proposals = {ike}\n    send_cert = always\n"
        f"    local {{\n      {local}\n    }}\n"
        f"    remote {{\n      auth = psk\n      id = {remote_id}\n    }}\n"
        f"    children {{\n      net {{\n        local_ts = {c.b}/32\n"
        f"        remote_ts = {c.a}/32\n        esp_proposals = {esp}\n"
        "      }\n    }\n  }\n"
    )


def other_ca() -> bytes:
    """A CA that did not issue charon's certificate: what xfrmctl trusts in case ca-init."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "other lab CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Lab:
    net: Network
    a: Host
    xfrmctl: Xfrmctl
    charon: Charon


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    base = os.environ.get("XFRMCTL_LAB_OUT")
    workdir = (Path(base) if base else Path(tempfile.mkdtemp())) / "explain-strongswan"
    workdir.mkdir(parents=True, exist_ok=True)
    net = Network(workdir)
    try:
        a, b = net.host("a"), net.host("b")
        _, devs = net.bridge([(a, f"{CASES[0].a}/24"), (b, f"{CASES[0].b}/24")])
        for c in CASES[1:]:
            a.run(f"ip addr add {c.a}/24 dev {devs['a']}")
            b.run(f"ip addr add {c.b}/24 dev {devs['b']}")
        pki = make_pki()
        files = {"psk": write_psk(workdir, "a", PSK), "other-ca.crt": workdir / "other-ca.crt"}
        files["other-ca.crt"].write_bytes(other_ca())
        psks = [(A_ID, B_ID, PSK), (MALLORY, A_ID, PSK), (PSK_A, PSK_B, WRONG_PSK)]
        charon = Charon(
            b,
            workdir,
            swanctl_conf([charon_conn(c) for c in CASES], psks),
            PeerFiles(cert=pki.leaves[B_ID][0], key=pki.leaves[B_ID][1], ca=pki.ca),
        )
        cfg = workdir / "a.yaml"
        cfg.write_text("connections:\n" + "".join(xfrmctl_conn(c, files) for c in CASES))
        xfrmctl = Xfrmctl(a, workdir, cfg)
        yield Lab(net, a, xfrmctl, charon)
        assert xfrmctl.stop() == 0, xfrmctl.log.read_text()
        charon.stop()
        assert a.xfrm_state_text().strip() == "", a.xfrm_state_text()
    finally:
        net.close()


def test_nothing_to_explain_yet_and_unknown_name(lab: Lab) -> None:
    quiet = lab.xfrmctl.cli("explain", "ike-init")
    assert "no failed negotiation on record" in quiet.stdout, quiet
    unknown = lab.xfrmctl.cli("explain", "nope", check=False)
    assert unknown.returncode == 1, unknown
    assert "UNKNOWN_CONNECTION" in unknown.stderr and "ike-init" in unknown.stderr, unknown


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_explain_against_strongswan(lab: Lab, c: Case) -> None:
    da, charon = lab.xfrmctl, lab.charon
    if c.initiator == "xfrmctl":
        up = da.cli("up", c.name, check=False)
        assert up.returncode == 1, up
        if c.name == "ike-init":  # `up` prints the same diagnosis as `explain`
            assert "the peer accepted none of our IKE proposals" in up.stderr, up
            assert "suggested change:" in up.stderr, up
    else:
        started = charon.swanctl(
            "--initiate", "--ike", c.name, "--child", "net", "--timeout", "30", check=False
        )
        assert started.returncode != 0, started
    text = da.cli("explain", c.name).stdout
    for expected in c.expect:
        assert expected in text, f"{expected!r} not in:\n{text}\n{charon.log_text()[-3000:]}"
    assert PSK not in text and WRONG_PSK not in text, text
    if c.name == "esp-resp":
        failure = json.loads(da.cli("explain", c.name, "--json").stdout)["failure"]
        assert failure["code"] == "NO_PROPOSAL_CHOSEN" and failure["child"] == "net", failure
        (row,) = [r for r in failure["rows"] if r["field"] == "ESP proposals"]
        assert row["mismatch"] and row["theirs"] == "aes128-sha256", row
