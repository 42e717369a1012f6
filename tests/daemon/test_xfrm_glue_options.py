"""Per-child kernel options on the way into the kernel: replay_window, ESN, if_id_in/out and
hw_offload, decoded back from the real netlink requests by the in-memory kernel."""

from __future__ import annotations

import asyncio
import dataclasses
from ipaddress import ip_address
from typing import Any

import pytest
from glue_helpers import FakeKernel, glue_on, ready
from test_xfrm_transaction import _parse as parse

from xfrmctl.daemon import offload
from xfrmctl.daemon.offload import OffloadError, offload_device
from xfrmctl.ike.events import ChildSaReady, Lifetimes
from xfrmctl.ike.iana import IntegId, ProtocolId, TransformType
from xfrmctl.ike.spec import KernelOptions, Mode, Offload
from xfrmctl.ike.transforms import Transform
from xfrmctl.kernel import links
from xfrmctl.kernel.messages import STATE_AF_UNSPEC, STATE_ALIGN4, Msg
from xfrmctl.kernel.sa import decode_sa
from xfrmctl.kernel.types import Dir
from xfrmctl.kernel.types import Offload as KOffload


def with_options(esn: bool = False, **options: Any) -> ChildSaReady:
    return dataclasses.replace(ready(0x1001, 0x2001), esn=esn, kernel=KernelOptions(**options))


def installed(r: ChildSaReady) -> Any:
    k = FakeKernel()
    asyncio.run(glue_on(k).install_child(r))
    return k


def test_replay_window_esn_and_if_ids_reach_sas_and_policies() -> None:
    k = installed(with_options(esn=True, replay_window=128, if_id_in=7, if_id_out=8))
    sas = {sid.spi: sa for sid, sa in k.sas.items()}
    assert sas[0x1001].replay_window == sas[0x2001].replay_window == 128
    assert sas[0x1001].esn and sas[0x2001].esn
    assert (sas[0x1001].if_id, sas[0x2001].if_id) == (7, 8)
    by_dir = {p.dir: p for p in k.policies.values()}
    assert (by_dir[Dir.IN].if_id, by_dir[Dir.FWD].if_id, by_dir[Dir.OUT].if_id) == (7, 7, 8)


def test_tunnel_sas_may_carry_the_other_family() -> None:
    """IPv4 inside IPv6 (and back) needs XFRM_STATE_AF_UNSPEC on tunnel-mode SAs."""
    k = installed(with_options())  # tunnel mode
    assert {sa.flags & STATE_AF_UNSPEC for sa in k.sas.values()} == {STATE_AF_UNSPEC}
    transport = dataclasses.replace(with_options(), mode=Mode.TRANSPORT)
    k = installed(transport)
    assert {sa.flags & STATE_AF_UNSPEC for sa in k.sas.values()} == {0}


def test_ah_over_ipv4_aligns_to_32_bits() -> None:
    """RFC 4302 §2.6; strongSwan's AH SAs do, and drop Linux's default 64-bit padding."""
    ah = dataclasses.replace(with_options(), protocol=ProtocolId.AH, encr=None)
    ah = dataclasses.replace(ah, integ=Transform(TransformType.INTEG, IntegId.HMAC_SHA2_256_128))
    ah = dataclasses.replace(ah, integ_key_in=bytes(32), integ_key_out=bytes(32))
    k = installed(ah)
    assert {sa.flags & STATE_ALIGN4 for sa in k.sas.values()} == {STATE_ALIGN4}
    k = installed(with_options())  # ESP: no such padding rule
    assert {sa.flags & STATE_ALIGN4 for sa in k.sas.values()} == {0}


def test_defaults_are_swanctls() -> None:
    k = installed(with_options())
    assert {sa.replay_window for sa in k.sas.values()} == {32}
    assert {sa.if_id for sa in k.sas.values()} == {0}
    assert {p.if_id for p in k.policies.values()} == {0}
    assert all(sa.offload is None for sa in k.sas.values())


def test_replay_window_zero_disables_replay_protection() -> None:
    k = installed(with_options(replay_window=0))
    assert {sa.replay_window for sa in k.sas.values()} == {0}


def device(capable: bool) -> Any:
    return lambda address, netns=None: links.Device(3, "eth9", capable)


@pytest.mark.parametrize("mode", [Offload.YES, Offload.PACKET])
def test_offload_demanded_on_a_device_without_it_fails_naming_the_device(
    monkeypatch: pytest.MonkeyPatch, mode: Offload
) -> None:
    monkeypatch.setattr(offload, "device_of_address", device(False))
    r = with_options(hw_offload=mode)
    with pytest.raises(OffloadError, match=f"hw_offload {mode.value}: device eth9 has no IPsec"):
        offload_device(r)
    k = FakeKernel()
    with pytest.raises(OffloadError):
        asyncio.run(glue_on(k).install_child(r))
    assert not k.sas and not k.policies  # nothing installed


