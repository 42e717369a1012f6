"""Connection specs: plain values the daemon builds from the user's configuration.

Kept free of pydantic so the engine stays a pure library; validation of user input happens in
`xfrmctl.config`, and `ConnectionSpec.check()` only guards what the engine relies on.
Equality, hash and repr come from `values.Value` (the same as generated, compiled once).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from xfrmctl.ike.errors import LocalProtocolError
from xfrmctl.ike.iana import IdType, ProtocolId
from xfrmctl.ike.payloads import TrafficSelector
from xfrmctl.ike.transforms import Proposal
from xfrmctl.ike.values import Value

if TYPE_CHECKING:
    from xfrmctl.ike.crypto.auth import LocalSigner
    from xfrmctl.ike.crypto.certs import TrustStore
    from xfrmctl.ike.crypto.revocation_data import RevocationConfig

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Mode(Enum):
    TUNNEL = "tunnel"
    TRANSPORT = "transport"


class StartAction(Enum):
    NONE = "none"
    TRAP = "trap"  # install policies, negotiate on ACQUIRE (the daemon's job)
    START = "start"


class CloseAction(Enum):
    NONE = "none"
    TRAP = "trap"
    START = "start"


class Encap(Enum):
    AUTO = "auto"  # UDP-encapsulate only when NAT is detected
    FORCE = "force"  # pretend a NAT so ESP always goes over UDP 4500


@dataclass(frozen=True, eq=False, repr=False)
class Identity(Value):
    """An IKE identity as it goes on the wire (RFC 7296 §3.5)."""

    type: IdType
    data: bytes

    @classmethod
    def parse(cls, text: str) -> Identity:
        """strongSwan-like guessing: IP address, user@fqdn, DN with '=', or FQDN."""
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            pass
        else:
            kind = IdType.IPV4_ADDR if addr.version == 4 else IdType.IPV6_ADDR
            return cls(kind, addr.packed)
        if text.startswith("keyid:"):
            return cls(IdType.KEY_ID, text[6:].encode())
        if "=" in text:
            from cryptography import x509

            try:
                name = x509.Name.from_rfc4514_string(text.replace(", ", ","))
            except ValueError as exc:
                raise LocalProtocolError(
                    f"identity {text!r}: bad distinguished name: {exc}"
                ) from None
            return cls(IdType.DER_ASN1_DN, name.public_bytes())
        if "@" in text:
            return cls(IdType.RFC822_ADDR, text.encode())
        return cls(IdType.FQDN, text.encode())

    def __str__(self) -> str:
        if self.type in (IdType.IPV4_ADDR, IdType.IPV6_ADDR) and len(self.data) in (4, 16):
            return str(ipaddress.ip_address(self.data))
        if self.type in (IdType.FQDN, IdType.RFC822_ADDR, IdType.KEY_ID):
            return self.data.decode(errors="replace")
        if self.type == IdType.DER_ASN1_DN:
            return "dn:" + self.data.hex()  # cryptography cannot parse a bare DER Name
        return self.data.hex()


@dataclass(frozen=True, eq=False, repr=False)
class PskAuth(Value):
    psk: bytes = field(repr=False)


@dataclass(frozen=True, eq=False, repr=False)
class CertAuth(Value):
    """Our private key and chain (leaf first, DER) and the CAs we trust for the peer."""

    signer: LocalSigner
    cert_chain: tuple[bytes, ...]
    trust_store: (
        TrustStore | None
    )  # for the peer, when it proves itself the same way (no remote_auth)
    send_certreq: bool = True
    revocation: RevocationConfig | None = None  # None: relaxed, no CRL files


@dataclass(frozen=True, eq=False, repr=False)
class PeerCertAuth(Value):
    """The peer proves itself with a certificate we accept; we use a PSK ourselves."""

    trust_store: TrustStore
    send_certreq: bool = True
    revocation: RevocationConfig | None = None  # None: relaxed, no CRL files


Auth = PskAuth | CertAuth  # how we prove ourselves
PeerAuth = PskAuth | CertAuth | PeerCertAuth  # how the peer must prove itself


def last_address(network: IPNetwork) -> IPAddress:
    """`network.broadcast_address` without its cache: caching it grows the network's dict by
    ~200 bytes, and every connection's selectors keep their networks."""
    first = network.network_address
    return type(first)(int(first) + (1 << (network.max_prefixlen - network.prefixlen)) - 1)


@dataclass(frozen=True, eq=False, repr=False)
class TsSpec(Value):
    """One configured traffic selector: a network plus optional protocol and port range."""

    network: IPNetwork
    protocol: int = 0
    port_start: int = 0
    port_end: int = 65535

    def to_selector(self) -> TrafficSelector:
        return TrafficSelector(
            self.network.network_address,
            last_address(self.network),
            self.protocol,
            self.port_start,
            self.port_end,
        )


class Offload(Enum):
    """swanctl's `hw_offload`: where the NIC does the per-packet work."""

    NO = "no"
    YES = "yes"  # crypto offload, or fail
    AUTO = "auto"  # crypto offload where the device can, software otherwise
    PACKET = "packet"  # full packet offload, or fail


