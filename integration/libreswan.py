"""Run Libreswan's pluto as an interop peer in a lab host, one daemon per network namespace.

Debian's `libreswan` conflicts with strongSwan's packages, so `lab.py install` unpacks it into
LIBRESWAN_ROOT instead of installing it, and pluto runs from there without the `ipsec` wrapper
scripts: every path pluto would take from a system install (config, secrets, NSS database, run
dir with the ctl socket, log) is given on its command line. The NSS database and run dir live in
/run (the lab's 9p share cannot hold Unix sockets or SQLite locks); the config, secrets and log
live in the writable lab folder so they survive the guest.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from netlab import Host
from strongswan import PeerFiles

LIBRESWAN_ROOT = Path(os.environ.get("XFRMCTL_LIBRESWAN_ROOT", "/opt/xfrmctl-lab/libreswan"))
LIBEXEC = LIBRESWAN_ROOT / "usr" / "libexec" / "ipsec"
PLUTO, WHACK, ADDCONN = (str(LIBEXEC / n) for n in ("pluto", "whack", "addconn"))
CERTUTIL, PK12UTIL = "/usr/bin/certutil", "/usr/bin/pk12util"
P12_PASSWORD = "lab"  # the PKCS#12 file only carries a throwaway test key into NSS


def libreswan_missing() -> str | None:
    """None when the unpacked Libreswan and NSS tools are there, else what is missing."""
    missing = [p for p in (PLUTO, WHACK, ADDCONN, CERTUTIL, PK12UTIL) if not Path(p).exists()]
    if missing:
        return f"missing {', '.join(missing)}: run integration/lab.py install as root"
    return None


@dataclass(frozen=True)
class LibreswanConn:
    """One ipsec.conf `conn` where left is Libreswan's side; auth is "psk" or "pubkey"."""

    name: str
    left: str
    right: str
    left_id: str
    right_id: str
    auth: str
    ike: str  # Libreswan syntax, e.g. aes_gcm256-sha2_384-dh31
    esp: str  # e.g. aes_gcm256 or aes128-sha2_256
    mode: str  # tunnel or transport
    cert_nickname: str = "peer"

    def text(self) -> str:
        auth = ["authby=secret"]
        if self.auth == "pubkey":
            auth = ["authby=ecdsa", f"leftcert={self.cert_nickname}", "leftsendcert=always"]
        lines = [
            f"conn {self.name}",
            "  ikev2=yes",
            "  auto=add",
            f"  type={self.mode}",
            f"  left={self.left}",
            f"  right={self.right}",
            f"  leftid=@{self.left_id}",
            f"  rightid=@{self.right_id}",
            *(f"  {a}" for a in auth),
            f"  ike={self.ike}",
            f"  esp={self.esp}",
            "  pfs=no",
            "  keyingtries=1",  # fail the test instead of retrying forever
            # Without this, a peer's Delete makes pluto re-initiate what it initiated ("revival"),
            # and the tunnel a test just took down comes back.
            "  rekey=no",
            # No routes or firewall rules: the lab's hosts share a subnet and we only want SAs.
            '  leftupdown=""',
        ]
        return "\n".join(lines) + "\n"


