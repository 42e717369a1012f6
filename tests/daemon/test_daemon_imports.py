"""What `xfrmctl daemon` imports before it serves: the stacks only some configurations or
events need (X.509 and revocation fetching for certificates, the failure diagnosis for
`explain`) load when first used, since every daemon start pays for its imports (seconds under
the lab's emulation)."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
    "xfrmctl.daemon.status",  # the status reply's pydantic models: at the first reply
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
