"""Events the engine hands to its host. Frozen values; key material never shows in repr.

Equality, hash and repr come from `values.Value` (the same as generated, compiled once).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from xfrmctl.ike.iana import ProtocolId
from xfrmctl.ike.payloads import TrafficSelector
from xfrmctl.ike.spec import KernelOptions, Mode
from xfrmctl.ike.transforms import Proposal, Transform
from xfrmctl.ike.values import Value

if TYPE_CHECKING:
    from xfrmctl.ike.crypto.revocation_data import FetchRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Address = tuple[IPAddress, int]


@dataclass(frozen=True, eq=False, repr=False, slots=True)
class Lifetimes(Value):
    """Kernel lifetimes for a Child SA: soft triggers our rekey, hard removes the SA."""

    soft_seconds: int
    hard_seconds: int
    soft_bytes: int = 0  # 0 = unlimited
    hard_bytes: int = 0
    soft_packets: int = 0
    hard_packets: int = 0


@dataclass(frozen=True, eq=False, repr=False, slots=True)
class UdpEncap(Value):
    """ESP-in-UDP (RFC 3948) ports to program into the SA."""

    local_port: int
    remote_port: int


DELETED_BY_PEER = "deleted by peer"


@dataclass(frozen=True, eq=False, repr=False)
class Event(Value):
    __slots__ = ()  # so that the events the host keeps (ChildSaReady) can go without a __dict__


@dataclass(frozen=True, eq=False, repr=False)
class IkeSaEstablished(Event):
    conn: str
    ike_sa_id: int
    local: Address
    remote: Address
    local_id: str
    remote_id: str
    proposal: str
    initiator: bool


@dataclass(frozen=True, eq=False, repr=False)
class IkeSaRekeyed(Event):
    conn: str
    old_ike_sa_id: int
    new_ike_sa_id: int
    proposal: str


@dataclass(frozen=True, eq=False, repr=False)
class IkeSaReauthenticated(Event):
    """The new IKE SA and its Child SAs are up; the old one is being deleted right after."""

    conn: str
    old_ike_sa_id: int
    new_ike_sa_id: int


@dataclass(frozen=True, eq=False, repr=False)
class IkeSaDeleted(Event):
    conn: str
    ike_sa_id: int
    reason: str


@dataclass(frozen=True, eq=False, repr=False, slots=True)
class ChildSaReady(Event):
    """Everything the kernel needs for one pair of SAs (and its policies). The daemon keeps
    it while the pair is installed: slots, as for its Lifetimes and UdpEncap."""

    conn: str
    child: str
    unique_id: int
    ike_sa_id: int
    mode: Mode
    protocol: ProtocolId
    spi_in: int
    spi_out: int
    local: IPAddress
    remote: IPAddress
    encr: Transform | None  # None for AH
    integ: Transform | None  # None for AEAD
    encr_key_in: bytes = field(repr=False)
    encr_key_out: bytes = field(repr=False)
    integ_key_in: bytes = field(repr=False)
    integ_key_out: bytes = field(repr=False)
    esn: bool
    local_ts: tuple[TrafficSelector, ...]
    remote_ts: tuple[TrafficSelector, ...]
    lifetimes: Lifetimes
    encap: UdpEncap | None
    reqid: int
    tfc_padding: bool
    replaces_spi_in: int | None = None  # set when this rekeys an older Child SA
    replaces_spi_out: int | None = None
    proposal: str = ""
    kernel: KernelOptions = field(default_factory=KernelOptions)
    # A rekey the host may send on at once: we initiated it, so the peer installed its
    # inbound SA before answering (RFC 7296 §2.8), and no collision may make it redundant.
    # Otherwise (we answered the rekey) the new outbound SA waits for the old pair to go.
    outbound_now: bool = False
    # IPComp (RFC 3173): the CPI the peer sends to us, and ours towards it; 0 for none.
    cpi_in: int = 0
    cpi_out: int = 0


@dataclass(frozen=True, eq=False, repr=False)
class ChildSaDeleted(Event):
    conn: str
    child: str
    unique_id: int
    protocol: ProtocolId
    spi_in: int
    spi_out: int
    local: IPAddress
    remote: IPAddress
    reason: str
    by_peer: bool = False  # the peer deleted it (or its IKE SA): swanctl's close_action applies


@dataclass(frozen=True, eq=False, repr=False)
class Offer(Value):
    """One side's view in a failed negotiation, for an at-a-glance mismatch report.

    Both sides are told from our point of view: `local_ts` is the traffic on our side (our
    local_ts, or the peer's TSr when it initiated), `remote_ts` the traffic on the peer's.
    `hidden` names what the protocol did not show us of this side (RFC 7296 §2.7, §2.9:
    an error notify carries no counter-offer), so a report can say so instead of guessing.
    """

    proposals: tuple[Proposal, ...] = ()
    proposal_text: tuple[str, ...] = ()
    local_ts: tuple[TrafficSelector, ...] = ()
    remote_ts: tuple[TrafficSelector, ...] = ()
    identity: str = ""  # this side's own identity (IDi/IDr, our local.id)
    auth_method: str = ""  # "psk" or "pubkey" (swanctl's words), "" when unknown
    peer_id: str = ""  # the identity this side wants of the other (our remote.id; "%any")
    peer_auth: str = ""  # how this side wants the other to authenticate (our remote.auth)
    nat: bool | None = None  # this side is behind a NAT (NAT-D, RFC 7296 §2.23); None: unknown
    ike_proposal: str = ""  # the IKE SA's agreed proposal, when the failure came after it
    ke_group: str = ""  # the key exchange an INVALID_KE_PAYLOAD asked for (strongSwan keyword)
    hidden: tuple[str, ...] = ()  # "proposals", "traffic selectors", "identity", "reason"


@dataclass(frozen=True, eq=False, repr=False)
class AuthenticationFailed(Event):
    """`kind` sorts the failure for a diagnosis: "psk" (the keys differ), "identity" (IDi/IDr
    not the configured one), "auth_method", "ca" (no trusted issuer: `issuer`, `ca_files`),
    "certificate" (expired, wrong identity, bad signature), "revoked" (a CRL or OCSP says so),
    "revocation" (no status where the policy needs one) or "peer_rejected" (the peer sent
    AUTHENTICATION_FAILED, which says nothing of why, RFC 7296 §2.21.2)."""

    conn: str
    ike_sa_id: int
    remote: Address
    reason: str
    local_id: str = ""
    remote_id: str = ""
    kind: str = ""
    initiator: bool | None = None
    ours: Offer = field(default_factory=Offer)
    theirs: Offer = field(default_factory=Offer)
    issuer: str = ""
    ca_files: tuple[str, ...] = ()
    candidates: tuple[str, ...] = ()  # as responder: the remote ids our connections accept


@dataclass(frozen=True, eq=False, repr=False)
class RevocationFetchNeeded(Event):
    """IKE_AUTH of `ike_sa_id` waits for these CRL/OCSP fetches (RFC 5280 §6.3, RFC 6960):
    fetch each within `timeout` seconds and hand the answers to `revocation_fetched`."""

    conn: str
    ike_sa_id: int
    requests: tuple[FetchRequest, ...]
    timeout: float


@dataclass(frozen=True, eq=False, repr=False)
class NegotiationFailed(Event):
    conn: str
    ike_sa_id: int
    child: str | None
    reason: str  # e.g. "NO_PROPOSAL_CHOSEN", "TS_UNACCEPTABLE", "INVALID_KE_PAYLOAD"
    ours: Offer
    theirs: Offer
    remote: Address | None = None
    initiator: bool | None = None  # our role in the failed exchange; None: unknown


@dataclass(frozen=True, eq=False, repr=False)
class PeerDead(Event):
    conn: str
    ike_sa_id: int
    remote: Address
    reason: str
    children: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False, repr=False)
class ProtocolViolation(Event):
    """A message was dropped because the peer broke the protocol; for logs and counters."""

    remote: Address
    reason: str
    ike_sa_id: int | None = None


@dataclass(frozen=True, eq=False, repr=False)
class MessageTrace(Event):
    """A message sent or received (after decryption), only with `IkeEndpoint(trace=True)`.

    `lines` come from `xfrmctl.ike.trace.format_message`: a header, then one line per payload,
    with sizes instead of secret bytes, so the host may log them at debug level as they are.
    """

    direction: str  # "in" or "out"
    remote: Address
    ike_sa_id: int | None
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)
