"""Typed XFRM objects: what the rest of xfrmctl installs and reads back, never bytes.

Values are frozen dataclasses so they can be compared with what the kernel returns; kernel-side
state that is not part of the configuration (counters, index) is excluded from equality.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import IntEnum

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Proto(IntEnum):
    ESP = 50
    AH = 51
    COMP = 108  # IPComp

    @property
    def label(self) -> str:
        return {50: "esp", 51: "ah", 108: "comp"}[self.value]


class Mode(IntEnum):
    TRANSPORT = 0
    TUNNEL = 1
    BEET = 4


class Dir(IntEnum):
    IN = 0
    OUT = 1
    FWD = 2


class Action(IntEnum):
    ALLOW = 0
    BLOCK = 1


class SaDir(IntEnum):
    """XFRMA_SA_DIR (Linux 6.10+); UNSET sends nothing."""

    UNSET = 0
    IN = 1
    OUT = 2


def address(value: str | Address) -> Address:
    return value if not isinstance(value, str) else ipaddress.ip_address(value)


def network(value: str | Network | Address) -> Network:
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value
    return compact(ipaddress.ip_network(value, strict=False))


class _Host4(ipaddress.IPv4Network):
    """A one-address IPv4 network without the closure the stdlib's constructor attaches to
    each one as `hosts` (see `host_network`)."""

    def hosts(self) -> list[ipaddress.IPv4Address]:  # type: ignore[override]
        return [self.network_address]

    def __repr__(self) -> str:
        return f"IPv4Network('{self}')"


class _Host6(ipaddress.IPv6Network):
    """`_Host4` for IPv6."""

    def hosts(self) -> list[ipaddress.IPv6Address]:  # type: ignore[override]
        return [self.network_address]

    def __repr__(self) -> str:
        return f"IPv6Network('{self}')"


def host_network(addr: Address) -> Network:
    """The network of `addr` alone (/32, /128), equal to and hashing as `ip_network(addr)`.

    Why: the stdlib gives every one-address network its own `hosts` closure and a new
    address object, 480 bytes in all; this one shares `addr` and takes about 100. Every
    host-to-host Child SA keeps two in its policies' selectors, and a responder for road
    warriors keeps thousands (issue 15).
    """
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.scope_id is not None:  # a network has no zone: the address without it
            addr = ipaddress.IPv6Address(int(addr))
        net6 = _Host6.__new__(_Host6)
        net6.network_address = addr
        net6.netmask, net6._prefixlen = _Host6._make_netmask(128)  # type: ignore[attr-defined]
        return net6
    net4 = _Host4.__new__(_Host4)
    net4.network_address = addr
    net4.netmask, net4._prefixlen = _Host4._make_netmask(32)  # type: ignore[attr-defined]
    return net4


def compact(net: Network) -> Network:
    """`net`, as `host_network` builds it when it holds one address."""
    if net.prefixlen == net.max_prefixlen and type(net) in _STDLIB:
        return host_network(net.network_address)
    return net


_STDLIB = (ipaddress.IPv4Network, ipaddress.IPv6Network)


def family_of(addr: Address | Network) -> int:
    return 2 if addr.version == 4 else 10


@dataclass(frozen=True, slots=True)
class Selector:
    """Traffic selector: prefixes, IP protocol (0 = any), ports (0 = any)."""

    src: Network
    dst: Network
    proto: int = 0
    sport: int = 0
    dport: int = 0
    ifindex: int = 0
    # Selectors key the policy indexes and every reconcile's scan, and hashing two ipaddress
    # networks takes several Python calls: the hash is kept once taken (issue 15).
    _hash: int | None = field(default=None, init=False, repr=False, compare=False)

    def __hash__(self) -> int:
        h = self._hash
        if h is None:
            h = hash((self.src, self.dst, self.proto, self.sport, self.dport, self.ifindex))
            object.__setattr__(self, "_hash", h)
        return h

    def __post_init__(self) -> None:
        if self.src.version != self.dst.version:
            raise ValueError(f"selector mixes address families: {self.src} and {self.dst}")
        for name in ("sport", "dport"):
            port = getattr(self, name)
            if not 0 <= port <= 0xFFFF:
                raise ValueError(f"selector {name} {port} is not a port number")
        if not 0 <= self.proto <= 255:
            raise ValueError(f"selector protocol {self.proto} is not an IP protocol number")

    @classmethod
    def of(
        cls, src: str | Network, dst: str | Network, proto: int = 0, sport: int = 0, dport: int = 0
    ) -> Selector:
        return cls(network(src), network(dst), proto, sport, dport)

    @classmethod
    def host_to_host(cls, src: Address, dst: Address) -> Selector:
        return cls(network(src), network(dst))

    @property
    def family(self) -> int:
        return family_of(self.src)

    def is_any(self) -> bool:
        """Matches all traffic of its family (what an SA without a selector gets)."""
        return (
            self.src.prefixlen == 0
            and self.dst.prefixlen == 0
            and not (self.proto or self.sport or self.dport or self.ifindex)
        )

    def __str__(self) -> str:
        ports = f" proto {self.proto}" if self.proto else ""
        ports += f" sport {self.sport}" if self.sport else ""
        ports += f" dport {self.dport}" if self.dport else ""
        return f"{self.src} -> {self.dst}{ports}"


@dataclass(frozen=True, slots=True)
class Lifetime:
    """Soft/hard limits; None is infinite (XFRM_INF), as `ip xfrm` defaults to."""

    soft_bytes: int | None = None
    hard_bytes: int | None = None
    soft_packets: int | None = None
    hard_packets: int | None = None
    soft_seconds: int | None = None  # since the SA was added
    hard_seconds: int | None = None
    soft_use_seconds: int | None = None  # since first use
    hard_use_seconds: int | None = None

    def __post_init__(self) -> None:
        for name in self.__slots__:
            value = getattr(self, name)
            if value is not None and not 0 <= value < 2**64:
                raise ValueError(f"lifetime {name} {value} out of range")
            if value == 0 and name.endswith("seconds"):
                # The kernel reads 0 seconds as "no limit": keep one spelling of it.
                object.__setattr__(self, name, None)


@dataclass(frozen=True, slots=True)
class Mark:
    value: int
    mask: int = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Encap:
    """UDP encapsulation of ESP (RFC 3948); `original` is the peer's pre-NAT address, if known."""

    sport: int = 4500
    dport: int = 4500
    type: int = 2  # UDP_ENCAP_ESPINUDP
    original: Address | None = None

    def __post_init__(self) -> None:
        if self.original is not None and self.original.is_unspecified:
            object.__setattr__(self, "original", None)  # all-zero means "not known"