class Pluto:
    """One pluto in one lab host, configured by conn blocks and PSKs, driven by whack."""

    def __init__(
        self,
        host: Host,
        workdir: Path,
        conns: list[LibreswanConn],
        psks: list[tuple[str, str, str]],
        files: PeerFiles | None = None,
    ) -> None:
        reason = libreswan_missing()
        if reason is not None:
            raise AssertionError(f"Libreswan is not available: {reason}")
        self.host = host
        self.run_dir = Path("/run/libreswan-lab") / host.ns
        self.nss_dir = self.run_dir / "nss"
        self.ctl = self.run_dir / "pluto.ctl"
        self.log = workdir / f"{host.name}-pluto.log"
        self.ipsec_dir = workdir / f"{host.name}-ipsec.d"
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self.nss_dir.mkdir(parents=True)
        self.ipsec_dir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / f"{host.name}-ipsec.conf"
        self.conf.write_text(
            "config setup\n  plutodebug=none\n\n" + "\n".join(c.text() for c in conns)
        )
        self.secrets = workdir / f"{host.name}-ipsec.secrets"
        self.secrets.write_text("".join(f'@{a} @{b} : PSK "{_psk_quote(s)}"\n' for a, b, s in psks))
        self.secrets.chmod(0o600)
        self._init_nss(files)
        self.log.unlink(missing_ok=True)
        # pluto execs the hard-coded /usr/libexec/ipsec/addconn (which also makes it listen):
        # bind the unpacked tree there, in a mount namespace of pluto's own.
        self.proc = host.popen(
            [
                "unshare", "--mount", "--propagation", "private",
                "sh", "-c", 'mount --bind "$0" /usr/libexec && exec "$@"',
                str(LIBEXEC.parent),
                "/usr/libexec/ipsec/pluto",
                "--nofork",
                "--config", str(self.conf),
                "--logfile", str(self.log),
                "--rundir", str(self.run_dir),
                "--nssdir", str(self.nss_dir),
                "--ipsecdir", str(self.ipsec_dir),
                "--secretsfile", str(self.secrets),
                "--dumpdir", str(self.run_dir),
                "--no-dnssec",
                "--nhelpers", "1",
            ],
            stdout=(workdir / f"{host.name}-pluto.out").open("w"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 180  # its self-tests take a while under TCG and load
        names = [c.name for c in conns]
        while not self.ctl.exists() or not self._loaded(names):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"pluto did not start and load {names} in {host.name}:\n{self.log_text()}"
                )
            time.sleep(0.3)

    def _loaded(self, names: list[str]) -> bool:
        """True once pluto's own addconn run has added every connection."""
        out = self.whack("--status", check=False)
        return all(f'"{n}":' in out for n in names)

    def _init_nss(self, files: PeerFiles | None) -> None:
        """The NSS database `ipsec initnss` would make, plus our CA and leaf when given."""
        db = f"sql:{self.nss_dir}"
        self._tool([CERTUTIL, "-N", "-d", db, "--empty-password"], "certutil -N")
        if files is None:
            return
        ca = self.nss_dir / "ca.pem"
        ca.write_bytes(files.ca)
        self._tool(
            [CERTUTIL, "-A", "-d", db, "-n", "lab-ca", "-t", "CT,,", "-a", "-i", str(ca)],
            "certutil -A",
        )
        p12 = self.nss_dir / "peer.p12"
        p12.write_bytes(_pkcs12(files, "peer"))
        self._tool([PK12UTIL, "-i", str(p12), "-d", db, "-W", P12_PASSWORD], "pk12util -i")

    def _tool(self, argv: list[str], what: str) -> subprocess.CompletedProcess[str]:
        proc = self.host.run(argv, check=False, timeout=120)
        if proc.returncode != 0:
            raise AssertionError(
                f"{what} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}\n"
                f"--- pluto log ---\n{self.log_text()}"
            )
        return proc

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else "(no pluto log)"

    def whack(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        """Run whack against this pluto; stdout and stderr together (whack reports on both)."""
        argv = [WHACK, "--ctlsocket", str(self.ctl), *args]
        proc = self.host.run(argv, check=False, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"whack {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
                f"\n--- pluto log ---\n{self.log_text()}"
            )
        return proc.stdout + proc.stderr

    def initiate(self, name: str) -> str:
        """Initiate and wait until pluto reports the outcome."""
        return self.whack("--name", name, "--initiate", timeout=180)

    def states(self, name: str) -> list[str]:
        """`whack --showstates` lines of one connection (IKE and Child SAs)."""
        out = self.whack("--showstates")
        return [line for line in out.splitlines() if f'"{name}"' in line]

    def established(self, name: str) -> bool:
        return any("ESTABLISHED_IKE_SA" in line for line in self.states(name))

    def conn_log(self, name: str) -> list[str]:
        """pluto's log lines about one connection: the only place pluto 4.10 prints the
        algorithms, selectors and SPIs it negotiated as a responder."""
        return [line for line in self.log_text().splitlines() if f'"{name}"' in line]

    def stop(self) -> int:
        """`whack --shutdown` (deletes pluto's SAs and policies); returns pluto's exit code."""
        if self.proc.poll() is None:
            self.whack("--shutdown", check=False, timeout=60)
        try:
            code = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(timeout=10)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        return code


def _psk_quote(secret: str) -> str:
    if '"' in secret or "\n" in secret:
        raise ValueError("this helper does not quote PSKs holding '\"' or newlines")
    return secret


def _pkcs12(files: PeerFiles, nickname: str) -> bytes:
    """PKCS#12 with the legacy 3DES/SHA-1 encryption every NSS's pk12util imports."""
    key = serialization.load_pem_private_key(files.key, password=None)
    cert = x509.load_pem_x509_certificate(files.cert)
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(2048)
        .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
        .hmac_hash(hashes.SHA1())
        .build(P12_PASSWORD.encode())
    )
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"peer key must be ECDSA or RSA, not {type(key).__name__}")
    return pkcs12.serialize_key_and_certificates(nickname.encode(), key, cert, None, encryption)
