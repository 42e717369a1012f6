"""Load pyroute2's netlink core without its package's eager imports.

`import pyroute2` (and so any `import pyroute2.netlink...`) first runs pyroute2/__init__.py,
which imports every family the library supports: IPDB, NDB, conntrack, nl80211, WireGuard,
IPVS and more. xfrmctl uses the netlink core and two small modules. The rest costs every
daemon and CLI process about 10 MB of memory and 70 ms at start-up; in the TCG lab guest it
costs about 6 s per process.

Importing this module (xfrmctl/kernel/__init__.py does it first) calls `defer_package_init()`,
which registers the `pyroute2` package without running its __init__, so
submodules load alone. The first access to an attribute of the package itself (for example
`from pyroute2 import IPRoute` elsewhere in the same process) runs the real __init__ once,
so other users of pyroute2 in the process still see the whole library.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType


def defer_package_init() -> None:
    """Register `pyroute2` unexecuted unless something already imported it."""
    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or spec.loader is None:
        return  # not installed: the real import reports it where it is used
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def complete(name: str) -> object:
        """PEP 562 hook: a submodule loads alone (pyroute2's own `from pyroute2 import
        config`); any other missing attribute runs the real __init__, once."""
        if not name.startswith("__") and importlib.util.find_spec(f"pyroute2.{name}"):
            return importlib.import_module(f"pyroute2.{name}")
        del package.__dict__["__getattr__"]
        loader.exec_module(package)
        return getattr(package, name)

    package.__dict__["__getattr__"] = complete
    sys.modules["pyroute2"] = package


def loaded_fully(package: ModuleType | None = None) -> bool:
    """Whether pyroute2/__init__.py has run (for tests of the deferral)."""
    module = package if package is not None else sys.modules.get("pyroute2")
    return module is not None and "__getattr__" not in module.__dict__


defer_package_init()
