"""xfrmctl loads pyroute2's netlink core alone, and the rest of pyroute2 still works on demand."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
import xfrmctl.daemon.core, xfrmctl.kernel.links
from xfrmctl.kernel._pyroute2 import loaded_fully
print(loaded_fully(), "pyroute2.ndb.main" in sys.modules, "pyroute2.ipdb" in sys.modules)
from pyroute2 import NDB, IPRoute
print(loaded_fully(), NDB.__name__, IPRoute.__module__)
"""


def test_the_daemon_imports_no_more_of_pyroute2_than_it_uses() -> None:
    # A fresh interpreter: this test process may have imported pyroute2 whole already.
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[0] == "False False False", out
    # Another user of pyroute2 in the same process still gets the whole package.
    assert out[1] == "True NDB pyroute2.iproute.linux", out
