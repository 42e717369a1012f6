"""Per-socket helpers for the IKE and NAT-T sockets.

IKE packets must not be caught by the very policies IKE installs: a per-socket policy with
action allow in both directions exempts them (what charon does). The kernel answers EINVAL to
that setsockopt until the xfrm_user module is loaded, so a NETLINK_XFRM socket is opened first.
"""

from __future__ import annotations

import errno
import socket

from xfrmctl.kernel import wire
from xfrmctl.kernel.errors import XfrmError
from xfrmctl.kernel.types import Dir

IP_XFRM_POLICY = 17
IPV6_XFRM_POLICY = 35
SOL_UDP = 17
UDP_ENCAP = 100
UDP_ENCAP_ESPINUDP = 2
NETLINK_XFRM = 6


def ensure_xfrm_user() -> None:
    """Opening a NETLINK_XFRM socket loads xfrm_user on kernels where it is a module."""
    try:
        socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_XFRM).close()
    except OSError as exc:
        raise XfrmError(f"this kernel has no XFRM netlink interface: {exc}") from exc


def bypass_socket(sock: socket.socket) -> None:
    """Exempt this socket's traffic from IPsec policies (IP_XFRM_POLICY / IPV6_XFRM_POLICY)."""
    ensure_xfrm_user()
    if sock.family == socket.AF_INET:
        level, opt = socket.IPPROTO_IP, IP_XFRM_POLICY
    elif sock.family == socket.AF_INET6:
        level, opt = socket.IPPROTO_IPV6, IPV6_XFRM_POLICY
    else:
        raise XfrmError(f"cannot bypass IPsec on a socket of family {sock.family}")
    for direction in (Dir.IN, Dir.OUT):
        try:
            sock.setsockopt(level, opt, wire.socket_policy(sock.family, direction))
        except OSError as exc:
            hint = " (needs CAP_NET_ADMIN)" if exc.errno == errno.EPERM else ""
            raise XfrmError(
                f"cannot set the {direction.name.lower()} bypass policy on the IKE socket: "
                f"{exc.strerror}{hint}",
                code=exc.errno or errno.EIO,
            ) from exc


def enable_udp_encap(sock: socket.socket) -> None:
    """Make a UDP socket (port 4500) receive ESP-in-UDP (RFC 3948) for the kernel to decrypt."""
    try:
        sock.setsockopt(SOL_UDP, UDP_ENCAP, UDP_ENCAP_ESPINUDP)
    except OSError as exc:
        raise XfrmError(
            f"cannot enable ESP-in-UDP on the NAT-T socket: {exc.strerror}",
            code=exc.errno or errno.EIO,
        ) from exc