@dataclass(frozen=True, eq=False, repr=False)
class InterfaceOptions(Value):
    """The connection's XFRM interface (route-based IPsec), for the host; the engine ignores it."""

    name: str
    if_id: int
    mtu: int | None = None
    addresses: tuple[str, ...] = ()  # ADDRESS/PREFIXLEN
    routes: tuple[str, ...] = ()  # prefixes


@dataclass(frozen=True, eq=False, repr=False)
class MarkSpec(Value):
    """A netfilter mark and mask an SA or policy matches (swanctl `mark_in`/`mark_out`)."""

    value: int
    mask: int = 0xFFFFFFFF


@dataclass(frozen=True, eq=False, repr=False)
class KernelOptions(Value):
    """Per-child XFRM settings the engine carries to the host untouched (swanctl names)."""

    replay_window: int = 32  # packets; 0 disables replay protection
    if_id_in: int = 0  # XFRM interface ID of inbound SAs and policies (0: none)
    if_id_out: int = 0
    hw_offload: Offload = Offload.NO
    interface: InterfaceOptions | None = None  # the connection's, on each of its children
    mark_in: MarkSpec | None = None  # on the in and fwd policies (swanctl: not the SA)
    mark_out: MarkSpec | None = None  # on the out policy and the outbound SA


@dataclass(frozen=True, eq=False, repr=False)
class ChildSpec(Value):
    name: str
    local_ts: tuple[TsSpec, ...]
    remote_ts: tuple[TsSpec, ...]
    proposals: tuple[Proposal, ...]
    mode: Mode = Mode.TUNNEL
    protocol: ProtocolId = ProtocolId.ESP
    rekey_time: float = 3600.0
    life_time: float = 3960.0
    rand_time: float = 360.0
    rekey_bytes: int = 0
    life_bytes: int = 0
    rand_bytes: int = 0  # jitter subtracted from rekey_bytes, as rand_time from rekey_time
    rekey_packets: int = 0
    life_packets: int = 0
    rand_packets: int = 0
    start_action: StartAction = StartAction.NONE
    dpd_action: CloseAction = CloseAction.NONE
    close_action: CloseAction = CloseAction.NONE
    kernel: KernelOptions = KernelOptions()
    ipcomp: bool = False  # offer/accept IPComp (DEFLATE) with each Child SA (RFC 3173)


@dataclass(frozen=True, eq=False, repr=False)
class ConnectionSpec(Value):
    name: str
    local_addrs: tuple[IPAddress, ...]
    remote_addrs: tuple[IPAddress, ...]  # empty means "any" (responder only)
    local_id: Identity
    remote_id: Identity | None  # None: any identity the peer can authenticate
    auth: Auth  # ours (local.auth)
    ike_proposals: tuple[Proposal, ...]
    children: tuple[ChildSpec, ...] = ()
    remote_port: int = 500
    rekey_time: float = 14400.0
    reauth_time: float = 0.0
    over_time: float = 1440.0
    rand_time: float = 1440.0
    dpd_delay: float = 0.0  # 0 disables liveness checks
    dpd_timeout: float = 0.0
    encap: Encap = Encap.AUTO
    fragmentation: bool = True
    keep_alive: float = 20.0  # NAT-T keepalive interval behind a NAT (the host sends them); 0: off
    # How the peer must authenticate (remote.auth), when not the way we do: RFC 7296 §2.15
    # lets each direction use its own method.
    remote_auth: PeerAuth | None = None

    @property
    def peer_auth(self) -> PeerAuth:
        return self.auth if self.remote_auth is None else self.remote_auth

    @property
    def uses_certificates(self) -> bool:
        return isinstance(self.auth, CertAuth) or not isinstance(self.peer_auth, PskAuth)

    def child(self, name: str) -> ChildSpec:
        for c in self.children:
            if c.name == name:
                return c
        raise LocalProtocolError(f"connection {self.name!r} has no child {name!r}")

    def check(self) -> None:
        """Reject specs the engine cannot run with, naming the offending field."""
        if not self.ike_proposals:
            raise LocalProtocolError(f"connection {self.name!r}: no IKE proposals")
        for p in self.ike_proposals:
            if p.protocol != ProtocolId.IKE:
                raise LocalProtocolError(f"connection {self.name!r}: IKE proposal is {p.protocol}")
        for c in self.children:
            if not c.proposals:
                raise LocalProtocolError(f"connection {self.name!r} child {c.name!r}: no proposals")
            if not c.local_ts or not c.remote_ts:
                raise LocalProtocolError(
                    f"connection {self.name!r} child {c.name!r}: traffic selectors missing"
                )
            if c.protocol not in (ProtocolId.ESP, ProtocolId.AH):
                raise LocalProtocolError(
                    f"connection {self.name!r} child {c.name!r}: protocol must be ESP or AH"
                )
        for auth in (self.auth, self.peer_auth):
            if isinstance(auth, PskAuth) and not auth.psk:
                raise LocalProtocolError(f"connection {self.name!r}: empty pre-shared key")
