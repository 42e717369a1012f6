"""Two phases of the lab benchmark (bench/tunnels.py) that work the same on both stacks:
the time to the first packet through a new tunnel, and the rekey storm.

- First packet: from the start of the command that brings a connection up (`xfrmctl up`,
  `swanctl --initiate`) to the first ping reply through its tunnel, pinging once a second
  after the command returns. What an operator waits for.
- Rekey storm: every Child SA is asked to rekey at once (`xfrmctl rekey` per connection over
  one control socket, `swanctl --rekey --child net`), while a ping at 20/s runs through one of
  them. The storm is over when no outbound SA of before is left in the initiator's kernel and
  all are replaced; Child SAs still on old SPIs at the timeout count as failed.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from netlab import Host  # integration/, on the path when bench/tunnels.py runs

PING_INTERVAL = 0.05  # the steady flow: 20 packets a second


@dataclass
class StormResult:
    children: int = 0
    completed: int = 0
    seconds: float = 0.0
    pings_sent: int = 0
    pings_received: int = 0

    @property
    def failed(self) -> int:
        return self.children - self.completed

    @property
    def lost(self) -> int:
        return self.pings_sent - self.pings_received


def outbound_spis(state_text: str, src: str) -> set[int]:
    """SPIs of the SAs leaving `src` in an `ip xfrm state` text."""
    found = set()
    for block in re.split(r"\n(?=src )", state_text):
        m = re.match(r"src (\S+) dst \S+\s+proto \w+ spi (0x[0-9a-f]+)", block)
        if m and m.group(1) == src:
            found.add(int(m.group(2), 16))
    return found


def ping_counts(output: str) -> tuple[int, int]:
    """Transmitted and received of a ping summary (0, 0 when there is none)."""
    m = re.search(r"(\d+) packets transmitted, (\d+) received", output)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def first_packet(host: Host, bring_up: Callable[[], object], src: str, dst: str) -> float:
    """Seconds from the start of `bring_up` to the first ping reply from `dst` via `src`."""
    t0 = time.monotonic()
    bring_up()
    for _ in range(60):
        if host.run(f"ping -n -c 1 -W 1 -I {src} {dst}", check=False).returncode == 0:
            return time.monotonic() - t0
    raise SystemExit(f"no ping reply from {dst} through the new tunnel in 60 tries")


def rekey_storm(
    ini: Host, local: str, trigger: Callable[[], object], flow: tuple[str, str], timeout: float
) -> StormResult:
    """Rekey every Child SA at once (`trigger`) with a steady ping through one (`flow`)."""
    old = outbound_spis(ini.run("ip xfrm state").stdout, local)
    res = StormResult(children=len(old))
    src, dst = flow
    ping = ini.popen(
        ["ping", "-n", "-i", str(PING_INTERVAL), "-W", "2", "-I", src, dst],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    time.sleep(1.0)  # the flow is steady before the storm starts
    t0 = time.monotonic()
    try:
        trigger()
        while True:
            now = outbound_spis(ini.run("ip xfrm state").stdout, local)
            res.completed = len(old) - len(old & now)
            if res.completed == len(old) and len(now) >= len(old):
                break
            if time.monotonic() - t0 > timeout:
                break
            time.sleep(0.5)
        res.seconds = time.monotonic() - t0
        time.sleep(2.0)  # and stays steady after it
    finally:
        ping.send_signal(2)  # SIGINT: ping prints its summary
        out, _ = ping.communicate(timeout=30)
    res.pings_sent, res.pings_received = ping_counts(out)
    return res
