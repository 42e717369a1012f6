"""XfrmGlue's ownership rules against this host's kernel, in a private namespace (root, no VM).

Policies and larval SAs (ALLOCSPI) work here without ESP, which is all that traps, the stale
cleanup and reload need. `ip` is the independent oracle.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import write_config
from netns_tools import fresh_netns, ip

from xfrmctl.config import load_config
from xfrmctl.daemon.specs import build_specs
from xfrmctl.daemon.xfrm_glue import REQID_BASE, XfrmGlue
from xfrmctl.ike.spec import ConnectionSpec

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces"),
]

STALE = REQID_BASE + 40  # what a killed earlier instance left
FOREIGN = 7  # an admin's or another daemon's


@pytest.fixture
def ns() -> Iterator[str]:
    with fresh_netns("glue") as name:
        yield name


def policy(ns: str, src: str, dst: str, direction: str, reqid: int) -> None:
    ip(ns, "xfrm", "policy", "add", "src", src, "dst", dst, "dir", direction,
       "tmpl", "proto", "esp", "reqid", str(reqid), "mode", "transport")  # fmt: skip


def larval(ns: str, dst: str, reqid: int) -> None:
    ip(ns, "xfrm", "state", "allocspi", "src", "192.0.2.1", "dst", dst, "proto", "esp",
       "reqid", str(reqid), "mode", "transport")  # fmt: skip


def trap_spec(tmp_path: Path) -> ConnectionSpec:
    """Connection `tun`, child `host`: 192.0.2.1 <-> 192.0.2.2, trapped."""
    cfg = write_config(
        tmp_path, "a", "192.0.2.1", "192.0.2.2", 500, 500, "a.example", "b.example",
        child_extra="start_action: trap",
    )  # fmt: skip
    (spec,) = build_specs(load_config(cfg))
    return spec


def test_traps_cleanup_reload_and_stop_touch_only_ours(ns: str, tmp_path: Path) -> None:
    spec = trap_spec(tmp_path)
    glue = XfrmGlue(ns)

    async def scenario() -> None:
        # A stale policy for the trap's own traffic (replaced in place), one for other
        # traffic, a stale larval SA, and foreign objects that must survive everything.
        policy(ns, "192.0.2.1/32", "192.0.2.2/32", "out", STALE)
        policy(ns, "192.0.2.1/32", "198.51.100.9/32", "out", STALE)
        larval(ns, "192.0.2.2", STALE)
        policy(ns, "192.0.2.1/32", "203.0.113.5/32", "out", FOREIGN)
        larval(ns, "203.0.113.5", FOREIGN)

        await glue.install_trap(spec, spec.children[0], 1)
        text = ip(ns, "xfrm", "policy")
        # The stale policy for the same traffic was replaced in place, never removed.
        assert text.count("dir out") == 3 and text.count("dir in") == 1, text
        assert f"reqid {REQID_BASE + 1} " in text

        removed = await glue.cleanup_stale()
        assert removed == 2, ip(ns, "xfrm", "policy") + ip(ns, "xfrm", "state")
        text = ip(ns, "xfrm", "policy")
        assert "198.51.100.9" not in text, "stale policy of ours survived"
        assert "203.0.113.5" in text, "foreign policy removed"
        assert "dst 192.0.2.2/32" in text and f"reqid {STALE} " not in text
        states = ip(ns, "xfrm", "state")
        assert "203.0.113.5" in states and "192.0.2.2" not in states, states
        assert glue.trap_for_reqid(REQID_BASE + 1) == ("tun", "host")

        await glue.remove_traps("tun")
        text = ip(ns, "xfrm", "policy")
        assert "192.0.2.2" not in text and "203.0.113.5" in text, text
        assert glue.trap_for_reqid(REQID_BASE + 1) is None

        await glue.install_trap(spec, spec.children[0], 1)
        await glue.remove_all()
        text = ip(ns, "xfrm", "policy")
        assert "192.0.2.2" not in text and "203.0.113.5" in text, text

    asyncio.run(scenario())


def test_ike_sockets_get_bypass_policies(ns: str) -> None:
    """The daemon's IKE sockets carry per-socket allow policies, so our own traps never hold
    IKE back; checked with `ip xfrm policy` inside the namespace while the socket is open."""
    code = (
        "import socket, subprocess\n"
        "from xfrmctl.daemon.xfrm_glue import XfrmGlue\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.bind(('127.0.0.1', 0))\n"
        "XfrmGlue().prepare_socket(s, socket.AF_INET)\n"
        "print(subprocess.run(['ip', 'xfrm', 'policy'], capture_output=True, text=True).stdout)\n"
    )
    out = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "socket in" in out and "socket out" in out, out
    assert ip(ns, "xfrm", "policy").strip() == ""  # gone with the socket


def test_the_glue_reads_no_echo_of_its_own_changes(ns: str, tmp_path: Path) -> None:
    """The drift stream is opened with the glue's own port id: installing and removing a
    trap leaves nothing to read on it, while a foreign policy still arrives."""
    spec = trap_spec(tmp_path)
    glue = XfrmGlue(ns)

    def queued(stream: Any) -> int:
        """Datagrams the loop already took, plus one if the socket holds another."""
        taken = stream.sock.msg_queue.root.qsize()
        try:
            stream.sock.socket.recv(65536, socket.MSG_DONTWAIT | socket.MSG_PEEK)
        except BlockingIOError:
            return int(taken)
        return int(taken) + 1

    async def scenario() -> tuple[int, int]:
        await glue.open_events()
        stream = glue._stream
        assert stream is not None and stream.echo_of == glue.conn.portid
        await glue.install_trap(spec, spec.children[0], 1)
        await glue.remove_traps("tun")
        await asyncio.sleep(0.2)
        ours = queued(stream)
        policy(ns, "192.0.2.1/32", "203.0.113.5/32", "out", FOREIGN)
        await asyncio.sleep(0.2)
        foreign = queued(stream)
        stream.close()
        return ours, foreign

    ours, foreign = asyncio.run(scenario())
    assert ours == 0 and foreign > 0
