"""What XfrmGlue installs and keeps, built from the engine's values: kernel selectors from
traffic selectors (RFC 7296 §3.13.1, widened to a prefix where a range is not one), policies
with their priority and templates (RFC 4301 §4.4.1), state flags as strongSwan sets them, and
the slim record of an installed pair the glue keeps (issue 15: no keys, the SAs reduced to
what names them to the kernel). Pure functions: no netlink, no daemon state.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from xfrmctl.daemon import ipcomp
from xfrmctl.ike.iana import ProtocolId
from xfrmctl.ike.payloads import TrafficSelector
from xfrmctl.ike.spec import IPAddress, KernelOptions, Mode, TsSpec
from xfrmctl.kernel.messages import STATE_AF_UNSPEC, STATE_ALIGN4
from xfrmctl.kernel.transaction import ChildSA
from xfrmctl.kernel.types import SA, Dir, Encap, Policy, Proto, Selector, Template, host_network
from xfrmctl.kernel.types import Mode as KMode

PRIORITY = 0x3000  # below what admins use for bypass rules (lower = preferred)


def policy_priority(sel: Selector) -> int:
    """Narrower selectors first, so a Child SA narrowed inside a wider one (a /32 child under
    a /24 trap, or two configs nesting) takes its own traffic whatever the install order:
    the kernel takes the first match among equal priorities. Then ports, then a protocol."""
    bits = sel.src.max_prefixlen + sel.dst.max_prefixlen
    width = bits - sel.src.prefixlen - sel.dst.prefixlen  # 0 .. 256
    return PRIORITY + (width << 2) + (0 if sel.sport or sel.dport else 2) + (0 if sel.proto else 1)


def network_of(ts: TrafficSelector) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    # A range that is not one prefix is widened to the smallest covering prefix.
    if ts.start == ts.end:
        return host_network(ts.start)  # the usual road warrior's: shares the engine's address
    net: ipaddress.IPv4Network | ipaddress.IPv6Network = ipaddress.ip_network(ts.start)
    # Not broadcast_address (nor num_addresses, which reads it): a cached property that gives
    # every network a __dict__, and our Selectors keep thousands of networks.
    while int(ts.end) >= int(net.network_address) + (1 << (net.max_prefixlen - net.prefixlen)):
        net = net.supernet()
    return net


def _port(start: int, end: int) -> int:
    return start if start == end else 0


def selector_of(local: TrafficSelector, remote: TrafficSelector) -> Selector:
    proto = local.ip_proto or remote.ip_proto
    return Selector(
        network_of(local),
        network_of(remote),
        proto,
        _port(local.start_port, local.end_port),
        _port(remote.start_port, remote.end_port),
    )


def spec_selector(local: TsSpec, remote: TsSpec) -> Selector:
    return selector_of(local.to_selector(), remote.to_selector())


def kernel_mode(mode: Mode) -> KMode:
    return KMode.TUNNEL if mode == Mode.TUNNEL else KMode.TRANSPORT


def kernel_proto(protocol: ProtocolId) -> Proto:
    return Proto.AH if protocol == ProtocolId.AH else Proto.ESP


def state_flags(mode: KMode, proto: Proto, src: IPAddress) -> int:
    """XFRM_STATE_* flags as strongSwan sets them.

    AF_UNSPEC: a tunnel may carry the other family inside (IPv4 over IPv6 and back); without
    it the kernel gives the SA a selector of the outer family. ALIGN4: AH over IPv4 pads its
    header to 32 bits (RFC 4302 §2.6); Linux pads to 64 by default, and a peer that aligns to
    32 bits drops every packet.
    """
    flags = STATE_AF_UNSPEC if mode == KMode.TUNNEL else 0
    if proto == Proto.AH and src.version == 4:
        flags |= STATE_ALIGN4
    return flags


def policies_for(
    selectors: list[Selector],
    mode: KMode,
    proto: Proto,
    reqid: int,
    local: IPAddress,
    remote: IPAddress,
    options: KernelOptions,
    compress: bool = False,
) -> list[Policy]:
    """in (and fwd in tunnel mode) with `if_id_in` and `mark_in`, out with `if_id_out` and
    `mark_out` (swanctl); `compress` puts an IPComp template before the ESP/AH one."""
    out: list[Policy] = []
    if_in, if_out = options.if_id_in, options.if_id_out
    mark_in, mark_out = ipcomp.mark(options.mark_in), ipcomp.mark(options.mark_out)
    tunnel = mode == KMode.TUNNEL

    def tmpl(direction: Dir) -> tuple[Template, ...]:
        ends = (local, remote) if direction == Dir.OUT else (remote, local)
        return ipcomp.templates(proto, mode, reqid, ends if tunnel else None, direction, compress)

    # One tuple of templates per direction, shared by every selector's policies (fwd's are
    # in's): thousands of Child SAs hold them.
    inbound, outbound = tmpl(Dir.IN), tmpl(Dir.OUT)
    for sel in selectors:
        reverse = Selector(sel.dst, sel.src, sel.proto, sel.dport, sel.sport)
        priority = policy_priority(reverse)
        for direction in (Dir.IN, Dir.FWD) if tunnel else (Dir.IN,):
            out.append(
                Policy(reverse, direction, inbound, priority=priority, mark=mark_in, if_id=if_in)
            )
        out.append(
            Policy(
                sel,
                Dir.OUT,
                outbound,
                priority=policy_priority(sel),
                mark=mark_out,
                if_id=if_out,
            )
        )
    return out


def slim(sa: SA | None) -> SA | None:
    """An installed SA as the glue keeps it: what names it to the kernel (removal, counters,
    drift), its reqid and offload; not its keys, algorithms and lifetimes (issue 15)."""
    if sa is None:
        return None
    return SA(
        src=sa.src,
        dst=sa.dst,
        spi=sa.spi,
        proto=sa.proto,
        mode=sa.mode,
        reqid=sa.reqid,
        mark=sa.mark,
        if_id=sa.if_id,
        offload=sa.offload,
        flags=sa.flags,
    )


def kept_record(child: ChildSA) -> ChildSA:
    """What the glue keeps of a pair once every SA of it is in: its SAs slimmed, its
    policies whole (a removal restores them, a reconcile compares them). The keys stay in
    the ChildSaReady the daemon keeps, and `XfrmGlue._full` rebuilds an SA from it."""
    inbound, outbound = slim(child.inbound), slim(child.outbound)
    assert inbound is not None and outbound is not None
    return replace(
        child,
        inbound=inbound,
        outbound=outbound,
        comp_in=slim(child.comp_in),
        comp_out=slim(child.comp_out),
    )


def replace_ports(encap: Encap | None, sport: int, dport: int) -> Encap:
    return Encap(sport, dport) if encap is None else replace(encap, sport=sport, dport=dport)


def traffic_selector(
    net: ipaddress.IPv4Network | ipaddress.IPv6Network, proto: int, port: int
) -> TrafficSelector:
    lo, hi = (port, port) if port else (0, 65535)
    return TrafficSelector(net.network_address, net.broadcast_address, proto, lo, hi)
