"""Loading the main file and its includes into one validated configuration.

Every problem found is collected, not just the first, so `xfrmctl check` can list them all.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from xfrmctl.config.errors import ConfigError, ConfigIssue, pydantic_message
from xfrmctl.config.model import Connection, Settings, XfrmctlConfig
from xfrmctl.config.rules import find_problems
from xfrmctl.config.secretfiles import SecretError, decode_psk, read_private_file, read_psk
from xfrmctl.config.yamlnodes import Loc, Position, SourceMap, YamlError, load_yaml

# Path-valued keys inside a connection, resolved relative to the file that wrote them.
_PATH_KEYS: tuple[tuple[str, ...], ...] = (
    ("psk_file",),
    ("local", "key"),
    ("local", "certs"),
    ("remote", "cacerts"),
    ("remote", "certs"),
    ("remote", "crls"),
)


@dataclass
class LoadedConfig:
    """A valid configuration plus the secrets it refers to (never shown by repr)."""

    model: XfrmctlConfig
    path: Path
    files: list[Path]
    warnings: list[ConfigIssue] = field(default_factory=list)
    _psks: dict[str, bytes] = field(default_factory=dict, repr=False)
    _keys: dict[str, bytes] = field(default_factory=dict, repr=False)

    @property
    def settings(self) -> Settings:
        return self.model.settings

    @property
    def connections(self) -> dict[str, Connection]:
        return self.model.connections

    def connection(self, name: str) -> Connection:
        """The named connection; KeyError names it when unknown."""
        try:
            return self.model.connections[name]
        except KeyError:
            raise KeyError(f"no connection named {name!r} in {self.path}") from None

    def psk_bytes(self, name: str) -> bytes:
        """The connection's pre-shared key, decoded; KeyError if it has none."""
        try:
            return self._psks[name]
        except KeyError:
            raise KeyError(f"connection {name!r} has no pre-shared key") from None

    def private_key_bytes(self, name: str) -> bytes:
        """Contents of the connection's private key file (PEM or DER); KeyError if none."""
        try:
            return self._keys[name]
        except KeyError:
            raise KeyError(f"connection {name!r} has no private key") from None


class _Collector:
    def __init__(self, main: Path) -> None:
        self.main = main
        self.sources = SourceMap()
        self.issues: list[ConfigIssue] = []

    def add(self, loc: Loc, message: str, warning: bool = False) -> None:
        self.issues.append(ConfigIssue(self.sources.find(loc, self.main), loc, message, warning))

    def add_yaml(self, exc: YamlError) -> None:
        self.issues.append(ConfigIssue(exc.position, exc.loc, exc.message))

    def file_of(self, loc: Loc) -> Path:
        return self.sources.file_of(loc, self.main)


MAX_FILE_SIZE = 16 * 1024 * 1024  # far beyond any fleet's configuration; bounds a hostile one
READ_CHUNK = 256 * 1024


def _read_bounded(path: Path) -> bytes | None:
    """The file's bytes, None past MAX_FILE_SIZE. In chunks: `read(MAX_FILE_SIZE + 1)` asks
    malloc for the whole bound up front, on every reload."""
    chunks, total = [], 0
    with path.open("rb") as f:
        while chunk := f.read(READ_CHUNK):
            chunks.append(chunk)
            total += len(chunk)
            if total > MAX_FILE_SIZE:
                return None
    return b"".join(chunks)


def _read_text(path: Path, what: str, out: _Collector) -> str | None:
    try:
        raw = _read_bounded(path)
        if raw is None:
            message = f"{what} is larger than {MAX_FILE_SIZE // 2**20} MiB"
            out.issues.append(ConfigIssue(Position(path, 0), (), message))
            return None
        return raw.decode("utf-8")
    except FileNotFoundError:
        out.issues.append(ConfigIssue(Position(path, 0), (), f"{what} does not exist"))
    except PermissionError:
        out.issues.append(ConfigIssue(Position(path, 0), (), f"{what}: permission denied"))
    except UnicodeDecodeError as exc:
        line = exc.object.count(b"\n", 0, exc.start) + 1
        col = exc.start - (exc.object.rfind(b"\n", 0, exc.start) + 1) + 1
        bad = exc.object[exc.start : exc.end].hex(" ")
        message = f"{what} is not UTF-8 text: byte(s) {bad} at column {col}"
        out.issues.append(ConfigIssue(Position(path, line), (), message))
    except OSError as exc:
        out.issues.append(ConfigIssue(Position(path, 0), (), f"{what}: {exc.strerror}"))
    return None


def _merge_include(path: Path, merged: dict[str, Any], out: _Collector) -> None:
    text = _read_text(path, "include file", out)
    if text is None:
        return
    local = SourceMap()
    try:
        data = load_yaml(text, path, local)
    except YamlError as exc:
        out.add_yaml(exc)
        return
    if data is None:
        return
    if not isinstance(data, dict):
        problem = "expected a mapping with connections:"
        out.issues.append(ConfigIssue(Position(path, 1), (), problem))
        return
    for key in data:
        if key != "connections":
            out.issues.append(
                ConfigIssue(
                    local.find((key,), path),
                    (key,),
                    "only 'connections' may appear in an include file",
                )
            )
    conns = data.get("connections") or {}
    if not isinstance(conns, dict):
        out.issues.append(
            ConfigIssue(local.find(("connections",), path), ("connections",), "expected a mapping")
        )
        return
    target = merged.setdefault("connections", {})
    if not isinstance(target, dict):
        return
    taken = []
    for name, value in conns.items():
        if name in target:
            first = out.sources.find(("connections", name), out.main)
            out.issues.append(
                ConfigIssue(
                    local.find(("connections", name), path),
                    ("connections", name),
                    f"duplicate connection name {name!r}: already defined at {first}",
                )
            )
            continue
        target[name] = value
        taken.append(name)
    out.sources.include(local, path, frozenset(taken))


