"""The rekey steps of kernel.transaction against this host's kernel, in a private netns.

This kernel refuses ESP SAs, so the SAs here are larval ones from ALLOCSPI (which it keeps);
policies are real. `ip` is the independent oracle.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from ipaddress import ip_address

import pytest
from netns_tools import fresh_netns, ip

from xfrmctl.kernel import (
    SA,
    Aead,
    AsyncXfrm,
    ChildSA,
    Dir,
    Mode,
    Policy,
    Proto,
    Selector,
    SpiRequest,
    Template,
    TransactionError,
    UnsupportedError,
)
from xfrmctl.kernel import transaction as tx

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces"),
]

LOCAL, PEER = ip_address("192.0.2.1"), ip_address("192.0.2.9")
REQID = tx.DEFAULT_OWNERSHIP.reqid(9)


@pytest.fixture
def ns() -> Iterator[str]:
    with fresh_netns("tx") as name:
        yield name


def policies() -> tuple[Policy, ...]:
    out_sel = Selector.of("10.1.0.0/16", "10.2.0.0/16")
    in_sel = Selector.of("10.2.0.0/16", "10.1.0.0/16")
    t_out = Template(Proto.ESP, Mode.TUNNEL, REQID, LOCAL, PEER)
    t_in = Template(Proto.ESP, Mode.TUNNEL, REQID, PEER, LOCAL)
    return (
        Policy(out_sel, Dir.OUT, (t_out,)),
        Policy(in_sel, Dir.IN, (t_in,)),
        Policy(in_sel, Dir.FWD, (t_in,)),
    )


def child(spi_in: int, spi_out: int, larval: bool) -> ChildSA:
    aead = Aead("rfc4106(gcm(aes))", bytes(36))
    return ChildSA(
        SA(PEER, LOCAL, spi_in, mode=Mode.TUNNEL, reqid=REQID, aead=aead),
        SA(LOCAL, PEER, spi_out, mode=Mode.TUNNEL, reqid=REQID, aead=aead),
        policies(),
        inbound_larval=larval,
    )


def test_inbound_only_install_rolls_back_and_split_removal(ns: str) -> None:
    async def scenario() -> None:
        async with AsyncXfrm(ns) as x:
            await tx.install_policies(x.conn, policies())  # a trap for the traffic
            trap_text = ip(ns, "xfrm", "policy")
            spi = await x.allocate_spi(SpiRequest(PEER, LOCAL, reqid=REQID, mode=Mode.TUNNEL))
            c = child(spi, 0x5001, larval=True)
            # No ESP here: the inbound-only install fails cleanly and the trap is as it was.
            with pytest.raises(TransactionError) as info:
                await tx.install_child(x.conn, c, outbound=False)
            assert isinstance(info.value.cause, UnsupportedError)
            assert ip(ns, "xfrm", "policy") == trap_text
            # Split removal: the outbound side (gone already) and the policies stay.
            await tx.remove_child(x.conn, c, keep_policies=True, keep_inbound=True)
            assert f"spi {spi:#010x}" in ip(ns, "xfrm", "state")
            await tx.remove_inbound(x.conn, c)
            assert f"spi {spi:#010x}" not in ip(ns, "xfrm", "state")
            await tx.remove_inbound(x.conn, c)  # gone already: no error
            assert ip(ns, "xfrm", "policy") == trap_text
            await tx.remove_policies(x.conn, policies())
            assert ip(ns, "xfrm", "policy").strip() == ""
            await tx.remove_policies(x.conn, policies())  # gone already: no error

    asyncio.run(scenario())


def test_a_failed_sa_takes_out_the_policies_of_its_batch(ns: str) -> None:
    """SAs and policies go in in one batch, which the kernel carries out past the failed SA:
    the policies that went in after it are taken out again, and a policy someone else put
    there (NEWPOLICY refused: not ours to replace before the SAs are in) is left as it was."""

    async def scenario() -> None:
        async with AsyncXfrm(ns) as x:
            foreign = Policy(Selector.of("10.2.0.0/16", "10.1.0.0/16"), Dir.FWD, priority=5)
            await tx.install_policies(x.conn, [foreign])
            before = ip(ns, "xfrm", "policy")
            with pytest.raises(TransactionError) as info:
                await tx.install_child(x.conn, child(0x4001, 0x5001, larval=False))
            assert isinstance(info.value.cause, UnsupportedError)  # no ESP on this kernel
            assert info.value.rollback_errors == []
            assert ip(ns, "xfrm", "policy") == before
            assert ip(ns, "xfrm", "state").strip() == ""

    asyncio.run(scenario())
