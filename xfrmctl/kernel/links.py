"""Which network device holds an address: the device an SA's hardware offload is bound to.

XFRM offload (XFRMA_OFFLOAD_DEV) names a device by ifindex; strongSwan binds an SA to the
device that owns the SA's local address, and so do we. The kernel quietly installs a crypto
offload request in software when the device has no IPsec offload, so whether it can is read
first, from the device's ethtool feature `esp-hw-offload` (as `ethtool -k` shows it).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from xfrmctl.kernel.errors import XfrmError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Device:
    index: int
    name: str
    esp_offload: bool  # ethtool's esp-hw-offload is on


def device_of_address(address: Address, netns: str | None = None) -> Device:
    """The device that holds `address` in `netns` (None: this namespace); XfrmError if none."""
    # Imported here: only offload needs it, and its rtnetlink marshal costs every daemon start
    # (it loads every traffic-control module).
    from pyroute2.iproute.linux import IPRoute

    with IPRoute(netns=netns) if netns else IPRoute() as ipr:
        found = ipr.get_addr(address=str(address))
        if not found:
            raise XfrmError(f"no network device holds {address}: cannot offload to it")
        index = int(found[0]["index"])
        links = ipr.get_links(index)
        name = str(links[0].get_attr("IFLA_IFNAME")) if links else str(index)
    return Device(index, name, _esp_offload(name) if netns is None else True)


def _esp_offload(name: str) -> bool:
    """Whether the device's IPsec crypto offload is available and on (ethtool -k)."""
    from pyroute2.ethtool.ethtool import Ethtool  # offload only, as IPRoute above

    ethtool = Ethtool()
    try:
        feature = ethtool.get_features(name).features.get("esp-hw-offload")
    except Exception as exc:  # pyroute2 raises plain errors for devices without ethtool ops
        raise XfrmError(f"cannot read the offload features of {name}: {exc}") from exc
    finally:
        ethtool.close()
    return bool(feature is not None and feature.enable)
