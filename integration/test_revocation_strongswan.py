"""Certificate revocation against strongSwan in the real kernel (issue 11, items 1 and 4).

One network, one charon, one xfrmctl, and a PKI host serving the CA's CRL over HTTP
(`python -m http.server`) and its OCSP answers (`openssl ocsp`), named by the CDP and AIA of
charon's certificates. xfrmctl authenticates with a PSK and checks charon's certificate: a good
one passes under `strict`; a revoked one is refused in both roles (xfrmctl initiating, and
answering charon) with serial, source, date and reason in `xfrmctl up`'s error, the log and
`xfrmctl explain`; a CRL file (`remote.crls`) alone refuses a revoked certificate without URIs;
with the responders down `strict` refuses and `relaxed` accepts; `ifuri` accepts a certificate
without any URI (RFC 5280 §6.3, RFC 6960, RFC 4945 §5.1.3).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID
from interop import A_ID, B_ID, PSK, wait_for
from netlab import Host, Network
from strongswan import Charon, PeerFiles, swanctl_conf
from xfrmctl_host import Xfrmctl, write_psk

PKI_IP = "10.98.0.3"
CRL_URL = f"http://{PKI_IP}:8080/ca.crl"
OCSP_URL = f"http://{PKI_IP}:8888"
DEAD_CRL, DEAD_OCSP = f"http://{PKI_IP}:8099/ca.crl", f"http://{PKI_IP}:8899"  # nobody listens
NOW = dt.datetime.now(dt.UTC)
REVOKED_AT = (NOW - dt.timedelta(hours=3)).replace(microsecond=0)


@dataclass(frozen=True)
class Cert:
    file: str
    serial: int
    uris: tuple[str, str] | None  # (CDP, OCSP), None: neither
    revoked: bool


CERTS = {
    "good": Cert("b-good.pem", 0x1001, (CRL_URL, OCSP_URL), False),
    "revoked": Cert("b-revoked.pem", 0x1002, (CRL_URL, OCSP_URL), True),
    "revoked-in": Cert("b-revoked-in.pem", 0x1003, (CRL_URL, OCSP_URL), True),
    "revoked-nouri": Cert("b-revoked-nouri.pem", 0x1004, None, True),
    "dead": Cert("b-dead.pem", 0x1005, (DEAD_CRL, DEAD_OCSP), False),
    "nouri": Cert("b-nouri.pem", 0x1006, None, False),
}


@dataclass(frozen=True)
class Case:
    name: str
    subnet: int
    cert: str  # key of CERTS: charon's certificate
    remote: str  # xfrmctl's remote section after auth/id/cacerts
    initiator: str  # xfrmctl | strongswan
    up: bool

    @property
    def a(self) -> str:
        return f"10.98.{self.subnet}.1"

    @property
    def b(self) -> str:
        return f"10.98.{self.subnet}.2"


CASES = [
    # First the cases that must not find a CRL of this CA in the cache: a CRL fetched over
    # HTTP for one certificate speaks for every certificate of its issuer until nextUpdate.
    Case("crl-file", 4, "revoked-nouri", "crls: [CRLFILE]", "xfrmctl", False),
    Case("strict-down", 5, "dead", "revocation: strict", "xfrmctl", False),
    Case("relaxed-down", 6, "dead", "revocation: relaxed", "xfrmctl", True),
    Case("ifuri-nouri", 7, "nouri", "revocation: ifuri", "xfrmctl", True),
    Case("good-strict", 1, "good", "revocation: strict", "xfrmctl", True),
    Case("revoked-out", 2, "revoked", "revocation: relaxed", "xfrmctl", False),
    Case("revoked-in", 3, "revoked-in", "revocation: relaxed", "strongswan", False),
]


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_pki(workdir: Path) -> dict[str, bytes]:
    """The CA, charon's certificates (one key), the CRL and openssl ocsp's index, in `workdir`."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("xfrmctl revocation CA"))
        .issuer_name(_name("xfrmctl revocation CA"))
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    out = {"ca.pem": ca.public_bytes(serialization.Encoding.PEM), "b.key": _pem_key(key)}
    crl = x509.CertificateRevocationListBuilder().issuer_name(ca.subject)
    crl = crl.last_update(NOW - dt.timedelta(hours=1)).next_update(NOW + dt.timedelta(days=1))
    index = []
    expiry = (NOW + dt.timedelta(days=30)).strftime("%y%m%d%H%M%SZ")
    for c in CERTS.values():
        b = (
            x509.CertificateBuilder()
            .subject_name(_name(B_ID))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(c.serial)
            .not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(B_ID)]), False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        if c.uris is not None:
            cdp = x509.DistributionPoint(
                [x509.UniformResourceIdentifier(c.uris[0])], None, None, None
            )
            aia = x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(c.uris[1])
            )
            b = b.add_extension(x509.CRLDistributionPoints([cdp]), False)
            b = b.add_extension(x509.AuthorityInformationAccess([aia]), False)
        out[c.file] = b.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
        serial = f"{c.serial:04X}"
        if c.revoked:
            entry = (
                x509.RevokedCertificateBuilder()
                .serial_number(c.serial)
                .revocation_date(REVOKED_AT)
                .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), False)
                .build()
            )
            crl = crl.add_revoked_certificate(entry)
            when = REVOKED_AT.strftime("%y%m%d%H%M%SZ")
            index.append(f"R\t{expiry}\t{when},keyCompromise\t{serial}\tunknown\t/CN={B_ID}")
        else:
            index.append(f"V\t{expiry}\t\t{serial}\tunknown\t/CN={B_ID}")
    out["ca.crl"] = crl.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    out["index.txt"] = ("\n".join(index) + "\n").encode()
    out["index.txt.attr"] = b"unique_subject = no\n"  # all of charon's certificates share a DN
    out["ca.key"] = _pem_key(ca_key)
    for name, data in out.items():
        (workdir / name).write_bytes(data)
    return out


