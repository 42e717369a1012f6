"""xfrmctl.kernel on a real data plane: every algorithm carries a ping, objects read back as
installed (ours and `ip xfrm`'s view), EXPIRE events arrive on time, failed transactions leave
nothing behind. Runs in the lab guest: `integration/lab.py pytest integration/test_kernel_xfrm.py`.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest
from netlab import Host, Network

from xfrmctl.daemon.transforms import (
    kernel_encr,
    kernel_integ,
    sa_algorithms,
    supports_encr,
    supports_integ,
)
from xfrmctl.ike.iana import EncrId, IntegId
from xfrmctl.kernel import (
    SA,
    AlgorithmUnavailableError,
    AsyncXfrm,
    Auth,
    ChildSA,
    Dir,
    Encap,
    Lifetime,
    Mark,
    Mode,
    ObjectExistsError,
    Ownership,
    Policy,
    Proto,
    Selector,
    SpiRange,
    SpiRequest,
    Template,
    TransactionError,
    Xfrm,
)
from xfrmctl.kernel.events import Expire
from xfrmctl.kernel.messages import Group
from xfrmctl.kernel.types import Address, Crypt, ReplayState

TOOLS = Path(__file__).resolve().parent / "tools"
OWN = Ownership()
IP_A, IP_B = ip_address("10.99.0.1"), ip_address("10.99.0.2")
IP6_A, IP6_B = ip_address("2001:db8::1"), ip_address("2001:db8::2")


@dataclass(frozen=True)
class Algo:
    id: str
    encr: EncrId | None
    key_bits: int | None
    integ: IntegId | None
    proto: Proto = Proto.ESP

    def fields(self) -> dict[str, Any]:
        """Fresh random keys of the right lengths, as KEYMAT would give them."""
        if self.proto == Proto.AH:
            assert self.integ is not None
            ki = kernel_integ(self.integ)
            return {"auth": Auth(ki.name, secrets.token_bytes(ki.key_bytes), ki.trunc_bits)}
        assert self.encr is not None
        ke = kernel_encr(self.encr, self.key_bits)
        ikey = b""
        if self.integ is not None:
            ikey = secrets.token_bytes(kernel_integ(self.integ).key_bytes)
        aead, crypt, auth = sa_algorithms(
            self.encr, self.key_bits, self.integ, secrets.token_bytes(ke.key_bytes), ikey
        )
        return {"aead": aead, "crypt": crypt, "auth": auth}


ALGOS = [
    Algo("aes128gcm8", EncrId.AES_GCM_8, 128, None),
    Algo("aes192gcm12", EncrId.AES_GCM_12, 192, None),
    Algo("aes256gcm16", EncrId.AES_GCM_16, 256, None),
    Algo("chacha20poly1305", EncrId.CHACHA20_POLY1305, 256, None),
    Algo("aes128ccm16", EncrId.AES_CCM_16, 128, None),
    Algo("aes256gmac", EncrId.NULL_AUTH_AES_GMAC, 256, None),
    Algo("aes128-sha1", EncrId.AES_CBC, 128, IntegId.HMAC_SHA1_96),
    Algo("aes256-sha256", EncrId.AES_CBC, 256, IntegId.HMAC_SHA2_256_128),
    Algo("aes192-sha384", EncrId.AES_CBC, 192, IntegId.HMAC_SHA2_384_192),
    Algo("aes256-sha512", EncrId.AES_CBC, 256, IntegId.HMAC_SHA2_512_256),
    Algo("aes128-aesxcbc", EncrId.AES_CBC, 128, IntegId.AES_XCBC_96),
    Algo("aes128-aescmac", EncrId.AES_CBC, 128, IntegId.AES_CMAC_96),
    Algo("aes128ctr-sha256", EncrId.AES_CTR, 128, IntegId.HMAC_SHA2_256_128),
    Algo("null-sha256", EncrId.NULL, None, IntegId.HMAC_SHA2_256_128),
    Algo("ah-sha256", None, None, IntegId.HMAC_SHA2_256_128, Proto.AH),
    Algo("ah-sha1", None, None, IntegId.HMAC_SHA1_96, Proto.AH),
]


@dataclass
class Pair:
    """Two hosts joined by a veth pair (IPv4 and IPv6), each with an open Xfrm handle."""

    a: Host
    b: Host
    xa: Xfrm
    xb: Xfrm
    ip_a: Address = IP_A
    ip_b: Address = IP_B
    ip6_a: Address = IP6_A
    ip6_b: Address = IP6_B

    def clean(self) -> None:
        for x in (self.xa, self.xb):
            x.flush_policies()
            x.flush_sas()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """One pair of hosts for the whole module: a boot is slow, Python in it slower still."""
    network = Network(tmp_path_factory.mktemp("kernel-xfrm"))
    try:
        a, b = network.host("a"), network.host("b")
        network.link(a, "10.99.0.1/24", b, "10.99.0.2/24")
        network.link(a, "2001:db8::1/64", b, "2001:db8::2/64")
        with Xfrm(a.ns) as xa, Xfrm(b.ns) as xb:
            yield Pair(a, b, xa, xb)
    finally:
        network.close()


@pytest.fixture
def lab(pair: Pair) -> Iterator[Pair]:
    pair.clean()
    yield pair
    pair.clean()


def child_for(
    me: Address,
    peer: Address,
    spi_in: int,
    spi_out: int,
    algo_in: dict[str, Any],
    algo_out: dict[str, Any],
    *,
    proto: Proto = Proto.ESP,
    mode: Mode = Mode.TRANSPORT,
    reqid: int = OWN.reqid(7),
    **extra: Any,
) -> ChildSA:
    """One side's Child SA: SAs both ways and host-to-host policies in, out."""
    common: dict[str, Any] = {"proto": proto, "mode": mode, "reqid": reqid, **extra}
    # BEET takes the inner addresses from the SA selector; the others just check it.
    sel_in = Selector(ip_network(peer), ip_network(me))
    sel_out = Selector(ip_network(me), ip_network(peer))
    inbound = SA(peer, me, spi_in, selector=sel_in, **common, **algo_in)
    outbound = SA(me, peer, spi_out, selector=sel_out, **common, **algo_out)
    tunnel = mode != Mode.TRANSPORT
    t_out = Template(proto, mode, reqid, me if tunnel else None, peer if tunnel else None)
    t_in = Template(proto, mode, reqid, peer if tunnel else None, me if tunnel else None)
    out_sel = Selector(ip_network(me), ip_network(peer))
    in_sel = Selector(ip_network(peer), ip_network(me))
    return ChildSA(
        inbound,
        outbound,
        (
            Policy(out_sel, Dir.OUT, (t_out,), priority=100),
            Policy(in_sel, Dir.IN, (t_in,), priority=100),
        ),
        inbound_larval=False,
    )


