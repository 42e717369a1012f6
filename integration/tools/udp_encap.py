"""Hold a UDP socket on port 4500 with ESP-in-UDP decapsulation on, as an IKE daemon would.

Stand-alone on purpose: the lab smoke tests prove the lab before any xfrmctl code is trusted.
The socket gets per-socket IPsec bypass policies (like charon's) so the kernel does not hold
its own packets to the global policies. Prints "ready" once set up, then sleeps until killed.
"""

import socket
import struct
import sys
import time

SOL_UDP = 17
UDP_ENCAP = 100
UDP_ENCAP_ESPINUDP = 2
IP_XFRM_POLICY = 17
XFRM_INF = 0xFFFFFFFFFFFFFFFF
XFRM_POLICY_IN, XFRM_POLICY_OUT = 0, 1
XFRM_POLICY_ALLOW = 0


def bypass_policy(direction: int) -> bytes:
    selector = bytes(40) + struct.pack("=HBBB3x", socket.AF_INET, 0, 0, 0) + bytes(8)  # 56 bytes
    lifetime_cfg = struct.pack("=8Q", XFRM_INF, XFRM_INF, XFRM_INF, XFRM_INF, 0, 0, 0, 0)
    lifetime_cur = bytes(32)
    tail = struct.pack("=IIBBBB4x", 0, 0, direction, XFRM_POLICY_ALLOW, 0, 0)
    blob = selector + lifetime_cfg + lifetime_cur + tail
    if len(blob) != 168:
        raise SystemExit(f"bad xfrm_userpolicy_info size {len(blob)}")
    return blob


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 4500
    # The kernel accepts IP_XFRM_POLICY only once xfrm_user is loaded: opening a NETLINK_XFRM
    # socket loads it.
    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 6).close()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    for direction in (XFRM_POLICY_IN, XFRM_POLICY_OUT):
        sock.setsockopt(socket.IPPROTO_IP, IP_XFRM_POLICY, bypass_policy(direction))
    sock.setsockopt(SOL_UDP, UDP_ENCAP, UDP_ENCAP_ESPINUDP)
    print("ready", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