@dataclass(frozen=True, slots=True)
class Offload:
    """Hardware offload request: `packet` asks for full packet offload, else crypto only."""

    ifindex: int
    inbound: bool
    packet: bool = False


@dataclass(frozen=True, slots=True)
class Crypt:
    name: str  # kernel algorithm name, e.g. "cbc(aes)"
    key: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Auth:
    name: str  # e.g. "hmac(sha256)"
    key: bytes = field(repr=False)
    trunc_bits: int = 96


@dataclass(frozen=True, slots=True)
class Aead:
    name: str  # e.g. "rfc4106(gcm(aes))"
    key: bytes = field(repr=False)  # includes the salt
    icv_bits: int = 128


@dataclass(frozen=True, slots=True)
class Comp:
    name: str  # e.g. "deflate"


@dataclass(frozen=True, slots=True)
class Counters:
    """What the kernel counted for an SA (xfrm_lifetime_cur and xfrm_stats)."""

    bytes: int = 0
    packets: int = 0
    add_time: int = 0
    use_time: int = 0
    replay_errors: int = 0
    integrity_failures: int = 0


@dataclass(frozen=True, slots=True)
class ReplayState:
    """Sequence numbers (64-bit with ESN) and the replay window."""

    oseq: int
    seq: int
    window: int
    bitmap: bytes = b""


@dataclass(frozen=True, slots=True)
class SaId:
    """What identifies an SA in the kernel: destination, SPI, protocol, and its mark (two
    SAs may differ by mark alone, so GETSA/DELSA/GETAE of a marked SA must name it)."""

    dst: Address
    spi: int
    proto: Proto = Proto.ESP
    mark: Mark | None = None

    def __str__(self) -> str:
        mark = f" mark {self.mark.value:#x}/{self.mark.mask:#x}" if self.mark else ""
        return f"{self.proto.label} spi {self.spi:#010x} dst {self.dst}{mark}"