def install_both(lab: Pair, algo: Algo, v6: bool = False, **kw: Any) -> tuple[ChildSA, ChildSA]:
    ip_a, ip_b = (lab.ip6_a, lab.ip6_b) if v6 else (lab.ip_a, lab.ip_b)
    spi_ab, spi_ba = 0x10000 + secrets.randbelow(0xFFFF), 0x20000 + secrets.randbelow(0xFFFF)
    keys_ab, keys_ba = algo.fields(), algo.fields()
    ca = child_for(ip_a, ip_b, spi_ba, spi_ab, keys_ba, keys_ab, proto=algo.proto, **kw)
    cb = child_for(ip_b, ip_a, spi_ab, spi_ba, keys_ab, keys_ba, proto=algo.proto, **kw)
    lab.xa.install_child(ca)
    lab.xb.install_child(cb)
    return ca, cb


def assert_carries_traffic(lab: Pair, ca: ChildSA) -> None:
    assert lab.a.ping(str(ca.outbound.dst), count=3), "ping through the SAs failed"
    out = lab.xa.counters(ca.outbound.id, ca.outbound.src)
    inn = lab.xa.counters(ca.inbound.id, ca.inbound.src)
    assert out.packets >= 3 and out.bytes > 0, out
    assert inn.packets >= 3 and inn.bytes > 0, inn
    assert out.replay is not None and out.replay.oseq >= 3
    # iproute2 agrees on the counters.
    seen = {c.spi: c.packets for c in lab.a.xfrm_sa_counters()}
    assert seen[ca.outbound.spi] >= 3 and seen[ca.inbound.spi] >= 3


@pytest.mark.parametrize("algo", ALGOS, ids=[a.id for a in ALGOS])
def test_algorithm_carries_ping(lab: Pair, algo: Algo) -> None:
    ca, _ = install_both(lab, algo)
    assert_carries_traffic(lab, ca)


@pytest.mark.parametrize("mode", [Mode.TUNNEL, Mode.BEET], ids=["tunnel", "beet"])
def test_modes_carry_ping(lab: Pair, mode: Mode) -> None:
    ca, _ = install_both(lab, ALGOS[2], mode=mode)
    assert_carries_traffic(lab, ca)


def test_ipv6_esn_and_big_replay_window(lab: Pair) -> None:
    ca, _ = install_both(lab, ALGOS[3], v6=True, mode=Mode.TUNNEL, esn=True, replay_window=1024)
    assert_carries_traffic(lab, ca)
    got = lab.xa.get_sa(ca.inbound.id)
    assert got == ca.inbound and got.esn and got.replay_window == 1024
    text = lab.a.xfrm_state_text()
    assert "flag esn" in text and "replay_window 1024" in text


