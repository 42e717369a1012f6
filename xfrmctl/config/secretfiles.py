"""Reading secrets (PSKs, private keys) only from files other users cannot touch.

A secret readable by other users is refused, not warned about: the daemon would otherwise
happily authenticate with a key that any local user could have copied or replaced.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from pathlib import Path

UNSAFE_BITS = stat.S_IROTH | stat.S_IWOTH | stat.S_IWGRP


class SecretError(ValueError):
    """A secret file is missing, unsafe or malformed; the message names file and problem."""


def read_private_file(path: Path, what: str) -> bytes:
    """Bytes of a secret file, after refusing it if others could read or change it."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise SecretError(f"{what} {path} does not exist") from None
    except PermissionError:
        raise SecretError(f"{what} {path} cannot be accessed: permission denied") from None
    except OSError as exc:
        raise SecretError(f"{what} {path} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise SecretError(f"{what} {path} is not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & UNSAFE_BITS:
        problems = []
        if mode & stat.S_IROTH:
            problems.append("world-readable")
        if mode & stat.S_IWOTH:
            problems.append("world-writable")
        if mode & stat.S_IWGRP:
            problems.append("group-writable")
        raise SecretError(
            f"{what} {path} has mode {mode:04o} ({', '.join(problems)}); refusing to use it: "
            f"run `chmod 600 {path}`"
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SecretError(f"{what} {path} cannot be read: {exc.strerror}") from None


def decode_psk(raw: bytes, where: str) -> bytes:
    """strongSwan PSK forms: `0x` hex, `0s` base64, else the text itself; one newline stripped."""
    if raw.endswith(b"\r\n"):
        raw = raw[:-2]
    elif raw.endswith(b"\n"):
        raw = raw[:-1]
    if raw[:2].lower() == b"0x":
        try:
            secret = binascii.unhexlify(raw[2:].replace(b":", b"").strip())
        except (binascii.Error, ValueError):
            raise SecretError(f"{where}: the 0x form needs an even number of hex digits") from None
    elif raw[:2] == b"0s":
        try:
            secret = base64.b64decode(raw[2:].strip(), validate=True)
        except (binascii.Error, ValueError):
            raise SecretError(f"{where}: the 0s form needs valid base64") from None
    else:
        secret = raw
    if not secret:
        raise SecretError(f"{where}: the pre-shared key is empty")
    return secret


def read_psk(path: Path) -> bytes:
    """A PSK from a file, after the permission check."""
    return decode_psk(read_private_file(path, "psk_file"), f"psk_file {path}")


def file_mode(path: Path) -> int:
    """Permission bits, for messages about inline secrets in a readable main file."""
    return stat.S_IMODE(os.stat(path).st_mode)
