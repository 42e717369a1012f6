"""From configuration to the engine's auth: each direction its own method (local.auth for us,
remote.auth for the peer), and pinned peer certificates without any CA (remote.certs)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from ike.certs_fixture import make_ca, make_leaf

from xfrmctl.config import load_config
from xfrmctl.daemon.specs import build_specs
from xfrmctl.ike.spec import CertAuth, PeerCertAuth, PskAuth

PEM = serialization.Encoding.PEM


def files(tmp: Path) -> None:
    ca_key, ca = make_ca()
    key, leaf = make_leaf(ca_key, ca, "a.example")
    _, peer = make_leaf(ca_key, ca, "b.example")
    (tmp / "ca.pem").write_bytes(ca.public_bytes(PEM))
    (tmp / "a.pem").write_bytes(leaf.public_bytes(PEM))
    (tmp / "b.pem").write_bytes(peer.public_bytes(PEM))
    k = tmp / "a.key"
    k.write_bytes(
        key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    k.chmod(0o600)
    psk = tmp / "k.psk"
    psk.write_text("a shared secret\n")
    psk.chmod(0o600)


def config(tmp: Path, local: str, remote: str) -> Path:
    files(tmp)
    cfg = tmp / "xfrmctl.yaml"
    cfg.write_text(
        "connections:\n  c:\n    local_addrs: [192.0.2.1]\n    remote_addrs: [192.0.2.2]\n"
        f"    local: {{{local}}}\n    remote: {{{remote}}}\n"
        + ("    psk_file: k.psk\n" if "psk" in local + remote else "")
    )
    return cfg


def test_local_pubkey_remote_psk(tmp_path: Path) -> None:
    cfg = config(tmp_path, "auth: pubkey, id: a.example, certs: [a.pem], key: a.key", "auth: psk")
    (spec,) = build_specs(load_config(cfg))
    assert isinstance(spec.auth, CertAuth) and spec.auth.cert_chain
    assert isinstance(spec.peer_auth, PskAuth) and spec.peer_auth.psk == b"a shared secret"


def test_local_psk_remote_pubkey(tmp_path: Path) -> None:
    cfg = config(tmp_path, "auth: psk, id: a.example", "auth: pubkey, cacerts: [ca.pem]")
    (spec,) = build_specs(load_config(cfg))
    assert isinstance(spec.auth, PskAuth)
    assert isinstance(spec.peer_auth, PeerCertAuth)
    assert [c.subject.rfc4514_string() for c in spec.peer_auth.trust_store.cas] == ["CN=Test CA"]


@pytest.mark.parametrize("with_ca", [False, True])
def test_pinned_peer_certificate(tmp_path: Path, with_ca: bool) -> None:
    cacerts = ", cacerts: [ca.pem]" if with_ca else ""
    cfg = config(
        tmp_path,
        "auth: pubkey, id: a.example, certs: [a.pem], key: a.key",
        f"auth: pubkey, certs: [b.pem]{cacerts}",
    )
    (spec,) = build_specs(load_config(cfg))  # raised "no CA certificates configured" before
    assert isinstance(spec.peer_auth, PeerCertAuth)
    trust = spec.peer_auth.trust_store
    assert [c.subject.rfc4514_string() for c in trust.pinned] == ["CN=b.example"]
    assert len(trust.cas) == (1 if with_ca else 0)
    assert str(tmp_path / "b.pem") in trust.origins
