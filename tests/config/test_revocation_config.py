"""remote.revocation / remote.crls / remote.ocsp_uris and settings.revocation_timeout: parsed
into the engine's RevocationConfig, and every mistake reported as file:line: key: words."""

from __future__ import annotations

import datetime as dt

from config_helpers import Write, errors_of
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from xfrmctl.config import check_config
from xfrmctl.daemon.specs import build_spec
from xfrmctl.ike.crypto.revocation import Policy
from xfrmctl.ike.spec import PeerCertAuth

NOW = dt.datetime.now(dt.UTC)
NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Config CA")])

CONN = """
settings:
  revocation_timeout: 2.5
connections:
  site-b:
    local_addrs: [192.0.2.1]
    remote_addrs: [192.0.2.2]
    local: {id: gw-a.example.org, auth: psk}
    remote:
      id: gw-b.example.org
      auth: pubkey
      cacerts: [ca.pem]
      revocation: strict
      crls: [crl/ca.crl]
      ocsp_uris: [http://ocsp.example.org:8080/]
    psk_file: site-b.psk
    children:
      lan:
        local_ts: [10.1.0.0/16]
        remote_ts: [10.2.0.0/16]
"""


def pki(write: Write, crl_encoding: serialization.Encoding) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(NAME)
        .issuer_name(NAME)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(NAME)
        .last_update(NOW - dt.timedelta(hours=1))
        .next_update(NOW + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    path = write("ca.pem", "")
    path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    write("crl/ca.crl", "").write_bytes(crl.public_bytes(crl_encoding))
    write("site-b.psk", "k", 0o600)


def test_keys_reach_the_engine(write: Write) -> None:
    for encoding in (serialization.Encoding.DER, serialization.Encoding.PEM):
        pki(write, encoding)
        loaded, issues = check_config(write("xfrmctl.yaml", CONN))
        assert loaded is not None, [str(i) for i in issues]
        auth = build_spec(loaded, "site-b", loaded.connections["site-b"]).remote_auth
        assert isinstance(auth, PeerCertAuth) and auth.revocation is not None
        rev = auth.revocation
        assert rev.policy == Policy.STRICT and rev.timeout == 2.5
        assert rev.ocsp_uris == ("http://ocsp.example.org:8080/",)
        (crl,) = rev.crls
        assert crl.source.endswith("/crl/ca.crl") and crl.crl.issuer == NAME


def test_defaults_are_relaxed_without_crls(write: Write) -> None:
    pki(write, serialization.Encoding.DER)
    text = "\n".join(
        line
        for line in CONN.splitlines()
        if not any(k in line for k in ("revocation", "crls", "ocsp_uris", "settings"))
    )
    loaded, issues = check_config(write("xfrmctl.yaml", text))
    assert loaded is not None, [str(i) for i in issues]
    auth = build_spec(loaded, "site-b", loaded.connections["site-b"]).remote_auth
    assert isinstance(auth, PeerCertAuth) and auth.revocation is not None
    assert auth.revocation.policy == Policy.RELAXED and auth.revocation.crls == ()
    assert auth.revocation.timeout == 5.0


def only_error(write: Write, text: str) -> str:
    pki(write, serialization.Encoding.DER)
    errors = errors_of(write("xfrmctl.yaml", text))
    assert len(errors) == 1, errors
    return errors[0]


def test_a_bad_policy_is_named_with_its_line(write: Write) -> None:
    error = only_error(write, CONN.replace("revocation: strict", "revocation: always"))
    assert "xfrmctl.yaml:12: connections.site-b.remote.revocation:" in error
    assert "'always' is not one of strict, ifuri, relaxed" in error


def test_a_missing_crl_file_is_named(write: Write) -> None:
    error = only_error(write, CONN.replace("crl/ca.crl", "crl/nope.crl"))
    assert "xfrmctl.yaml:13: connections.site-b.remote.crls[0]:" in error
    assert "cannot read CRL file" in error and "nope.crl" in error


def test_a_file_that_is_no_crl_is_named(write: Write) -> None:
    pki(write, serialization.Encoding.DER)
    write("crl/ca.crl", "not a CRL at all\n")
    errors = errors_of(write("xfrmctl.yaml", CONN))
    assert len(errors) == 1 and "xfrmctl.yaml:13: connections.site-b.remote.crls[0]:" in errors[0]
    assert errors[0].endswith("/crl/ca.crl: not a PEM or DER CRL")


def test_an_ocsp_uri_must_be_http(write: Write) -> None:
    error = only_error(write, CONN.replace("http://ocsp.example.org:8080/", "ldap://x/"))
    assert "xfrmctl.yaml:14: connections.site-b.remote.ocsp_uris[0]:" in error
    assert "must be an http:// or https:// URL" in error


def test_the_fetch_timeout_is_bounded(write: Write) -> None:
    error = only_error(write, CONN.replace("revocation_timeout: 2.5", "revocation_timeout: 0"))
    assert "xfrmctl.yaml:2: settings.revocation_timeout:" in error
