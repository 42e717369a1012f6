"""The daemon fetches what the engine asks for (CRL by GET, OCSP by POST) within its timeout,
and two daemons over loopback refuse a revoked peer with the reason in `up`'s error, while a
fetch that hangs costs only its own timeout."""

from __future__ import annotations

import asyncio
import datetime as dt
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID
from daemon_helpers import BASE_PORT, make_daemon, no_progress

from xfrmctl.daemon.control import ControlError
from xfrmctl.daemon.revocation import fetch_all
from xfrmctl.ike.crypto.revocation import FetchRequest

PORT = BASE_PORT + 990  # UDP 990-993 for IKE; TCP 996 for HTTP
HTTP = PORT + 6
NOW = dt.datetime.now(dt.UTC)


class Server(http.server.BaseHTTPRequestHandler):
    """GET /ca.crl serves `crl`; POST /ocsp echoes the body reversed; /hang never answers;
    /moved redirects to a file:// URL."""

    crl = b""
    hang = threading.Event()

    def do_GET(self) -> None:
        if self.path == "/hang":
            self.hang.wait(10)
            return
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "file:///etc/hostname")
            self.end_headers()
            return
        body = self.crl if self.path == "/ca.crl" else b""
        self.send_response(200 if body else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        if self.path == "/hang":
            self.hang.wait(10)
            return
        data = self.rfile.read(int(self.headers["Content-Length"]))
        ok = self.headers["Content-Type"] == "application/ocsp-request"
        self.send_response(200 if ok else 415)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[::-1])

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", HTTP), Server)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{HTTP}"
    finally:
        Server.hang.set()
        httpd.shutdown()
        httpd.server_close()
        Server.hang.clear()


def test_fetches_and_their_failures(server: str) -> None:
    Server.crl = b"crl bytes"
    requests = [
        FetchRequest("crl", f"{server}/ca.crl"),
        FetchRequest("ocsp", f"{server}/ocsp", b"request"),
        FetchRequest("crl", f"{server}/missing.crl"),
        FetchRequest("crl", "http://127.0.0.1:1/closed.crl"),
        FetchRequest("crl", "file:///etc/hostname"),
        FetchRequest("crl", f"{server}/moved"),
        FetchRequest("crl", f"{server}/hang"),
    ]
    started = time.monotonic()
    results = asyncio.run(fetch_all(requests, 1.0))
    assert time.monotonic() - started < 3.0  # the hanging one costs its timeout, not more
    got = {r.uri.rsplit("/", 1)[-1]: (r.data, r.error) for r in results}
    assert got["ca.crl"] == (b"crl bytes", "")
    assert got["ocsp"] == (b"tseuqer", "")
    assert got["missing.crl"] == (None, "HTTP 404 Not Found")
    assert got["closed.crl"][0] is None and "refused" in got["closed.crl"][1].lower()
    assert got["hostname"] == (None, "only http:// and https:// URIs are fetched")
    assert got["moved"][0] is None and "file:///etc/hostname" in got["moved"][1]
    assert got["hang"][0] is None and "timed out" in got["hang"][1]


# ---------------------------------------------------------------- two daemons over loopback


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def write_pki(tmp: Path, base: str, revoke: bool) -> None:
    """ca.pem, b.pem/b.key (CDP and AIA at `base`) and the CA's CRL in Server.crl."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Loopback CA"))
        .issuer_name(_name("Loopback CA"))
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
    point = x509.DistributionPoint(
        [x509.UniformResourceIdentifier(f"{base}/ca.crl")], None, None, None
    )
    aia = x509.AccessDescription(
        AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(f"{base}/hang")
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("b.example"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(0xB0B)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("b.example")]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .add_extension(x509.CRLDistributionPoints([point]), False)
        .add_extension(x509.AuthorityInformationAccess([aia]), False)
        .sign(ca_key, hashes.SHA256())
    )
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(NOW - dt.timedelta(hours=1))
        .next_update(NOW + dt.timedelta(days=1))
    )
    if revoke:
        crl = crl.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(0xB0B)
            .revocation_date(NOW - dt.timedelta(hours=2))
            .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), False)
            .build()
        )
    Server.crl = crl.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    (tmp / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp / "b.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp / "b.key").write_bytes(pem)
    (tmp / "b.key").chmod(0o600)


def write_configs(tmp: Path, policy: str) -> tuple[Path, Path]:
    (tmp / "k.psk").write_text("correct horse battery staple\n")
    (tmp / "k.psk").chmod(0o600)
    common = """
    children:
      host:
        mode: transport
"""
    a = f"""
settings:
  port: {PORT}
  port_nat_t: {PORT + 1}
  revocation_timeout: 1
connections:
  tun:
    local_addrs: [127.0.0.1]
    remote_addrs: [127.0.0.2]
    remote_port: {PORT + 2}
    local: {{id: a.example, auth: psk}}
    remote: {{id: b.example, auth: pubkey, cacerts: [ca.pem], revocation: {policy}}}
    psk_file: k.psk
{common}"""
    b = f"""
settings:
  port: {PORT + 2}
  port_nat_t: {PORT + 3}
connections:
  tun:
    local_addrs: [127.0.0.2]
    remote_addrs: [127.0.0.1]
    remote_port: {PORT}
    local: {{id: b.example, auth: pubkey, certs: [b.pem], key: b.key}}
    remote: {{id: a.example, auth: psk}}
    psk_file: k.psk
{common}"""
    (tmp / "a.yaml").write_text(a)
    (tmp / "b.yaml").write_text(b)
    return tmp / "a.yaml", tmp / "b.yaml"


async def up(a_cfg: Path, b_cfg: Path) -> dict[str, object]:
    da, ha, _ = await make_daemon(a_cfg)
    db, _, _ = await make_daemon(b_cfg)
    try:
        return await asyncio.wait_for(ha.up("tun", None, no_progress), 20)  # type: ignore[no-any-return]
    finally:
        await da.stop()
        await db.stop()


def test_a_revoked_peer_is_refused_with_the_reason(
    tmp_path: Path, server: str, caplog: pytest.LogCaptureFixture
) -> None:
    write_pki(tmp_path, server, revoke=True)
    with pytest.raises(ControlError) as err:
        asyncio.run(up(*write_configs(tmp_path, "relaxed")))
    assert err.value.code == "AUTHENTICATION_FAILED"
    message = err.value.message
    assert "'CN=b.example' (serial 0xb0b) is revoked" in message
    assert f"CRL {server}/ca.crl says revoked on" in message and "key_compromise" in message
    assert any("is revoked" in r.getMessage() for r in caplog.records)
    # The OCSP responder hung meanwhile: its failure is logged, the CRL decided.
    assert any(f"OCSP {server}/hang failed: timed out" in r.getMessage() for r in caplog.records)


def test_a_good_peer_comes_up_and_strict_holds(tmp_path: Path, server: str) -> None:
    write_pki(tmp_path, server, revoke=False)
    result = asyncio.run(up(*write_configs(tmp_path, "strict")))
    assert result["ike_sa"]["state"] == "ESTABLISHED"  # type: ignore[index]
