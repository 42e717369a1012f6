"""swanctl's `hw_offload` for one Child SA: which device, if any, does its crypto.

`no` installs in software; `yes` and `packet` bind both SAs to the device holding the local
address and fail, installing nothing, when that device has no IPsec offload; `auto` uses the
device when it can and software otherwise (also when the kernel refuses the offloaded SA, as
it does for UDP-encapsulated ESP on many drivers). The kernel itself would silently fall back
to software for `yes`, so the device's capability is checked first.
"""

from __future__ import annotations

import logging

from xfrmctl.ike.events import ChildSaReady
from xfrmctl.ike.spec import Offload
from xfrmctl.kernel.errors import XfrmError
from xfrmctl.kernel.links import Device, device_of_address

log = logging.getLogger("xfrmctl.kernel")


class OffloadError(XfrmError):
    """`hw_offload: yes|packet` and the device cannot: nothing was installed."""


def offload_device(ready: ChildSaReady, netns: str | None = None) -> Device | None:
    """The device to offload `ready` to; None for software. Raises OffloadError."""
    mode = ready.kernel.hw_offload
    if mode == Offload.NO:
        return None
    where = f"{ready.conn}/{ready.child}: hw_offload {mode.value}"
    try:
        device = device_of_address(ready.local, netns)
    except XfrmError as exc:
        _cannot(mode, where, str(exc))
        return None
    if not device.esp_offload:
        why = f"device {device.name} has no IPsec offload (ethtool -k: esp-hw-offload off)"
        _cannot(mode, where, why)
        return None
    return device


def fall_back(ready: ChildSaReady, device: Device, exc: XfrmError) -> None:
    """The kernel refused the offloaded SAs: for `auto` go on in software, else raise."""
    where = f"{ready.conn}/{ready.child}: hw_offload {ready.kernel.hw_offload.value}"
    _cannot(ready.kernel.hw_offload, where, f"the kernel refused offload to {device.name}: {exc}")


def _cannot(mode: Offload, where: str, why: str) -> None:
    if mode != Offload.AUTO:
        raise OffloadError(f"{where}: {why}; set hw_offload: auto (or no) to use software")
    log.info("%s: %s; using software crypto", where, why)
