"""Traffic selectors as swanctl writes them: `10.1.0.0/16`, `10.1.0.0/16[tcp/443]`, `dynamic`."""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from xfrmctl.kernel.types import compact, host_network

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DYNAMIC = "dynamic"
_PROTOCOLS = {
    "any": 0,
    "icmp": 1,
    "igmp": 2,
    "tcp": 6,
    "udp": 17,
    "gre": 47,
    "esp": 50,
    "ah": 51,
    "icmp6": 58,
    "ipv6-icmp": 58,
    "ospf": 89,
    "sctp": 132,
}
_TS_RE = re.compile(r"^(?P<net>[^\[\]]+?)\s*(?:\[(?P<proto>[^/\]]*)(?:/(?P<port>[^\]]*))?\])?$")


@dataclass(frozen=True)
class Selector:
    """One parsed selector; `network` None means `dynamic` (the SA's own address)."""

    network: IPNetwork | None
    protocol: int = 0
    port_start: int = 0
    port_end: int = 65535

    def resolve(self, address: IPAddress) -> Selector:
        """Replace `dynamic` by the single-host prefix of the IKE SA's address."""
        if self.network is not None:
            return self
        net = compact(ipaddress.ip_network(address))
        return Selector(net, self.protocol, self.port_start, self.port_end)


def _protocol(text: str, original: str) -> int:
    text = text.strip().lower()
    if not text or text == "%any":
        return 0
    if text.isdigit():
        number = int(text)
        if number <= 255:
            return number
        raise ValueError(f"traffic selector {original!r}: protocol {number} is above 255")
    if text in _PROTOCOLS:
        return _PROTOCOLS[text]
    known = ", ".join(sorted(_PROTOCOLS))
    raise ValueError(f"traffic selector {original!r}: unknown protocol {text!r} (known: {known})")


def _port(text: str, proto: str, original: str) -> int:
    if text.isdigit():
        number = int(text)
        if number <= 65535:
            return number
        raise ValueError(f"traffic selector {original!r}: port {number} is above 65535")
    try:
        return socket.getservbyname(text, proto or "tcp")
    except OSError:
        raise ValueError(f"traffic selector {original!r}: unknown port {text!r}") from None


def _ports(text: str, proto: str, original: str) -> tuple[int, int]:
    text = text.strip()
    if not text or text == "%any":
        return 0, 65535
    low, dash, high = text.partition("-")
    start = _port(low.strip(), proto, original)
    end = _port(high.strip(), proto, original) if dash else start
    if start > end:
        raise ValueError(f"traffic selector {original!r}: port range {start}-{end} is reversed")
    return start, end


# Within `parsed_once()`, each selector text is parsed once: a load validates every selector
# and then builds the specs from the same texts (issue 15: a quarter of a fleet's reload).
_ONCE: ContextVar[dict[str, Selector] | None] = ContextVar("selectors_parsed_once", default=None)


@contextmanager
def parsed_once() -> Iterator[None]:
    """Parse each selector text once within (one configuration load); Selectors are values."""
    token = _ONCE.set({})
    try:
        yield
    finally:
        _ONCE.reset(token)


def parse_selector(text: str) -> Selector:
    """Parse one selector; ValueError names the selector and the bad part."""
    memo = _ONCE.get()
    if memo is None:
        return _parse(text)
    found = memo.get(text)
    if found is None:
        found = memo[text] = _parse(text)
    return found


def _host(text: str) -> IPNetwork | None:
    """`text` as a one-address network if it is one (an address, or one with its /32 or
    /128): what `compact(ip_network(text))` gives, without building the stdlib network."""
    addr, slash, prefix = text.partition("/")
    if slash and prefix not in ("32", "128"):
        return None
    try:
        address = ipaddress.ip_address(addr)
    except ValueError:
        return None  # the full parse says what is wrong
    if slash and int(prefix) != address.max_prefixlen:
        return None
    return host_network(address)


def _parse(text: str) -> Selector:
    match = _TS_RE.match(text.strip())
    if not match:
        raise ValueError(f"traffic selector {text!r} is not PREFIX or PREFIX[PROTO/PORT]")
    net_text = match.group("net").strip()
    network: IPNetwork | None
    if net_text == DYNAMIC:
        network = None
    else:
        try:
            network = _host(net_text) or compact(ipaddress.ip_network(net_text, strict=True))
        except ValueError as exc:
            detail = str(exc)
            if "host bits set" in detail:
                detail = f"host bits set; did you mean {ipaddress.ip_network(net_text, False)}?"
            raise ValueError(f"traffic selector {text!r}: bad prefix: {detail}") from None
    proto_text = match.group("proto") or ""
    protocol = _protocol(proto_text, text)
    port_text = match.group("port") or ""
    if port_text.strip() and protocol not in (0, 6, 17, 132, 1, 58):
        raise ValueError(f"traffic selector {text!r}: protocol {protocol} has no ports")
    start, end = _ports(port_text, proto_text.strip().lower(), text)
    return Selector(network, protocol, start, end)
