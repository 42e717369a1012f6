"""RSA keys for the lab's test PKIs, made on the host before the guest boots.

Generating an RSA key is a prime search: a fraction of a second here, but most of a minute
for three 4096-bit keys under the guest's emulation. `lab.py` calls `prepare` before it boots;
tests call `rsa_key`, which reads a prepared key or, in a run without lab.py, makes one. The
keys are test material only: they sign throwaway lab certificates.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

WANTED = {4096: 3, 2048: 2}  # bits: how many (integration/test_pki_strongswan.py)


def keys_dir(out: Path | None = None) -> Path:
    base = out or Path(os.environ.get("XFRMCTL_LAB_OUT", Path(__file__).parent.parent / "lab-out"))
    return base / "test-keys"


def _path(folder: Path, bits: int, index: int) -> Path:
    return folder / f"rsa{bits}-{index}.pem"


def prepare(out: Path) -> None:
    """Make the keys tests will ask for, once (they are kept in lab-out between runs)."""
    folder = keys_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    for bits, count in WANTED.items():
        for index in range(count):
            path = _path(folder, bits, index)
            if not path.exists():
                key = rsa.generate_private_key(65537, bits)
                pem = key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
                path.write_bytes(pem)


def rsa_key(bits: int, index: int) -> rsa.RSAPrivateKey:
    """The prepared key `index` of `bits`, or a new one if lab.py did not prepare it."""
    path = _path(keys_dir(), bits, index)
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), None)
        if isinstance(key, rsa.RSAPrivateKey) and key.key_size == bits:
            return key
    return rsa.generate_private_key(65537, bits)
