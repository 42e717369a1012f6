"""Private network namespaces for host tests (root, no VM), with `ip` as the oracle."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager


def ip(ns: str, *args: str) -> str:
    return subprocess.run(
        ["ip", "-n", ns, *args], check=True, capture_output=True, text=True
    ).stdout


@contextmanager
def fresh_netns(tag: str) -> Iterator[str]:
    """A new, empty namespace, deleted afterwards even when the test fails."""
    name = f"xfrmctl-{tag}-{os.getpid()}-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