@dataclass(frozen=True, slots=True)
class SA:
    """An IPsec SA as installed in (or read back from) the kernel."""

    src: Address
    dst: Address
    spi: int
    proto: Proto = Proto.ESP
    mode: Mode = Mode.TRANSPORT
    reqid: int = 0
    aead: Aead | None = None
    crypt: Crypt | None = None
    auth: Auth | None = None
    comp: Comp | None = None
    selector: Selector | None = None  # None: any traffic (family of src/dst)
    lifetime: Lifetime = Lifetime()
    replay_window: int = 32
    esn: bool = False
    encap: Encap | None = None
    mark: Mark | None = None
    if_id: int = 0
    offload: Offload | None = None
    direction: SaDir = SaDir.UNSET
    flags: int = 0  # XFRM_STATE_* flags beyond ESN, e.g. STATE_AF_UNSPEC
    tfc_pad: int = 0
    counters: Counters = field(default=Counters(), compare=False)
    seq: int = field(default=0, compare=False)  # ACQUIRE sequence this SA answers

    def __post_init__(self) -> None:
        if self.src.version != self.dst.version:
            raise ValueError(f"SA mixes address families: {self.src} and {self.dst}")
        if not 0 <= self.spi <= 0xFFFFFFFF:
            raise ValueError(f"SPI {self.spi} is not a 32-bit value")
        if self.aead is not None and (self.crypt is not None or self.auth is not None):
            raise ValueError("an SA has either an AEAD or a cipher+integrity, not both")
        if self.proto == Proto.AH and (self.aead or self.crypt):
            raise ValueError("AH SAs carry only an integrity algorithm")
        if not 0 <= self.replay_window <= 4096 * 32:
            raise ValueError(f"replay window {self.replay_window} out of range")
        sel = self.selector
        if sel is not None and sel.is_any() and sel.family == family_of(self.dst):
            # The kernel gives an SA without a selector an "any" one of its family: one spelling.
            object.__setattr__(self, "selector", None)

    @property
    def larval(self) -> bool:
        """A state without keys: what ALLOCSPI and ACQUIRE leave until the SA is updated."""
        return self.aead is None and self.crypt is None and self.auth is None and not self.comp

    def check_installable(self) -> None:
        """Raise ValueError when the kernel would refuse this SA for lack of algorithms."""
        if self.proto == Proto.ESP and self.aead is None and self.crypt is None:
            raise ValueError(f"{self}: ESP needs an encryption algorithm (or ecb(cipher_null))")
        if self.proto == Proto.AH and self.auth is None:
            raise ValueError(f"{self}: AH needs an integrity algorithm")
        if self.proto == Proto.COMP and self.comp is None:
            raise ValueError(f"{self}: IPComp needs a compression algorithm")

    @property
    def id(self) -> SaId:
        return SaId(self.dst, self.spi, self.proto, self.mark)

    @property
    def family(self) -> int:
        return family_of(self.dst)

    def __str__(self) -> str:
        return f"SA {self.proto.label} spi {self.spi:#010x} src {self.src} dst {self.dst}"


SPI_MIN = 0x100  # the kernel reserves SPIs 0-255 (RFC 4303 §2.1)
SPI_MAX = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class SpiRange:
    """The SPIs ALLOCSPI may choose from, both ends included."""

    lo: int = SPI_MIN
    hi: int = SPI_MAX

    def __post_init__(self) -> None:
        if not SPI_MIN <= self.lo <= SPI_MAX:
            raise ValueError(
                f"SPI range low end {self.lo:#x} outside {SPI_MIN:#x}-{SPI_MAX:#x} "
                f"(the kernel reserves SPIs below {SPI_MIN:#x})"
            )
        if not SPI_MIN <= self.hi <= SPI_MAX:
            raise ValueError(f"SPI range high end {self.hi:#x} outside {SPI_MIN:#x}-{SPI_MAX:#x}")
        if self.lo > self.hi:
            raise ValueError(f"SPI range low end {self.lo:#x} above its high end {self.hi:#x}")

    def __str__(self) -> str:
        return f"{self.lo:#x}-{self.hi:#x}"


