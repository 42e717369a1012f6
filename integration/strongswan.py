"""Run strongSwan's charon as an interop peer in a lab host, one daemon per network namespace.

Each charon gets its own strongswan.conf (including the system one), its own vici socket in
/run (9p cannot hold Unix sockets), a file log in the writable lab folder, and its own swanctl
directory (``SWANCTL_DIR``) holding swanctl.conf, certificates and keys.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from netlab import Host

CHARON = "/usr/sbin/charon-systemd"
SWANCTL = "/usr/sbin/swanctl"
SWANCTL_SUBDIRS = ("x509", "x509ca", "private", "ecdsa", "rsa", "pubkey", "conf.d")


@dataclass(frozen=True)
class PeerFiles:
    """PEM files a charon needs for certificate authentication (copied into its swanctl dir)."""

    cert: bytes
    key: bytes
    ca: bytes


class Charon:
    """One charon in one lab host, configured by a swanctl.conf text and driven by swanctl."""

    def __init__(
        self,
        host: Host,
        workdir: Path,
        swanctl_conf: str,
        files: PeerFiles | None = None,
    ) -> None:
        self.host = host
        self.vici = f"/run/charon-{host.ns}.vici"
        self.log = workdir / f"{host.name}-charon.log"
        self.dir = workdir / f"{host.name}-swanctl"
        for sub in SWANCTL_SUBDIRS:
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "swanctl.conf").write_text(swanctl_conf)
        if files is not None:
            (self.dir / "x509" / f"{host.name}.pem").write_bytes(files.cert)
            (self.dir / "x509ca" / "ca.pem").write_bytes(files.ca)
            key = self.dir / "private" / f"{host.name}.pem"
            key.write_bytes(files.key)
            key.chmod(0o600)
        self.conf = workdir / f"{host.name}-strongswan.conf"
        self.conf.write_text(
            "include /etc/strongswan.conf\n"
            "charon {\n"
            f"  plugins {{\n    vici {{\n      socket = unix://{self.vici}\n    }}\n  }}\n"
            "  install_routes = no\n"
            "  filelog {\n"
            "    lab {\n"
            f"      path = {self.log}\n"
            "      time_format = %T\n"
            "      default = 1\n"
            "      ike = 2\n"
            "      cfg = 2\n"
            "      knl = 2\n"
            "      flush_line = yes\n"
            "    }\n"
            "  }\n"
            "}\n"
            f"swanctl {{\n  socket = unix://{self.vici}\n}}\n"
        )
        self.env = [f"STRONGSWAN_CONF={self.conf}", f"SWANCTL_DIR={self.dir}"]
        self.proc = host.popen(
            ["env", *self.env, CHARON],
            stdout=(workdir / f"{host.name}-charon.out").open("w"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while not Path(self.vici).exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"charon did not start in {host.name}:\n{self.log_text()}")
            time.sleep(0.2)
        self.swanctl("--load-all")

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else "(no charon log)"

    def swanctl(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        proc = self.host.run(["env", *self.env, SWANCTL, *args], check=False, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"swanctl {' '.join(args)} exited {proc.returncode}:\n"
                f"{proc.stdout}\n{proc.stderr}\n--- charon log ---\n{self.log_text()}"
            )
        return proc

    def initiate(self, ike: str, child: str, timeout: int = 150) -> None:
        """Initiate and wait for the outcome (charon retransmits for ~165 s in total)."""
        self.swanctl(
            "--initiate",
            "--ike",
            ike,
            "--child",
            child,
            "--timeout",
            str(timeout),
            timeout=timeout + 30,
        )

    def sa_summary(self, ike: str) -> str:
        """`swanctl --list-sas --raw` for one connection, for asserting algorithms and SPIs."""
        return self.swanctl("--list-sas", "--ike", ike, "--raw").stdout

    def ike_sa_count(self, ike: str) -> int:
        return len(re.findall(r"\bstate=ESTABLISHED\b", self.sa_summary(ike)))

    def stop(self) -> int:
        """Stop charon as systemd would (SIGTERM); returns its exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)


def swanctl_connection(
    *,
    name: str,
    child: str,
    local_addr: str,
    remote_addr: str,
    local_id: str,
    remote_id: str,
    auth: str,
    ike_proposal: str,
    esp_proposal: str,
    mode: str,
    local_ts: str,
    remote_ts: str,
    cert_name: str | None = None,
    ah_proposal: str | None = None,
) -> str:
    """One swanctl.conf connection with one child, PSK or certificate (pubkey) auth.

    With `ah_proposal` the child negotiates AH with it instead of ESP (`esp_proposal` unused).
    """
    proposals = (
        f"ah_proposals = {ah_proposal}" if ah_proposal else f"esp_proposals = {esp_proposal}"
    )
    if auth == "psk":
        local_auth = f"auth = psk\n      id = {local_id}"
        remote_auth = f"auth = psk\n      id = {remote_id}"
    else:
        local_auth = f"auth = pubkey\n      id = {local_id}\n      certs = {cert_name}.pem"
        remote_auth = f"auth = pubkey\n      id = {remote_id}\n      cacerts = ca.pem"
    return (
        f"  {name} {{\n"
        "    version = 2\n"
        f"    local_addrs = {local_addr}\n"
        f"    remote_addrs = {remote_addr}\n"
        f"    proposals = {ike_proposal}\n"
        f"    local {{\n      {local_auth}\n    }}\n"
        f"    remote {{\n      {remote_auth}\n    }}\n"
        "    children {\n"
        f"      {child} {{\n"
        f"        mode = {mode}\n"
        f"        local_ts = {local_ts}\n"
        f"        remote_ts = {remote_ts}\n"
        f"        {proposals}\n"
        "      }\n"
        "    }\n"
        "  }\n"
    )


def swanctl_conf(connections: list[str], psks: list[tuple[str, str, str]]) -> str:
    """A swanctl.conf from connection blocks and (id, id, secret) PSK entries."""
    secrets = []
    for n, (id1, id2, secret) in enumerate(psks):
        quoted = '"' + secret.replace("\\", "\\\\").replace('"', '\\"') + '"'
        secrets.append(
            f"  ike-{n} {{\n    id-1 = {id1}\n    id-2 = {id2}\n    secret = {quoted}\n  }}\n"
        )
    return "connections {\n" + "".join(connections) + "}\nsecrets {\n" + "".join(secrets) + "}\n"
