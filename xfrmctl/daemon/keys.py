"""`xfrmctl keys --wireshark DIR`: the live SAs' keys as Wireshark tables, written with care.

Contract. Daemon side, `export_tables`: from the engine's IKE SAs (SK_e*/SK_a*, RFC 7296
§2.14) and the Child SAs the kernel holds (KEYMAT, §2.17), one `esp_sa` line per ESP SA and
direction and one `ikev2_decryption_table` line per IKE SA that has keys, plus a sentence for
each SA left out and why; the handler calls it only when `settings.key_export` allows.
CLI side, `open_directory` and `write_tables`: the files go 0600 into an existing directory
that is not world-writable and belongs to root or the caller, through a private temporary
file (never following a symlink) renamed into place. Keys appear in the returned lines and in
the files only: never in logs, messages or exceptions.

Stdlib only at import time, so the CLI can use the writing half without the daemon's imports.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xfrmctl.daemon.wireshark import (
    ESP_SA,
    IKEV2_TABLE,
    TABLES,
    EspSaKeys,
    IkeSaKeys,
    NotDecryptable,
    esp_sa_record,
    ikev2_record,
)
from xfrmctl.ike.iana import ProtocolId

if TYPE_CHECKING:
    from xfrmctl.ike.events import ChildSaReady
    from xfrmctl.ike.sa import IkeSa

FILE_MODE = 0o600


@dataclass
class KeyTables:
    """The lines of each table, and what was left out (as sentences without keys)."""

    esp_sa: list[str] = field(default_factory=list, repr=False)
    ikev2: list[str] = field(default_factory=list, repr=False)
    skipped: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "tables": {ESP_SA: self.esp_sa, IKEV2_TABLE: self.ikev2},
            "ike_sas": len(self.ikev2),
            "esp_sas": len(self.esp_sa),
            "skipped": self.skipped,
        }


def ike_sa_keys(sa: IkeSa) -> IkeSaKeys | None:
    """The keys of one IKE SA, or None before IKE_SA_INIT has given it any."""
    crypto = sa.crypto
    if crypto is None:
        return None
    keys = crypto.keys
    return IkeSaKeys(
        label=f"{sa.conn_name or '(no connection yet)'}[{sa.id}]",
        spi_i=sa.spi_i,
        spi_r=sa.spi_r,
        encr=crypto.encr.transform.id,
        encr_key_bits=crypto.encr.transform.key_length,
        sk_ei=keys.sk_ei,
        sk_er=keys.sk_er,
        integ=crypto.integ.transform.id if crypto.integ is not None else None,
        sk_ai=keys.sk_ai,
        sk_ar=keys.sk_ar,
    )


def esp_sa_keys(ready: ChildSaReady) -> list[EspSaKeys]:
    """Both directions of an ESP Child SA pair: outbound (ours to the peer), then inbound."""
    assert ready.encr is not None  # ESP always negotiates ENCR
    label = f"{ready.conn}/{ready.child}"
    encr, bits = ready.encr.id, ready.encr.key_length
    integ = ready.integ.id if ready.integ is not None else None
    out = EspSaKeys(
        label=label,
        src=ready.local,
        dst=ready.remote,
        spi=ready.spi_out,
        encr=encr,
        encr_key_bits=bits,
        encr_key=ready.encr_key_out,
        integ=integ,
        integ_key=ready.integ_key_out,
    )
    inbound = dataclasses.replace(
        out,
        src=ready.remote,
        dst=ready.local,
        spi=ready.spi_in,
        encr_key=ready.encr_key_in,
        integ_key=ready.integ_key_in,
    )
    return [out, inbound]


def export_tables(ike_sas: Iterable[IkeSa], children: Iterable[ChildSaReady]) -> KeyTables:
    """Every live SA as a table line, or as a sentence in `skipped` saying why it is not."""
    tables = KeyTables()
    for sa in ike_sas:
        ike = ike_sa_keys(sa)
        if ike is None:
            continue
        try:
            tables.ikev2.append(ikev2_record(ike))
        except NotDecryptable as exc:
            tables.skipped.append(f"{ike.describe()}: {exc}")
    for ready in children:
        if ready.protocol != ProtocolId.ESP:
            tables.skipped.append(
                f"AH SAs of {ready.conn}/{ready.child}: AH does not encrypt, "
                "Wireshark shows their packets without keys"
            )
            continue
        for esp in esp_sa_keys(ready):
            try:
                tables.esp_sa.append(esp_sa_record(esp))
            except NotDecryptable as exc:
                tables.skipped.append(f"{esp.describe()}: {exc}")
    return tables


# ------------------------------------------------------------------------------- CLI side


class KeyFileError(Exception):
    """The directory or the files are not safe to write secret keys to, or cannot be."""


def open_directory(path: Path) -> int:
    """A descriptor of `path` once it is a directory fit for secret keys; the caller closes it.

    Refused: a missing path, a non-directory, a world-writable directory (anyone could swap
    the files) and one owned by someone other than root or the caller.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such directory (create it first, mode 0700)") from None
    except NotADirectoryError:
        raise KeyFileError(f"{path}: not a directory") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot open: {exc.strerror}") from None
    info = os.fstat(fd)
    problem = ""
    if info.st_mode & stat.S_IWOTH:
        problem = "is world-writable: anyone could replace the key files; use a 0700 directory"
    elif info.st_uid not in (0, os.geteuid()):
        problem = f"belongs to uid {info.st_uid}, not to root or you"
    if problem:
        os.close(fd)
        raise KeyFileError(f"{path}: {problem}")
    return fd


def check_tables(tables: Any) -> dict[str, list[str]]:
    """The daemon's `tables`, checked: each known table a list of single-line strings."""
    if not isinstance(tables, dict):
        raise KeyFileError("the daemon sent no key tables")
    checked: dict[str, list[str]] = {}
    for name in TABLES:
        lines = tables.get(name)
        if not isinstance(lines, list) or not all(
            isinstance(line, str) and "\n" not in line and "\r" not in line for line in lines
        ):
            raise KeyFileError(f"the daemon sent a malformed {name} table")
        checked[name] = lines
    return checked


def write_tables(directory: Path, tables: dict[str, list[str]], header: str) -> list[Path]:
    """Write each table as `directory/NAME`, mode 0600, replacing an earlier export."""
    dir_fd = open_directory(directory)
    try:
        return [
            _write_one(directory, dir_fd, name, [f"# {header}", *tables[name]]) for name in TABLES
        ]
    finally:
        os.close(dir_fd)


def _write_one(directory: Path, dir_fd: int, name: str, lines: Sequence[str]) -> Path:
    temp = f".{name}.{os.getpid()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(temp, flags, FILE_MODE, dir_fd=dir_fd)
    except OSError as exc:
        raise KeyFileError(f"{directory / temp}: cannot create: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            os.fchmod(out.fileno(), FILE_MODE)  # whatever the umask
            out.write("".join(f"{line}\n" for line in lines))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=dir_fd)
        raise KeyFileError(f"{directory / name}: cannot write: {exc.strerror}") from None
    return directory / name