def test_udp_encapsulation(lab: Pair) -> None:
    for host in (lab.a, lab.b):
        proc = host.popen(
            [sys.executable, str(TOOLS / "udp_encap.py")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    try:
        ca, _ = install_both(lab, ALGOS[2], encap=Encap(4500, 4500))
        assert_carries_traffic(lab, ca)
        assert "encap type espinudp sport 4500 dport 4500" in lab.a.xfrm_state_text()
        assert lab.xa.get_sa(ca.outbound.id) == ca.outbound
    finally:
        for host in (lab.a, lab.b):
            for process in host.processes:
                process.kill()
                process.wait()
            host.processes.clear()


def test_objects_read_back_as_installed(lab: Pair) -> None:
    lifetime = Lifetime(
        soft_bytes=10**9, hard_bytes=2 * 10**9, soft_seconds=3000, hard_seconds=3600
    )
    ca, _ = install_both(lab, ALGOS[7], mode=Mode.TUNNEL, mark=Mark(0x20, 0xFF), lifetime=lifetime)
    sas = {sa.spi: sa for sa in lab.xa.sas()}
    assert sas[ca.inbound.spi] == ca.inbound and sas[ca.outbound.spi] == ca.outbound
    policies = lab.xa.policies()
    assert sorted(policies, key=lambda p: p.dir) == sorted(ca.policies, key=lambda p: p.dir)
    state = lab.a.xfrm_state_text()
    out = ca.outbound
    assert out.crypt is not None and out.auth is not None
    assert f"proto esp spi {out.spi:#010x} reqid {out.reqid} mode tunnel" in state
    assert f"enc cbc(aes) 0x{out.crypt.key.hex()}" in state
    assert f"auth-trunc hmac(sha256) 0x{out.auth.key.hex()} 128" in state
    assert "mark 0x20/0xff" in state
    stats = lab.a.run("ip -s xfrm state").stdout
    assert "limit: soft 1000000000(bytes), hard 2000000000(bytes)" in stats
    assert "expire add: soft 3000(sec), hard 3600(sec)" in stats
    pol = lab.a.xfrm_policy_text()
    assert f"src {lab.ip_a}/32 dst {lab.ip_b}/32" in pol and "dir out priority 100" in pol
    assert f"tmpl src {lab.ip_a} dst {lab.ip_b}" in pol
    assert f"reqid {out.reqid} mode tunnel" in pol


def test_soft_and_hard_expire_arrive_on_time(lab: Pair) -> None:
    spi = 0x3000 + secrets.randbelow(0xFFF)
    sa = SA(
        lab.ip_b,
        lab.ip_a,
        spi,
        reqid=OWN.reqid(8),
        lifetime=Lifetime(soft_seconds=2, hard_seconds=5),
        **ALGOS[2].fields(),
    )

    async def watch() -> list[tuple[float, Expire]]:
        got: list[tuple[float, Expire]] = []
        async with AsyncXfrm(lab.a.ns) as xa, xa.events([Group.EXPIRE]) as stream:
            await xa.add_sa(sa)
            start = time.monotonic()
            it = stream.__aiter__()
            while len(got) < 2:
                event = await asyncio.wait_for(it.__anext__(), 15)
                if isinstance(event, Expire) and event.sa.spi == spi:
                    got.append((time.monotonic() - start, event))
        return got

    (t_soft, soft), (t_hard, hard) = asyncio.run(watch())
    assert not soft.hard and hard.hard
    assert 1.0 <= t_soft <= 4.0, t_soft
    assert 4.0 <= t_hard <= 8.0, t_hard
    # EXPIRE carries the SA's identity and limits but, rightly, not its keys.
    assert soft.sa.id == sa.id and soft.sa.reqid == sa.reqid and soft.sa.lifetime == sa.lifetime
    assert soft.sa.aead is None and hard.sa.spi == spi
    assert f"{spi:#010x}" not in lab.a.xfrm_state_text()  # the hard expire removed it


def test_packet_limits_expire(lab: Pair) -> None:
    ca, _ = install_both(lab, ALGOS[2], lifetime=Lifetime(soft_packets=2, hard_packets=4))

    async def watch() -> list[Expire]:
        got: list[Expire] = []
        async with AsyncXfrm(lab.a.ns) as xa, xa.events([Group.EXPIRE]) as stream:
            ping = f"ping -n -c 6 -i 0.2 -W 1 {lab.ip_b}"
            proc = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", lab.a.ns, *ping.split(), stdout=asyncio.subprocess.DEVNULL
            )
            it = stream.__aiter__()
            while len(got) < 2:
                event = await asyncio.wait_for(it.__anext__(), 20)
                if isinstance(event, Expire) and event.sa.spi == ca.outbound.spi:
                    got.append(event)
            await proc.wait()
        return got

    soft, hard = asyncio.run(watch())
    assert not soft.hard and hard.hard


def test_transaction_failing_halfway_leaves_nothing(lab: Pair) -> None:
    xa = lab.xa
    good = ALGOS[2].fields()
    bad = {"crypt": Crypt("cbc(no-such-cipher)", bytes(16)), "aead": None, "auth": None}
    child = child_for(lab.ip_a, lab.ip_b, 0x4001, 0x4002, good, bad)
    with pytest.raises(TransactionError) as info:
        xa.install_child(child)
    assert isinstance(info.value.cause, AlgorithmUnavailableError)
    assert "algorithm cbc(no-such-cipher) not available" in str(info.value)
    assert xa.sas() == [] and xa.policies() == []
    assert lab.a.xfrm_state_text().strip() == ""
    assert "dir " not in lab.a.xfrm_policy_text()

    # The second half fails: the out policy (installed last) already exists. The SAs and the
    # in policy that went in are removed; the pre-existing policy is untouched.
    child = child_for(lab.ip_a, lab.ip_b, 0x4001, 0x4002, good, ALGOS[2].fields())
    existing = replace(
        next(p for p in child.policies if p.dir == Dir.OUT), priority=5, templates=()
    )
    xa.add_policy(existing)
    with pytest.raises(TransactionError) as info:
        xa.install_child(child, replace_policies=False)
    assert isinstance(info.value.cause, ObjectExistsError)
    assert xa.sas() == [] and xa.policies() == [existing]
    assert lab.a.xfrm_state_text().strip() == ""


def test_allocspi_then_update_and_cleanup(lab: Pair) -> None:
    xa, xb, ip_a, ip_b = lab.xa, lab.xb, lab.ip_a, lab.ip_b
    reqid = OWN.reqid(9)
    spis = SpiRange(0xC0000000, 0xCFFFFFFF)
    spi_a = xa.allocate_spi(SpiRequest(ip_b, ip_a, reqid=reqid, spis=spis))
    spi_b = xb.allocate_spi(SpiRequest(ip_a, ip_b, reqid=reqid, spis=spis))
    assert 0xC0000000 <= spi_a <= 0xCFFFFFFF
    k_ab, k_ba = ALGOS[2].fields(), ALGOS[2].fields()
    ca = child_for(ip_a, ip_b, spi_a, spi_b, k_ba, k_ab, reqid=reqid)
    cb = child_for(ip_b, ip_a, spi_b, spi_a, k_ab, k_ba, reqid=reqid)
    xa.install_child(replace(ca, inbound_larval=True))
    xb.install_child(replace(cb, inbound_larval=True))
    assert_carries_traffic(lab, ca)
    # Someone else's SA survives our cleanup.
    key = secrets.token_hex(20)
    lab.a.run(
        f"ip xfrm state add src {ip_a} dst {ip_b} proto esp spi 0x999 reqid 42 mode transport "
        f"aead 'rfc4106(gcm(aes))' 0x{key} 128"
    )
    report = xa.cleanup_stale(OWN)
    assert {s.spi for s in report.sas} == {spi_a, spi_b} and len(report.policies) == 2
    assert [s.spi for s in xa.sas()] == [0x999] and xa.policies() == []


def test_probe_finds_every_algorithm() -> None:
    with Xfrm() as x:
        caps = x.probe()
    assert caps.esp and caps.ah, caps.missing
    for algo in ALGOS:
        if algo.encr is not None:
            assert supports_encr(caps, algo.encr, algo.key_bits), (algo.id, caps.missing)
        if algo.integ is not None:
            assert supports_integ(caps, algo.integ), (algo.id, caps.missing)


@pytest.mark.parametrize("esn", [False, True], ids=["32bit", "esn"])
def test_replay_state_can_be_set(lab: Pair, esn: bool) -> None:
    ca, cb = install_both(lab, ALGOS[2], esn=esn, replay_window=64 if esn else 32)
    assert_carries_traffic(lab, ca)
    out, peer_in = ca.outbound, cb.inbound
    start = (1 << 32) + 1000 if esn else 1000
    if esn:
        # The receiver only infers the high 32 bits within its window: move it along too.
        lab.xb.set_replay_state(
            peer_in.id, peer_in.src, ReplayState(0, (1 << 32) + 500, 64), esn=True
        )
    lab.xa.set_replay_state(out.id, out.src, ReplayState(start, 0, out.replay_window), esn=esn)
    assert lab.a.ping(str(lab.ip_b), count=1), "the peer refused packets after the jump"
    replay = lab.xa.counters(out.id, out.src).replay
    assert replay is not None and replay.oseq == start + 1
    peer = lab.xb.counters(peer_in.id, peer_in.src).replay
    assert peer is not None and peer.seq == start + 1
