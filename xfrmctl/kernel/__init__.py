"""XFRM over netlink: SAs, policies, SPI allocation and kernel events, on pyroute2.

Start with `AsyncXfrm` (daemon) or `Xfrm` (blocking); objects are in `xfrmctl.kernel.types`.
"""

# First, before any pyroute2 import: loads pyroute2's netlink core alone (see _pyroute2.py).
from xfrmctl.kernel import _pyroute2  # noqa: F401  (isort: first)
from xfrmctl.kernel.algorithms import CIPHERS, INTEGRITY, Capabilities, Cipher, Integrity
from xfrmctl.kernel.client import AsyncXfrm, Xfrm
from xfrmctl.kernel.errors import (
    AlgorithmUnavailableError,
    InvalidRequestError,
    KernelError,
    NotFoundError,
    ObjectExistsError,
    PermissionDeniedError,
    UnsupportedError,
    XfrmError,
)
from xfrmctl.kernel.transaction import ChildSA, Ownership, TransactionError
from xfrmctl.kernel.types import (
    SA,
    Action,
    Aead,
    Auth,
    Comp,
    Crypt,
    Dir,
    Encap,
    Lifetime,
    Mark,
    Mode,
    Offload,
    Policy,
    PolicyId,
    Proto,
    SaDir,
    SaId,
    Selector,
    SpiRange,
    SpiRequest,
    Template,
)

__all__ = [
    "CIPHERS",
    "INTEGRITY",
    "SA",
    "Action",
    "Aead",
    "AlgorithmUnavailableError",
    "AsyncXfrm",
    "Auth",
    "Capabilities",
    "ChildSA",
    "Cipher",
    "Comp",
    "Crypt",
    "Dir",
    "Encap",
    "Integrity",
    "InvalidRequestError",
    "KernelError",
    "Lifetime",
    "Mark",
    "Mode",
    "NotFoundError",
    "ObjectExistsError",
    "Offload",
    "Ownership",
    "PermissionDeniedError",
    "Policy",
    "PolicyId",
    "Proto",
    "SaDir",
    "SaId",
    "Selector",
    "SpiRange",
    "SpiRequest",
    "Template",
    "TransactionError",
    "UnsupportedError",
    "Xfrm",
    "XfrmError",
]
