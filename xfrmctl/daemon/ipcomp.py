"""The kernel objects of a Child SA's IPComp (RFC 3173) and marks, as strongSwan installs them.

Contract: with CPIs agreed (`ChildSaReady.cpi_in/cpi_out`), each direction gets an IPComp SA
(proto comp, `deflate`, the CPI as its SPI) in the child's mode, and the ESP/AH SA under it
switches to transport mode; policy templates are comp then esp, the comp template optional on
in/fwd (`level use`) so that packets the peer left uncompressed (too small to gain) pass.
In tunnel mode those arrive as plain IP-in-IP: the kernel's xfrm4_tunnel/xfrm6_tunnel state,
which it creates and deletes with the IPComp SA itself, decapsulates them. Marks follow
swanctl: `mark_out` on the outbound SAs and the out policy, `mark_in` on the in/fwd policies.
"""

from __future__ import annotations

from xfrmctl.ike.events import ChildSaReady
from xfrmctl.ike.spec import MarkSpec
from xfrmctl.kernel.messages import STATE_AF_UNSPEC
from xfrmctl.kernel.types import SA, Address, Comp, Dir, Mark, Mode, Proto, Template

DEFLATE = "deflate"  # the kernel's name of IPComp transform DEFLATE (RFC 2394)


def mark(spec: MarkSpec | None) -> Mark | None:
    return None if spec is None else Mark(spec.value, spec.mask)


def uses_ipcomp(ready: ChildSaReady) -> bool:
    return bool(ready.cpi_in and ready.cpi_out)


def comp_sas(ready: ChildSaReady, mode: Mode, reqid: int) -> tuple[SA | None, SA | None]:
    """(inbound, outbound) IPComp SAs, or (None, None) without IPComp. No lifetime or replay
    window: they live and die with the ESP SA above them."""
    if not uses_ipcomp(ready):
        return None, None
    flags = STATE_AF_UNSPEC if mode == Mode.TUNNEL else 0
    opts, comp = ready.kernel, Comp(DEFLATE)
    inbound = SA(
        ready.remote,
        ready.local,
        ready.cpi_in,
        Proto.COMP,
        mode,
        reqid,
        comp=comp,
        replay_window=0,
        if_id=opts.if_id_in,
        flags=flags,
    )
    outbound = SA(
        ready.local,
        ready.remote,
        ready.cpi_out,
        Proto.COMP,
        mode,
        reqid,
        comp=comp,
        replay_window=0,
        if_id=opts.if_id_out,
        mark=mark(opts.mark_out),
        flags=flags,
    )
    return inbound, outbound


def templates(
    proto: Proto,
    mode: Mode,
    reqid: int,
    ends: tuple[Address, Address] | None,
    direction: Dir,
    ipcomp: bool,
) -> tuple[Template, ...]:
    """A policy's templates, outermost last: [comp,] esp/ah; `ends` (src, dst) for tunnels."""
    src, dst = ends if ends is not None else (None, None)
    if not ipcomp:
        return (Template(proto, mode, reqid, src, dst),)
    comp = Template(Proto.COMP, mode, reqid, src, dst, optional=direction != Dir.OUT)
    return comp, Template(proto, Mode.TRANSPORT, reqid)
