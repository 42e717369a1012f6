"""`prime`: the algorithms a configuration names run once at start, so the first IKE SAs do
not page in cryptography's code (issue 15)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from xfrmctl.ike.crypto import prime as prime_module
from xfrmctl.ike.iana import KeId, ProtocolId
from xfrmctl.ike.proposals import parse_proposals

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prime_module, "_primed", set())


def test_each_transform_runs_once_per_process() -> None:
    proposals = parse_proposals(
        ["aes256gcm16-prfsha256-x25519", "aes128-sha256-prfsha384-ecp256"], ProtocolId.IKE
    )
    assert prime_module.prime(proposals) == 7  # 2 ENCR, 1 INTEG, 2 PRF, 2 KE
    assert prime_module.prime(proposals) == 0


def test_modp_groups_are_left_to_the_first_ike_sa(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[int] = []
    real = prime_module.new_key_exchange

    def recorded(group: int) -> object:
        made.append(group)
        return real(group)

    monkeypatch.setattr(prime_module, "new_key_exchange", recorded)
    prime_module.prime(parse_proposals(["aes128-sha256-modp3072-x25519"], ProtocolId.IKE))
    assert made == [KeId.CURVE25519, KeId.CURVE25519]


PROBE = """
import re, sys
sys.path.insert(0, {bench!r})
from xfrmctl.ike.crypto.prime import prime
import ike_handshake as ih
from xfrmctl.ike.spec import PskAuth

def mapped():
    total, name = 0, ""
    for line in open("/proc/self/smaps"):
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            name = line.split()[-1]
        elif line.startswith("Rss:") and "_rust" in name:
            total += int(line.split()[1])
    return total

a, b = ih._specs(PskAuth(b"k" * 32), PskAuth(b"k" * 32))
if {primed}:
    prime(a.ike_proposals)
before = mapped()
ih.handshake(a, b)
print(mapped() - before)
"""


def _first_handshake_maps(primed: bool) -> int:
    code = PROBE.format(bench=str(ROOT / "bench"), primed=primed)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return int(out.stdout.split()[-1])


def test_a_primed_process_pages_in_little_of_cryptography_for_its_first_ike_sa() -> None:
    cold, primed = _first_handshake_maps(False), _first_handshake_maps(True)
    assert cold > 512, cold  # KiB: else this test measures nothing
    assert primed < cold / 4, (primed, cold)