def _resolve_paths(data: dict[str, Any], out: _Collector) -> None:
    """Make relative file names absolute against the directory of the file naming them."""
    conns = data.get("connections")
    if not isinstance(conns, dict):
        return
    for name, conn in conns.items():
        for keys in _PATH_KEYS:
            holder: Any = conn
            for key in keys[:-1]:
                holder = holder.get(key) if isinstance(holder, dict) else None
            if not isinstance(holder, dict) or keys[-1] not in holder:
                continue
            base = out.file_of(("connections", name, *keys)).parent
            value = holder[keys[-1]]
            if isinstance(value, str):
                holder[keys[-1]] = os.path.normpath(base / value)
            elif isinstance(value, list):
                holder[keys[-1]] = [
                    os.path.normpath(base / v) if isinstance(v, str) else v for v in value
                ]


class _ReadOnce:
    """A secrets reader that reads each file once per load, failures included: a fleet's
    thousand connections often share one psk_file."""

    def __init__(self, read: Callable[[Path], bytes]) -> None:
        self._read = read
        self._done: dict[Path, bytes | SecretError] = {}

    def __call__(self, path: Path) -> bytes:
        if path not in self._done:
            try:
                self._done[path] = self._read(path)
            except SecretError as exc:
                self._done[path] = exc
        got = self._done[path]
        if isinstance(got, SecretError):
            raise got
        return got


def _load_secrets(config: LoadedConfig, out: _Collector) -> None:
    psk_of = _ReadOnce(read_psk)
    key_of = _ReadOnce(lambda path: read_private_file(path, "private key"))
    for name, conn in config.model.connections.items():
        loc: Loc = ("connections", name)
        if conn.uses_psk and conn.psk_file is not None:
            try:
                config._psks[name] = psk_of(conn.psk_file)
            except SecretError as exc:
                out.add((*loc, "psk_file"), str(exc))
        elif conn.uses_psk and conn.psk is not None:
            try:
                config._psks[name] = decode_psk(conn.psk.encode(), "psk")
            except SecretError as exc:
                out.add((*loc, "psk"), str(exc))
            out.add(
                (*loc, "psk"),
                "pre-shared key written inline; move it to a psk_file readable only by root",
                warning=True,
            )
        if conn.local.auth == "pubkey" and conn.local.key is not None:
            try:
                config._keys[name] = key_of(conn.local.key)
            except SecretError as exc:
                out.add((*loc, "local", "key"), str(exc))
        for side, key in (("local", "certs"), ("remote", "cacerts"), ("remote", "certs")):
            for index, cert in enumerate(getattr(getattr(conn, side), key)):
                if not cert.is_file():
                    out.add((*loc, side, key, index), f"certificate file {cert} does not exist")
        for index, crl in enumerate(conn.remote.crls):
            from xfrmctl.ike.crypto.revocation import crl_file_problem  # start-up cost: x509

            if problem := crl_file_problem(crl):
                out.add((*loc, "remote", "crls", index), problem)


def check_config(path: Path) -> tuple[LoadedConfig | None, list[ConfigIssue]]:
    """Load and validate; returns the config (None on errors) and every issue, warnings too."""
    out = _Collector(path)
    text = _read_text(path, "configuration file", out)
    if text is None:
        return None, out.issues
    try:
        data = load_yaml(text, path, out.sources)
    except YamlError as exc:
        out.add_yaml(exc)
        return None, out.issues
    if data is None:
        data = {}
    if not isinstance(data, dict):
        out.add((), "expected a mapping with settings: and connections:")
        return None, out.issues
    settings = data.get("settings")
    pattern = Settings().include
    if isinstance(settings, dict) and isinstance(settings.get("include"), str):
        pattern = settings["include"]
    files = [path]
    for include in sorted(glob.glob(str(path.parent / pattern))):
        files.append(Path(include))
        _merge_include(Path(include), data, out)
    _resolve_paths(data, out)
    try:
        model = XfrmctlConfig.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            loc, message = pydantic_message(XfrmctlConfig, error)
            out.add(loc, message)
        return None, _sorted(out.issues, files)
    for loc, message in find_problems(model):
        out.add(loc, message)
    loaded = LoadedConfig(model=model, path=path, files=files)
    _load_secrets(loaded, out)
    loaded.warnings = [i for i in out.issues if i.warning]
    if any(not i.warning for i in out.issues):
        return None, _sorted(out.issues, files)
    return loaded, _sorted(out.issues, files)


def _sorted(issues: list[ConfigIssue], files: list[Path]) -> list[ConfigIssue]:
    """File order (main first, then includes), then line: the order a reader fixes them."""
    order = {f: i for i, f in enumerate(files)}
    return sorted(issues, key=lambda i: (order.get(i.position.file, -1), i.position.line))


def load_config(path: Path) -> LoadedConfig:
    """The validated configuration; raises ConfigError listing every problem."""
    loaded, issues = check_config(path)
    if loaded is None:
        raise ConfigError(issues)
    return loaded
