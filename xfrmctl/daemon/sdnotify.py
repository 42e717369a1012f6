"""systemd readiness and status notifications (sd_notify protocol, stdlib only)."""

from __future__ import annotations

import contextlib
import os
import socket


def notify(message: str) -> bool:
    """Send e.g. "READY=1" or "STATUS=..." to $NOTIFY_SOCKET; False when not under systemd."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(message.encode())
        return True
    return False
