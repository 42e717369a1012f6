"""Kernel errors as exceptions that name the object and the cause in words.

The kernel answers with an errno and, since Linux 4.12, an extended-ack string; neither names
the SA or policy, and the errno alone is ambiguous (ENOSYS means "no such algorithm" for NEWSA).
The request that failed knows what it was about, so the message is built from both.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field

from xfrmctl.kernel.messages import Msg

_SA_MSGS = {Msg.NEWSA, Msg.UPDSA, Msg.DELSA, Msg.GETSA, Msg.ALLOCSPI, Msg.GETAE, Msg.NEWAE}
_POLICY_MSGS = {Msg.NEWPOLICY, Msg.UPDPOLICY, Msg.DELPOLICY, Msg.GETPOLICY}

_ALG_KINDS = {
    "AEAD": "aead",
    "CRYPT": "crypt",
    "AUTH": "auth",
    "AUTH_TRUNC": "auth",
    "COMP": "comp",
}


@dataclass(frozen=True)
class ErrorContext:
    """What a request was about: the object in words, its protocol module, its algorithms."""

    what: object = ""  # rendered with str() only when an error needs it
    module: str | None = None  # e.g. "esp4"
    algorithms: dict[str, str] = field(default_factory=dict)  # kind (aead/crypt/...) -> name


class XfrmError(Exception):
    """Any failure of the XFRM layer; `code` is the errno, `ext_ack` the kernel's own words."""

    def __init__(self, message: str, code: int = errno.EIO, ext_ack: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.ext_ack = ext_ack


class KernelError(XfrmError):
    """The kernel refused a request."""

    @staticmethod
    def from_netlink(
        msg_type: int, code: int, ext_ack: str | None, ctx: ErrorContext | None = None
    ) -> KernelError:
        ctx = ctx or ErrorContext()
        cls, cause = _classify(msg_type, code, ext_ack, ctx)
        what = str(ctx.what) or _default_what(msg_type)
        text = f"{cause}: {what}" if cls in (ObjectExistsError, NotFoundError) else cause
        if cls not in (ObjectExistsError, NotFoundError) and what:
            text = f"{what}: {cause}"
        if ext_ack and ext_ack.lower() not in text.lower():
            text += f" (kernel: {ext_ack})"
        return cls(text, code=code, ext_ack=ext_ack)


class ObjectExistsError(KernelError):
    pass


class NotFoundError(KernelError):
    pass


class UnsupportedError(KernelError):
    """This kernel lacks a protocol, mode or feature (no module, too old)."""


class AlgorithmUnavailableError(UnsupportedError):
    pass


class PermissionDeniedError(KernelError):
    pass


class InvalidRequestError(KernelError):
    pass


def _default_what(msg_type: int) -> str:
    try:
        return f"XFRM {Msg(msg_type).name}"
    except ValueError:
        return f"XFRM message {msg_type}"


def _classify(
    msg_type: int, code: int, ext_ack: str | None, ctx: ErrorContext
) -> tuple[type[KernelError], str]:
    is_sa = msg_type in _SA_MSGS
    noun = "SA" if is_sa else "policy" if msg_type in _POLICY_MSGS else "object"
    ack = ext_ack or ""
    if code == errno.EEXIST:
        return ObjectExistsError, f"{noun} already exists"
    if code in (errno.ESRCH, errno.ENOENT) and msg_type not in (Msg.NEWSA, Msg.UPDSA):
        return NotFoundError, f"no such {noun}"
    if code == errno.ENOENT and msg_type == Msg.UPDSA and "algorithm" not in ack:
        return NotFoundError, "no such SA to update (no larval state from ALLOCSPI)"
    if code in (errno.EPERM, errno.EACCES):
        return PermissionDeniedError, "permission denied (needs CAP_NET_ADMIN in this netns)"
    if is_sa and (code in (errno.ENOSYS, errno.ENOENT) or "algorithm not found" in ack):
        for word, kind in _ALG_KINDS.items():
            if f"{word} algorithm" in ack and kind in ctx.algorithms:
                name = ctx.algorithms[kind]
                return AlgorithmUnavailableError, (f"algorithm {name} not available in this kernel")
        if ctx.algorithms:
            names = ", ".join(sorted(ctx.algorithms.values()))
            return AlgorithmUnavailableError, (
                f"an algorithm of {names} is not available in this kernel"
            )
    if is_sa and code == errno.EPROTONOSUPPORT:
        module = ctx.module or "esp4/esp6/ah4/ah6"
        proto = module.rstrip("46").upper() or "IPsec"
        return UnsupportedError, f"kernel lacks {proto} support (module {module} not loaded)"
    if code == errno.EOPNOTSUPP:
        return UnsupportedError, "not supported by this kernel or device"
    if code == errno.EINVAL:
        return InvalidRequestError, "invalid request"
    return KernelError, os.strerror(code) if code else "unknown error"