def xfrmctl_conn(c: Case, workdir: Path) -> str:
    remote = c.remote.replace("CRLFILE", str(workdir / "ca.crl"))
    return (
        f"  {c.name}:\n    local_addrs: [{c.a}]\n    remote_addrs: [{c.b}]\n"
        f"    local: {{id: {A_ID}, auth: psk}}\n"
        f"    remote: {{id: {B_ID}, auth: pubkey, cacerts: [{workdir / 'ca.pem'}], {remote}}}\n"
        f"    psk_file: {workdir / 'a.psk'}\n"
        f"    children:\n      net:\n        local_ts: [{c.a}/32]\n        remote_ts: [{c.b}/32]\n"
    )


def charon_conn(c: Case) -> str:
    return (
        f"  {c.name} {{\n    version = 2\n    local_addrs = {c.b}\n    remote_addrs = {c.a}\n"
        "    proposals = aes256gcm16-prfsha384-x25519\n"
        f"    local {{\n      auth = pubkey\n      id = {B_ID}\n"
        f"      certs = {CERTS[c.cert].file}\n    }}\n"
        f"    remote {{\n      auth = psk\n      id = {A_ID}\n    }}\n"
        f"    children {{\n      net {{\n        local_ts = {c.b}/32\n"
        f"        remote_ts = {c.a}/32\n        esp_proposals = aes256gcm16\n"
        "      }\n    }\n  }\n"
    )


@dataclass
class Lab:
    net: Network
    a: Host
    xfrmctl: Xfrmctl
    charon: Charon


def _wait_port(host: Host, port: int) -> None:
    deadline = time.monotonic() + 60
    while f":{port} " not in host.run("ss -ltn", check=False).stdout:
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing listens on {PKI_IP}:{port}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    base = os.environ.get("XFRMCTL_LAB_OUT")
    workdir = (Path(base) if base else Path(tempfile.mkdtemp())) / "revocation-strongswan"
    workdir.mkdir(parents=True, exist_ok=True)
    net = Network(workdir)
    try:
        a, b, pki_host = net.host("a"), net.host("b"), net.host("pki")
        _, devs = net.bridge([(a, "10.98.0.1/24"), (b, "10.98.0.2/24"), (pki_host, f"{PKI_IP}/24")])
        for c in CASES:
            a.run(f"ip addr add {c.a}/24 dev {devs['a']}")
            b.run(f"ip addr add {c.b}/24 dev {devs['b']}")
        files = write_pki(workdir)
        www = workdir / "www"
        www.mkdir(exist_ok=True)
        (www / "ca.crl").write_bytes(files["ca.crl"])
        log = (workdir / "pki.log").open("w")
        pki_host.popen(
            ["python3", "-m", "http.server", "8080", "--bind", PKI_IP, "--directory", str(www)],
            stdout=log,
            stderr=log,
        )
        pki_host.popen(
            ["openssl", "ocsp", "-port", "8888", "-index", str(workdir / "index.txt"),
             "-CA", str(workdir / "ca.pem"), "-rsigner", str(workdir / "ca.pem"),
             "-rkey", str(workdir / "ca.key"), "-nmin", "10", "-ignore_err"],
            stdout=log,
            stderr=log,
        )  # fmt: skip
        swan = workdir / "b-swanctl" / "x509"
        swan.mkdir(parents=True, exist_ok=True)
        for cert in CERTS.values():
            (swan / cert.file).write_bytes(files[cert.file])
        charon = Charon(
            b,
            workdir,
            swanctl_conf([charon_conn(c) for c in CASES], [(A_ID, B_ID, PSK)]),
            PeerFiles(cert=files["b-good.pem"], key=files["b.key"], ca=files["ca.pem"]),
        )
        write_psk(workdir, "a", PSK)
        cfg = workdir / "a.yaml"
        cfg.write_text(
            "settings:\n  revocation_timeout: 10\nconnections:\n"
            + "".join(xfrmctl_conn(c, workdir) for c in CASES)
        )
        xfrmctl = Xfrmctl(a, workdir, cfg)
        _wait_port(pki_host, 8080)
        _wait_port(pki_host, 8888)
        yield Lab(net, a, xfrmctl, charon)
        assert xfrmctl.stop() == 0, xfrmctl.log.read_text()
        charon.stop()
        assert a.xfrm_state_text().strip() == "", a.xfrm_state_text()
    finally:
        net.close()