def test_offload_auto_without_a_capable_device_is_software(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(offload, "device_of_address", device(False))
    assert offload_device(with_options(hw_offload=Offload.AUTO)) is None
    k = installed(with_options(hw_offload=Offload.AUTO))
    assert all(sa.offload is None for sa in k.sas.values())


@pytest.mark.parametrize(
    ("mode", "packet"), [(Offload.YES, False), (Offload.AUTO, False), (Offload.PACKET, True)]
)
def test_offload_to_a_capable_device(
    monkeypatch: pytest.MonkeyPatch, mode: Offload, packet: bool
) -> None:
    monkeypatch.setattr(offload, "device_of_address", device(True))
    k = FakeKernel()
    glue = glue_on(k)
    asyncio.run(glue.install_child(with_options(hw_offload=mode)))
    sas = {sid.spi: sa for sid, sa in k.sas.items()}
    assert sas[0x1001].offload == KOffload(3, True, packet)
    assert sas[0x2001].offload == KOffload(3, False, packet)
    assert glue.offload_of(0x1001) == "eth9"


class RefusesOffload(FakeKernel):  # type: ignore[misc]
    """A kernel whose driver refuses offloaded SAs (as many do for UDP-encapsulated ESP)."""

    async def batch(self, requests: Any) -> Any:
        offloaded = {
            sa.id
            for req in requests
            if Msg(req.msg_type) == Msg.NEWSA
            and (sa := decode_sa(parse(req.msg, req.msg_type))).offload is not None
        }
        self.reject = offloaded
        try:
            return await super().batch(requests)
        finally:
            self.reject = set()


def test_offload_auto_falls_back_when_the_kernel_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(offload, "device_of_address", device(True))
    k = RefusesOffload()
    glue = glue_on(k)
    asyncio.run(glue.install_child(with_options(hw_offload=Offload.AUTO)))
    assert len(k.sas) == 2 and all(sa.offload is None for sa in k.sas.values())
    assert glue.offload_of(0x1001) == ""
    with pytest.raises(OffloadError, match="the kernel refused offload to eth9"):
        asyncio.run(glue_on(RefusesOffload()).install_child(with_options(hw_offload=Offload.YES)))


def test_real_device_lookup_runs_inside_the_daemons_event_loop() -> None:
    """pyroute2's blocking calls run a loop of their own: they must not run on the daemon's."""
    k = FakeKernel()
    glue = glue_on(k)
    on_lo = dataclasses.replace(
        with_options(hw_offload=Offload.AUTO), local=ip_address("127.0.0.1")
    )
    asyncio.run(glue.install_child(on_lo))  # lo has no IPsec offload: software
    assert len(k.sas) == 2 and glue.offload_of(0x1001) == ""
    assert not glue.offloaded  # a pair in software keeps no entry (issue 15)
    with pytest.raises(OffloadError, match="device lo has no IPsec offload"):
        asyncio.run(
            glue_on(FakeKernel()).install_child(
                dataclasses.replace(on_lo, kernel=KernelOptions(hw_offload=Offload.YES))
            )
        )


def test_volume_and_time_lifetimes_reach_both_sas() -> None:
    """life_bytes/life_packets (hard) and the rekey limits (soft) as the kernel enforces them."""
    limits = Lifetimes(3000, 3300, 1 << 20, 2 << 20, 5000, 9000)
    k = installed(dataclasses.replace(with_options(), lifetimes=limits))
    for sa in k.sas.values():
        lt = sa.lifetime
        assert (lt.soft_seconds, lt.hard_seconds) == (3000, 3300)
        assert (lt.soft_bytes, lt.hard_bytes) == (1 << 20, 2 << 20)
        assert (lt.soft_packets, lt.hard_packets) == (5000, 9000)


@pytest.mark.parametrize("compress", [False, True])
def test_in_and_fwd_policies_share_one_template_tuple(compress: bool) -> None:
    """Memory (issue 15): the templates are made once per direction, fwd's being in's, and
    are the ones each direction needs (IPComp's optional outside the outbound policy)."""
    from xfrmctl.daemon.xfrm_records import policies_for
    from xfrmctl.kernel.types import Mode as KMode
    from xfrmctl.kernel.types import Proto, Selector

    local, remote = ip_address("192.0.2.1"), ip_address("192.0.2.2")
    sels = [Selector.of("10.1.0.0/16", "10.2.0.0/16"), Selector.of("10.1.0.0/16", "10.3.0.0/16")]
    pols = policies_for(sels, KMode.TUNNEL, Proto.ESP, 7, local, remote, KernelOptions(), compress)
    by_dir = {d: [p for p in pols if p.dir == d] for d in (Dir.IN, Dir.FWD, Dir.OUT)}
    inbound = by_dir[Dir.IN][0].templates
    assert all(p.templates is inbound for p in by_dir[Dir.IN] + by_dir[Dir.FWD])
    assert inbound[0].src == remote and inbound[0].dst == local
    outbound = by_dir[Dir.OUT][0].templates
    assert outbound[0].src == local and not any(t.optional for t in outbound)
    assert (
        all(t.optional for t in inbound if t.proto == Proto.COMP) and len(inbound) == 1 + compress
    )