@dataclass(frozen=True, slots=True)
class SpiRequest:
    """What ALLOCSPI asks for: a larval inbound SA from `src` to `dst` with an SPI in `spis`.

    The one declaration of ALLOCSPI's parameters, passed whole through every layer."""

    src: Address
    dst: Address
    proto: Proto = Proto.ESP
    reqid: int = 0
    mode: Mode = Mode.TRANSPORT
    spis: SpiRange = SpiRange()
    mark: Mark | None = None
    if_id: int = 0
    seq: int = 0  # the ACQUIRE this answers, if any

    def __post_init__(self) -> None:
        if self.src.version != self.dst.version:
            raise ValueError(f"SPI request mixes address families: {self.src} and {self.dst}")

    @property
    def family(self) -> int:
        return family_of(self.dst)

    def __str__(self) -> str:
        return f"SPI allocation {self.proto.label} src {self.src} dst {self.dst} range {self.spis}"


@dataclass(frozen=True, slots=True)
class Template:
    """One transform a policy requires (xfrm_user_tmpl).

    Tunnel/BEET templates name the endpoints; transport templates leave them unset (any).
    """

    proto: Proto = Proto.ESP
    mode: Mode = Mode.TRANSPORT
    reqid: int = 0
    src: Address | None = None
    dst: Address | None = None
    spi: int = 0
    optional: bool = False
    share: int = 0
    aalgos: int = 0xFFFFFFFF
    ealgos: int = 0xFFFFFFFF
    calgos: int = 0xFFFFFFFF

    def __post_init__(self) -> None:
        both = self.src is not None and self.dst is not None
        if both and self.src.is_unspecified and self.dst.is_unspecified:  # type: ignore[union-attr]
            # All-zero endpoints are how the kernel spells "any": keep one spelling.
            object.__setattr__(self, "src", None)
            object.__setattr__(self, "dst", None)
        if (self.src is None) != (self.dst is None):
            raise ValueError("a template names both tunnel endpoints or neither")
        if self.src is not None and self.dst is not None and self.src.version != self.dst.version:
            raise ValueError(f"template mixes address families: {self.src} and {self.dst}")


@dataclass(frozen=True, slots=True)
class PolicyId:
    """A policy is identified by its selector, direction and mark (or by its kernel index)."""

    selector: Selector
    dir: Dir
    mark: Mark | None = None
    if_id: int = 0
    # No kept hash, unlike Selector: its int would be one more object per policy of every
    # Child SA (~35 bytes each), for one Python call saved per lookup (issue 15).

    def __str__(self) -> str:
        return f"policy {self.dir.name.lower()} {self.selector}"


@dataclass(frozen=True, slots=True)
class Policy:
    """An SPD entry. No templates and ALLOW: bypass; BLOCK: drop; templates: require IPsec."""

    selector: Selector
    dir: Dir
    templates: tuple[Template, ...] = ()
    action: Action = Action.ALLOW
    priority: int = 0
    mark: Mark | None = None
    if_id: int = 0
    lifetime: Lifetime = Lifetime()
    flags: int = 0  # XFRM_POLICY_LOCALOK / XFRM_POLICY_ICMP
    index: int = field(default=0, compare=False)  # assigned by the kernel
    # Every index, lookup and removal asks for the identity, several times per Child SA set
    # up, rekeyed and removed: made once, the same object the indexes hold (issue 15).
    _id: PolicyId | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.priority <= 0xFFFFFFFF:
            raise ValueError(f"policy priority {self.priority} out of range")

    @property
    def id(self) -> PolicyId:
        pid = self._id
        if pid is None:
            pid = PolicyId(self.selector, self.dir, self.mark, self.if_id)
            object.__setattr__(self, "_id", pid)
        return pid

    def __str__(self) -> str:
        return f"policy {self.dir.name.lower()} {self.selector} priority {self.priority}"


@dataclass(frozen=True, slots=True)
class SaCounters:
    """GETAE answer: counters and replay state of one SA, for status displays."""

    id: SaId
    bytes: int
    packets: int
    add_time: int
    use_time: int
    replay: ReplayState | None