FETCHED = re.compile(r"(OCSP http://10\.98\.0\.3:8888|CRL http://10\.98\.0\.3:8080/ca\.crl) says")


def _revoked_reason(text: str, cert: Cert, source: re.Pattern[str] = FETCHED) -> None:
    assert f"'CN={B_ID}' (serial {cert.serial:#x}) is revoked" in text, text
    assert source.search(text), text
    assert REVOKED_AT.isoformat() in text and "key_compromise" in text, text


def _check(lab: Lab, c: Case) -> None:
    da, charon = lab.xfrmctl, lab.charon
    cert = CERTS[c.cert]
    if c.initiator == "strongswan":
        proc = charon.swanctl(
            "--initiate", "--ike", c.name, "--child", "net", "--timeout", "60", check=False
        )
        assert proc.returncode != 0, proc.stdout
        wait_for(lambda: "is revoked" in da.log.read_text(), "xfrmctl to log the refusal", 30)
        _revoked_reason(da.log.read_text(), cert)
        explained = da.cli("explain", c.name, check=False)
        _revoked_reason(explained.stdout, cert)
        assert "includes a revoked certificate" in explained.stdout, explained.stdout
        assert charon.ike_sa_count(c.name) == 0
        return
    proc = da.cli("up", c.name, check=False)
    out = proc.stdout + proc.stderr
    if c.up:
        assert proc.returncode == 0, out
        (ike,) = [s for s in da.status()["ike_sas"] if s["name"] == c.name]
        assert ike["state"] == "ESTABLISHED" and ike["remote_id"] == B_ID, ike
        assert "state=ESTABLISHED" in charon.sa_summary(c.name)
        da.cli("down", c.name)
        wait_for(lambda: charon.ike_sa_count(c.name) == 0, "strongSwan to drop the IKE SA", 30)
        return
    assert proc.returncode == 1 and "AUTHENTICATION_FAILED" in out, out
    if c.name == "strict-down":
        assert f"serial {cert.serial:#x}" in out and "revocation: strict" in out, out
        assert DEAD_OCSP in out and DEAD_CRL in out and "refused" in out.lower(), out
    elif c.name == "crl-file":
        _revoked_reason(out, cert, re.compile(re.escape(f"CRL file {da.workdir / 'ca.crl'} says")))
    else:
        _revoked_reason(out, cert)
    assert "authentication failed" in da.log.read_text()
    wait_for(lambda: charon.ike_sa_count(c.name) == 0, "strongSwan to drop the IKE SA", 30)


def test_revocation_against_strongswan(lab: Lab) -> None:
    """Every case in turn against the one charon: good, revoked both ways, CRL file, policies."""
    for c in CASES:
        try:
            _check(lab, c)
        except AssertionError as exc:
            lab.xfrmctl.cli("down", c.name, check=False)
            raise AssertionError(
                f"case {c.name}: {exc}\n--- xfrmctl log ---\n"
                f"{lab.xfrmctl.log.read_text()[-6000:]}\n"
                f"--- charon log ---\n{lab.charon.log_text()[-4000:]}"
            ) from None
    log = lab.xfrmctl.log.read_text()
    assert f"fetching revocation status: OCSP {OCSP_URL}" in log, log[-3000:]
