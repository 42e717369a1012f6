#!/usr/bin/env python3
"""Handshake throughput of the sans-IO engine: IKE_SA_INIT + IKE_AUTH + first Child SA between
two in-memory IkeEndpoints (X25519, AES-GCM-256, PRF SHA-256), with PSK and with ECDSA P-256
certificates, on one core. Also reports the fraction of time spent inside `cryptography`.

Last line (machine-readable):
  psk_handshakes_per_s=<N> cert_handshakes_per_s=<M> crypto_fraction=<F>
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import ipaddress
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from xfrmctl.ike.crypto.certs import TrustStore
from xfrmctl.ike.crypto.signatures import LocalSigner
from xfrmctl.ike.engine import IkeEndpoint
from xfrmctl.ike.events import ChildSaReady
from xfrmctl.ike.iana import ProtocolId
from xfrmctl.ike.proposals import parse_proposals
from xfrmctl.ike.spec import (
    Auth,
    CertAuth,
    ChildSpec,
    ConnectionSpec,
    Identity,
    PskAuth,
    TsSpec,
)

A = ipaddress.ip_address("192.0.2.1")
B = ipaddress.ip_address("198.51.100.2")
IKE = tuple(parse_proposals(["aes256gcm16-prfsha256-x25519"], ProtocolId.IKE))
ESP = tuple(parse_proposals(["aes256gcm16"], ProtocolId.ESP))


def _child(local: str, remote: str) -> ChildSpec:
    return ChildSpec(
        "net",
        (TsSpec(ipaddress.ip_network(local)),),
        (TsSpec(ipaddress.ip_network(remote)),),
        ESP,
    )


def _specs(a_auth: Auth, b_auth: Auth) -> tuple[ConnectionSpec, ConnectionSpec]:
    a = ConnectionSpec(
        "a",
        (A,),
        (B,),
        Identity.parse("a.example"),
        Identity.parse("b.example"),
        a_auth,
        IKE,
        (_child("10.1.0.0/16", "10.2.0.0/16"),),
    )
    b = ConnectionSpec(
        "b",
        (B,),
        (),
        Identity.parse("b.example"),
        Identity.parse("a.example"),
        b_auth,
        IKE,
        (_child("10.2.0.0/16", "10.1.0.0/16"),),
    )
    return a, b


def _cert_auths() -> tuple[CertAuth, CertAuth]:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Bench CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    store = TrustStore([ca])

    def leaf(fqdn: str) -> CertAuth:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, fqdn)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(fqdn)]), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
            .sign(ca_key, hashes.SHA256())
        )
        der = cert.public_bytes(serialization.Encoding.DER)
        return CertAuth(LocalSigner.from_key(key), (der,), store)

    return leaf("a.example"), leaf("b.example")


def handshake(a_spec: ConnectionSpec, b_spec: ConnectionSpec) -> None:
    """One complete handshake; raises if it did not produce a Child SA on both sides."""
    a, b = IkeEndpoint([a_spec]), IkeEndpoint([b_spec])
    now = 0.0
    a.initiate("a", now=now)
    for _ in range(20):
        moved = False
        for dg in a.datagrams_to_send():
            b.receive_datagram(dg.data, dg.remote, dg.local, now)
            moved = True
        for dg in b.datagrams_to_send():
            a.receive_datagram(dg.data, dg.remote, dg.local, now)
            moved = True
        if not moved:
            break
    if not any(isinstance(e, ChildSaReady) for e in a.events()) or not any(
        isinstance(e, ChildSaReady) for e in b.events()
    ):
        raise SystemExit("handshake did not complete")


def rate(a_spec: ConnectionSpec, b_spec: ConnectionSpec, seconds: float) -> float:
    handshake(a_spec, b_spec)  # warm-up
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        handshake(a_spec, b_spec)
        n += 1
    return n / (time.perf_counter() - start)


def crypto_fraction(specs: list[tuple[ConnectionSpec, ConnectionSpec]], rounds: int) -> float:
    """Share of profiled time spent in cryptography's Python code and its Rust/OpenSSL calls."""
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(rounds):
        for a_spec, b_spec in specs:
            handshake(a_spec, b_spec)
    prof.disable()
    stats = pstats.Stats(prof)
    total = crypto = 0.0
    for (filename, _line, name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        total += tottime
        if "cryptography" in filename or "cryptography" in name or "_rust" in name:
            crypto += tottime
    return crypto / total if total else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    args = ap.parse_args()
    psk = PskAuth(b"benchmark pre-shared key")
    psk_specs = _specs(psk, psk)
    ca, cb = _cert_auths()
    cert_specs = _specs(ca, cb)
    psk_rate = rate(*psk_specs, args.seconds)
    print(f"PSK  X25519 AES-GCM-256:       {psk_rate:8.1f} handshakes/s")
    cert_rate = rate(*cert_specs, args.seconds)
    print(f"ECDSA-P256 certificates:       {cert_rate:8.1f} handshakes/s")
    frac = crypto_fraction([psk_specs, cert_specs], rounds=max(5, int(psk_rate)))
    print(f"time inside cryptography:      {frac * 100:8.1f} %")
    print(
        f"psk_handshakes_per_s={psk_rate:.1f} cert_handshakes_per_s={cert_rate:.1f} "
        f"crypto_fraction={frac:.3f}"
    )


if __name__ == "__main__":
    main()
