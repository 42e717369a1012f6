"""xfrmctl against strongSwan's charon in the real kernel (issue 5, scenario 4).

Both directions (xfrmctl initiates, strongSwan initiates), PSK and ECDSA P-256 certificates,
and two proposal families (AES-GCM + X25519, AES-CBC/HMAC + MODP-3072). Four combinations
cover every value of each axis in one guest boot.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from netlab import Host, Network
from strongswan import Charon, PeerFiles, swanctl_conf
from xfrmctl_host import Xfrmctl, write_psk

PSK = "interop lab secret, not for production"
A_ADDR, B_ADDR = "10.99.0.1", "10.99.0.2"
A_ID, B_ID = "a.lab.example", "b.lab.example"


@dataclass(frozen=True)
class Scenario:
    initiator: str  # "xfrmctl" or "strongswan"
    auth: str  # "psk" or "pubkey"
    ike: str
    esp: str
    mode: str
    swan_ike: tuple[str, ...]  # what `swanctl --list-sas --raw` must show for the IKE SA

    @property
    def id(self) -> str:
        return f"{self.initiator}-init-{self.auth}-{self.ike.split('-')[0]}-{self.mode}"


GCM = (
    "encr-alg=AES_GCM_16",
    "encr-keysize=256",
    "prf-alg=PRF_HMAC_SHA2_384",
    "dh-group=CURVE_25519",
)
CBC = (
    "encr-alg=AES_CBC",
    "encr-keysize=128",
    "integ-alg=HMAC_SHA2_256_128",
    "prf-alg=PRF_HMAC_SHA2_256",
    "dh-group=MODP_3072",
)
GCM_IKE, CBC_IKE = "aes256gcm16-prfsha384-x25519", "aes128-sha256-modp3072"
SCENARIOS = [
    Scenario("xfrmctl", "psk", GCM_IKE, "aes256gcm16", "tunnel", GCM),
    Scenario("strongswan", "psk", CBC_IKE, "aes128-sha256", "tunnel", CBC),
    Scenario("xfrmctl", "pubkey", CBC_IKE, "aes128-sha256", "transport", CBC),
    Scenario("strongswan", "pubkey", GCM_IKE, "aes256gcm16", "tunnel", GCM),
]


@dataclass(frozen=True)
class Pki:
    ca: bytes
    leaves: dict[str, tuple[bytes, bytes]]  # IKE ID -> (cert PEM, PKCS#8 key PEM)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_pki() -> Pki:
    """A throwaway CA and two P-256 leaves whose SAN dNSName is the IKE ID."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("xfrmctl interop CA"))
        .issuer_name(_name("xfrmctl interop CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    leaves = {}
    for fqdn in (A_ID, B_ID):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(fqdn))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(fqdn)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
            .sign(ca_key, hashes.SHA256())
        )
        leaves[fqdn] = (
            cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
    return Pki(ca.public_bytes(serialization.Encoding.PEM), leaves)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


def xfrmctl_config(workdir: Path, sc: Scenario, pki: Pki) -> Path:
    if sc.auth == "psk":
        psk = write_psk(workdir, "a", PSK)
        auth = (
            f"    local: {{id: {A_ID}, auth: psk}}\n"
            f"    remote: {{id: {B_ID}, auth: psk}}\n"
            f"    psk_file: {psk}\n"
        )
    else:
        cert, key = pki.leaves[A_ID]
        (workdir / "a.crt").write_bytes(cert)
        (workdir / "ca.crt").write_bytes(pki.ca)
        key_file = workdir / "a.key"
        key_file.write_bytes(key)
        key_file.chmod(0o600)
        auth = (
            f"    local: {{id: {A_ID}, auth: pubkey, certs: [{workdir / 'a.crt'}],"
            f" key: {key_file}}}\n"
            f"    remote: {{id: {B_ID}, auth: pubkey, cacerts: [{workdir / 'ca.crt'}]}}\n"
        )
    cfg = workdir / "a.yaml"
    cfg.write_text(
        "connections:\n"
        "  tun:\n"
        f"    local_addrs: [{A_ADDR}]\n"
        f"    remote_addrs: [{B_ADDR}]\n"
        f"    proposals: [{sc.ike}]\n"
        f"{auth}"
        "    children:\n"
        "      net:\n"
        f"        mode: {sc.mode}\n"
        f"        local_ts: [{A_ADDR}/32]\n"
        f"        remote_ts: [{B_ADDR}/32]\n"
        f"        esp_proposals: [{sc.esp}]\n"
    )
    return cfg


def charon_for(host: Host, workdir: Path, sc: Scenario, pki: Pki) -> Charon:
    conf = swanctl_conf(
        name="tun",
        child="net",
        local_addr=B_ADDR,
        remote_addr=A_ADDR,
        local_id=B_ID,
        remote_id=A_ID,
        auth=sc.auth,
        ike_proposal=sc.ike,
        esp_proposal=sc.esp,
        mode=sc.mode,
        local_ts=f"{B_ADDR}/32",
        remote_ts=f"{A_ADDR}/32",
        psk=PSK if sc.auth == "psk" else None,
        cert_name="b",
    )
    files = None
    if sc.auth == "pubkey":
        cert, key = pki.leaves[B_ID]
        files = PeerFiles(cert=cert, key=key, ca=pki.ca)
    return Charon(host, workdir, conf, files)


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def non_socket_policies(host: Host) -> str:
    """`ip xfrm policy` minus the per-socket bypass policies a running IKE daemon keeps."""
    blocks = re.split(r"\n(?=\S)", host.xfrm_policy_text().strip())
    return "\n".join(b for b in blocks if b and not re.search(r"\bsocket (in|out)\b", b))


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_interop(net: Network, lab_out: Path, pki: Pki, sc: Scenario) -> None:
    workdir = lab_out / f"interop-{sc.id}"
    workdir.mkdir(parents=True, exist_ok=True)
    a, b = net.host("a"), net.host("b")
    sw, _ = net.bridge([(a, f"{A_ADDR}/24"), (b, f"{B_ADDR}/24")])
    charon = charon_for(b, workdir, sc, pki)
    da = Xfrmctl(a, workdir, xfrmctl_config(workdir, sc, pki))
    try:
        if sc.initiator == "xfrmctl":
            da.cli("up", "tun")
        else:
            charon.initiate("net")

        # Poll the kernel (cheap) rather than the CLI (a Python start, slow under TCG).
        wait_for(lambda: len(a.xfrm_sa_counters()) == 2, "xfrmctl to install both ESP SAs")

        with net.capture(sw, "br0") as cap:
            assert a.ping(B_ADDR, count=4), "no traffic through the negotiated SAs"
            assert b.ping(A_ADDR, count=2), "no traffic from strongSwan's side"
        assert "ESP(" in cap.text, cap.text
        assert "ICMP echo" not in cap.text, cap.text

        status = json.loads(da.cli("status", "--json").stdout)
        (ike,) = status["ike_sas"]
        assert ike["name"] == "tun" and ike["state"] == "ESTABLISHED", ike
        assert ike["initiator"] is (sc.initiator == "xfrmctl"), ike
        assert ike["local_addr"] == A_ADDR and ike["remote_addr"] == B_ADDR, ike
        assert ike["proposal"] == sc.ike, ike
        assert ike["local_id"] == A_ID and ike["remote_id"] == B_ID, ike
        (child,) = ike["children"]
        assert child["state"] == "INSTALLED", child
        assert child["mode"] == sc.mode and child["protocol"].lower() == "esp", child
        assert child["proposal"] == sc.esp, child
        assert child["local_ts"] == [f"{A_ADDR}/32"], child
        assert child["remote_ts"] == [f"{B_ADDR}/32"], child
        assert child["packets_out"] >= 6 and child["packets_in"] >= 6, child
        spi_in = int(child["spi_in"], 16)
        assert any(sa.spi == spi_in and sa.packets >= 6 for sa in a.xfrm_sa_counters())

        # strongSwan agrees on what was negotiated.
        raw = charon.sa_summary()
        assert "state=ESTABLISHED" in raw, raw
        for field in sc.swan_ike:
            assert field in raw, (field, raw)
        swan_spi_in = {int(x, 16) for x in re.findall(r"\bspi-in=([0-9a-fA-F]+)", raw)}
        assert int(child["spi_out"], 16) in swan_spi_in, raw

        da.cli("down", "tun")
        wait_for(lambda: charon.ike_sa_count() == 0, "strongSwan to drop the IKE SA", 30)
        time.sleep(0.5)
        for host in (a, b):
            assert host.xfrm_state_text().strip() == "", host.xfrm_state_text()
            assert non_socket_policies(host) == "", host.xfrm_policy_text()
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\n--- xfrmctl log ---\n{da.log.read_text()}\n"
            f"--- charon log ---\n{charon.log_text()}"
        ) from None
    finally:
        codes = (da.stop(), charon.stop())
    assert codes[0] == 0, da.log.read_text()
    for host in (a, b):
        assert host.xfrm_state_text().strip() == "", host.xfrm_state_text()
        assert host.xfrm_policy_text().strip() == "", host.xfrm_policy_text()
