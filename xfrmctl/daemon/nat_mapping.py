"""Following the peer's NAT when it gives the peer a new public port (XFRM_MSG_MAPPING).

The kernel raises a mapping event when authenticated ESP-in-UDP arrives from another source
port than the SA was programmed with (RFC 3948): the NAT in front of the peer timed out its
mapping or was restarted. As strongSwan does, we then send our ESP and IKE to the new port:
every Child SA that used the old mapping is re-programmed (UPDSA) and the IKE SA moves too, so
replies and DPD reach the peer again. A changed address is not followed here (it would change
the SAs' identities): it is logged, and DPD or the peer's next IKE request settles it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

from xfrmctl.daemon.installed import Installed
from xfrmctl.daemon.kernel_glue import NatMapping
from xfrmctl.ike.events import ChildSaReady, UdpEncap

log = logging.getLogger("xfrmctl.daemon")


def port_change(mapping: NatMapping) -> bool:
    """True when only the port moved; says in the log what is and is not followed."""
    (old_ip, old_port), (new_ip, new_port) = mapping.old, mapping.new
    if new_ip != old_ip:
        log.warning(
            "peer %s:%d now sends ESP from %s:%d: a changed address is not followed",
            old_ip,
            old_port,
            new_ip,
            new_port,
        )
        return False
    log.info("peer %s: its NAT moved it from port %d to %d; following", old_ip, old_port, new_port)
    return True


def remap(installed: Mapping[int, Installed], mapping: NatMapping) -> list[ChildSaReady]:
    """Point every installed Child SA that used the old mapping at the new one; returns them."""
    (old_ip, old_port), (_, new_port) = mapping.old, mapping.new
    moved = []
    for entry in installed.values():
        r = entry.ready
        if r.encap is None or r.remote != old_ip or r.encap.remote_port != old_port:
            continue
        entry.ready = replace(r, encap=UdpEncap(r.encap.local_port, new_port))
        moved.append(entry.ready)
    return moved
