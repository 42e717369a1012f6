"""What `xfrmctl daemon` imports before it serves: the stacks only some configurations or
events need (X.509 and revocation fetching for certificates, the failure diagnosis for
`explain`) load when first used, since every daemon start pays for its imports (seconds under
the lab's emulation)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from daemon_helpers import BASE_PORT

DEFERRED = (
    "cryptography.x509",
    "urllib.request",
    "http.client",
    "xfrmctl.ike.crypto.certs",
    "xfrmctl.ike.crypto.chains",
    "xfrmctl.ike.crypto.revocation",
    "xfrmctl.ike.diagnosis",
    "xfrmctl.config.docstrings",  # the editor schema only
    "difflib",  # "did you mean" for an unknown configuration key only
    "xfrmctl.daemon.status",  # the replies' pydantic models: once the daemon is ready
    # XFRM interfaces and offload only (the stale-interface scan at start is rtnl_scan's):
    "pyroute2.iproute.linux",
    "pyroute2.netlink.rtnl.marshal",
    "pyroute2.ethtool.ethtool",
)


def _loaded_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint('\\n'.join(sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return set(out.stdout.split())


def test_the_daemon_starts_without_the_certificate_and_diagnosis_stacks() -> None:
    loaded = _loaded_after(
        "import xfrmctl.daemon.main, xfrmctl.config.loader, xfrmctl.daemon.xfrm_glue"
    )
    assert "xfrmctl.daemon.core" in loaded  # the daemon really loaded
    assert sorted(m for m in DEFERRED if m in loaded) == []


@pytest.mark.parametrize(
    ("code", "needs"),
    [
        ("import xfrmctl.ike.crypto.revocation", "cryptography.x509"),
        ("from xfrmctl.daemon import revocation as r; r._opener()", "urllib.request"),
        (
            "from types import SimpleNamespace as S\n"
            "from xfrmctl.daemon.handler import _connection_status as c\n"
            "c(S(name='a', local_addrs=[], remote_addrs=[], children=[]), False)",
            "xfrmctl.daemon.status",
        ),
        (
            "from xfrmctl.kernel.interfaces import _ipr; _ipr(None).__enter__()",
            "pyroute2.iproute.linux",
        ),
    ],
)
def test_the_deferred_stacks_load_where_used(code: str, needs: str) -> None:
    """The probe of the test above sees such a module load (it is not blind)."""
    assert needs in _loaded_after(code)


def test_a_first_key_exchange_imports_nothing() -> None:
    """What a setup needs is loaded with the daemon: its first IKE SA imports nothing more."""
    daemon = "import xfrmctl.daemon.main, xfrmctl.config.loader, xfrmctl.daemon.xfrm_glue"
    loaded = _loaded_after(daemon)
    exchange = (
        "from xfrmctl.ike.crypto.keyexchange import new_key_exchange\n"
        "from xfrmctl.ike.iana import KeId\n"
        "a, b = new_key_exchange(KeId.CURVE25519), new_key_exchange(KeId.CURVE25519)\n"
        "a.shared_secret(b.public_value())"
    )
    assert sorted(_loaded_after(f"{daemon}\n{exchange}") - loaded) == []


PORT = BASE_PORT + 1010  # a range of its own among the daemon tests
READY_PROBE = """
import asyncio, os, signal, sys
from pathlib import Path
from daemon_helpers import RecordingKernel
from xfrmctl.daemon.main import run_daemon

async def main() -> None:
    tmp = Path(sys.argv[1])
    sock = tmp / "xfrmctl.sock"
    task = asyncio.create_task(run_daemon(tmp / "xfrmctl.yaml", sock, RecordingKernel()))
    while not sock.exists() and not task.done():
        await asyncio.sleep(0.01)
    for _ in range(100):  # the loop turns after ready; no request is made
        if "xfrmctl.daemon.status" in sys.modules:
            break
        await asyncio.sleep(0.01)
    print("xfrmctl.daemon.status" in sys.modules)
    os.kill(os.getpid(), signal.SIGTERM)
    await task

asyncio.run(main())
"""


def test_the_reply_models_load_after_ready_without_a_request(tmp_path: Path) -> None:
    """Deferred past "ready" (the test above), not to the first `up`: loaded while nothing
    asks."""
    (tmp_path / "k.psk").write_text("a secret\n")
    (tmp_path / "k.psk").chmod(0o600)
    (tmp_path / "xfrmctl.yaml").write_text(
        f"settings:\n  port: {PORT}\n  port_nat_t: {PORT + 1}\nconnections:\n  c:\n"
        "    local_addrs: [127.0.0.1]\n    remote_addrs: [127.0.0.2]\n"
        "    local: {auth: psk, id: a.example}\n    remote: {auth: psk, id: b.example}\n"
        "    psk_file: k.psk\n    children:\n      n: {mode: transport}\n"
    )
    helpers = Path(__file__).resolve().parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(helpers), *sys.path]))
    out = subprocess.run(
        [sys.executable, "-c", READY_PROBE, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True"], out.stdout + out.stderr[-2000:]
