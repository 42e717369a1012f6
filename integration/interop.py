"""What the interop and lifecycle scenarios share: identities and secrets, a throwaway PKI, the
proposal pairs, xfrmctl connection text, and waiting and wire checks.

Tests import these from here, never from one another, so each test module can run alone (and on
its own pytest-xdist worker).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from netlab import Host
from xfrmctl_host import write_psk

PSK = "interop lab secret, not for production"
A_ID, B_ID = "a.lab.example", "b.lab.example"


@dataclass(frozen=True)
class Scenario:
    initiator: str  # "xfrmctl" or "strongswan"
    auth: str  # "psk" or "pubkey"
    ike: str
    esp: str
    mode: str
    swan_ike: tuple[str, ...]  # what `swanctl --list-sas --raw` must show for the IKE SA
    subnet: int  # this scenario's addresses: 10.99.<subnet>.1 (xfrmctl) and .2 (strongSwan)

    @property
    def id(self) -> str:
        return f"{self.initiator}-init-{self.auth}-{self.ike.split('-')[0]}-{self.mode}"

    @property
    def a_addr(self) -> str:
        return f"10.99.{self.subnet}.1"

    @property
    def b_addr(self) -> str:
        return f"10.99.{self.subnet}.2"


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


def xfrmctl_connection(workdir: Path, sc: Scenario, pki: Pki) -> str:
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
    return (
        f"  {sc.id}:\n"
        f"    local_addrs: [{sc.a_addr}]\n"
        f"    remote_addrs: [{sc.b_addr}]\n"
        f"    proposals: [{sc.ike}]\n"
        f"{auth}"
        "    children:\n"
        "      net:\n"
        f"        mode: {sc.mode}\n"
        f"        local_ts: [{sc.a_addr}/32]\n"
        f"        remote_ts: [{sc.b_addr}/32]\n"
        f"        esp_proposals: [{sc.esp}]\n"
    )


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60) -> float:
    """Poll `check` twice a second; the seconds it took, or AssertionError naming `what`."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)
    return time.monotonic() - start


def non_socket_policies(host: Host) -> str:
    """`ip xfrm policy` minus the per-socket bypass policies a running IKE daemon keeps."""
    blocks = re.split(r"\n(?=\S)", host.xfrm_policy_text().strip())
    return "\n".join(b for b in blocks if b and not re.search(r"\bsocket (in|out)\b", b))


def ping_from(host: Host, src: str, dst: str, count: int) -> bool:
    return host.run(f"ping -n -I {src} -c {count} -i 0.2 -W 2 {dst}", check=False).returncode == 0


def ping_stats(output: str) -> tuple[int, int]:
    m = re.search(r"(\d+) packets transmitted, (\d+) received", output)
    assert m, output
    return int(m.group(1)), int(m.group(2))


def assert_only_esp(text: str, udp_encap: bool = False) -> None:
    assert "ESP(" in text, text[-3000:]
    assert "ICMP echo" not in text, "cleartext ICMP on the wire:\n" + text[-3000:]
    if udp_encap:
        assert "proto ESP" not in text, "plain ESP where UDP encapsulation was due"
