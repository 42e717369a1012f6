"""The configuration schema: pydantic models whose field names follow swanctl.conf.

Models only check shape and single values; cross-field rules live in `rules.py` and file access
in `secrets.py`, so that every mistake can be reported with its own key and line.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

from xfrmctl.config.identities import ANY, Identity, parse_identity
from xfrmctl.config.selectors import Selector, parse_selector
from xfrmctl.config.units import DURATION_PATTERN, SIZE_PATTERN, parse_duration, parse_size
from xfrmctl.ike.iana import ProtocolId

if TYPE_CHECKING:
    from xfrmctl.ike.transforms import Proposal

DEFAULT_SOCKET = Path("/run/xfrmctl/xfrmctl.sock")
DEFAULT_IKE_PROPOSALS = ["aes256gcm16-prfsha384-x25519"]
DEFAULT_ESP_PROPOSALS = ["aes256gcm16"]
DEFAULT_AH_PROPOSALS = ["sha256"]
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _check_name(value: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError(
            f"name {value!r} must start with a letter or digit and hold only letters, digits, "
            "'.', '_' and '-'"
        )
    return value


def _check_proposal(protocol: ProtocolId) -> Any:
    def check(text: str) -> str:
        try:
            from xfrmctl.ike.proposals import parse_proposals
        except ImportError:  # the proposal parser is not there: the daemon will refuse later
            return text
        parse_proposals([text], protocol)  # ProposalSyntaxError is a ValueError
        return text

    return check


def _check_identity(value: str) -> str:
    parse_identity(value)
    return value


def _check_selector(value: str) -> str:
    parse_selector(value)
    return value


def _check_address(value: str) -> str:
    if value == ANY:
        return value
    try:
        if "/" in value:
            ipaddress.ip_network(value, strict=True)
        else:
            ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address, a prefix or %any") from None
    return value


def _bool_alias(true: str, false: str) -> Any:
    """YAML 1.1 reads `yes`/`no` as booleans; map them back onto the documented words."""

    def convert(value: object) -> object:
        if value is True:
            return true
        if value is False:
            return false
        return value

    return convert


def _crypto_is_yes(value: object) -> object:
    """`crypto`, the name an earlier release documented, is swanctl's `yes`."""
    return "yes" if value == "crypto" else value


Duration = Annotated[
    int,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": DURATION_PATTERN},
            ],
            "description": "seconds, or a number with s, m, h or d",
        }
    ),
]
Size = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": SIZE_PATTERN},
            ],
            "description": "a count, or a number with K, M, G or T (powers of 1024)",
        }
    ),
]
Name = Annotated[str, AfterValidator(_check_name)]
Address = Annotated[str, AfterValidator(_check_address)]
IdentityText = Annotated[str, AfterValidator(_check_identity)]
TrafficSelectorText = Annotated[str, AfterValidator(_check_selector)]
IkeProposal = Annotated[str, AfterValidator(_check_proposal(ProtocolId.IKE))]
EspProposal = Annotated[str, AfterValidator(_check_proposal(ProtocolId.ESP))]
AhProposal = Annotated[str, AfterValidator(_check_proposal(ProtocolId.AH))]
Port = Annotated[int, Field(ge=1, le=65535)]
IfId = Annotated[int, Field(ge=1, le=0xFFFFFFFF)]


def _check_interface_name(name: str) -> str:
    if not 1 <= len(name) <= 15 or any(c in name for c in "/ :") or name in (".", ".."):
        raise ValueError(
            f"{name!r} is not a Linux interface name (1-15 characters, no / : or space)"
        )
    return name


def _check_prefix(text: str) -> str:
    try:
        ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a prefix: {exc}") from None
    return text


def _check_interface_address(text: str) -> str:
    try:
        ipaddress.ip_interface(text)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not ADDRESS/PREFIXLEN: {exc}") from None
    return text


def parse_mark(text: str | int) -> tuple[int, int]:
    """swanctl's `mark_in`/`mark_out`: VALUE[/MASK], each hex (0x..) or decimal; the mask
    defaults to 0xffffffff. `%unique` and friends are not supported (a clear error)."""
    raw = str(text).strip()
    if raw.startswith("%"):
        raise ValueError(
            f"{raw!r}: xfrmctl does not allocate marks (%unique, %unique-dir, %same); "
            "give VALUE[/MASK]"
        )
    value_text, slash, mask_text = raw.partition("/")
    try:
        value = int(value_text, 0)
        mask = int(mask_text, 0) if slash else 0xFFFFFFFF
    except ValueError:
        raise ValueError(f"{raw!r} is not VALUE[/MASK] (hex 0x.. or decimal numbers)") from None
    for what, number in (("value", value), ("mask", mask)):
        if not 0 <= number <= 0xFFFFFFFF:
            raise ValueError(f"{raw!r}: mark {what} {number:#x} does not fit 32 bits")
    if value & ~mask:
        raise ValueError(f"{raw!r}: mark value {value:#x} has bits outside mask {mask:#x}")
    return value, mask


def _check_mark(value: str | int) -> str:
    parse_mark(value)
    return str(value)


MarkText = Annotated[
    str,
    BeforeValidator(_check_mark),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer", "minimum": 0}, {"type": "string"}],
            "description": "VALUE[/MASK], hex (0x..) or decimal",
        }
    ),
]
InterfaceName = Annotated[str, AfterValidator(_check_interface_name)]
PrefixText = Annotated[str, AfterValidator(_check_prefix)]
InterfaceAddressText = Annotated[str, AfterValidator(_check_interface_address)]


def _check_http_uri(text: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{text!r} must be an http:// or https:// URL with a host")
    return text


class _Strict(BaseModel):
    # Attribute docstrings reach the editor schema through json_schema(), not pydantic's
    # use_attribute_docstrings: that parses every model's source at each import, which cost
    # the daemon a tenth of its start-up (half a second under the lab's emulation).
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT or [IPV6]:PORT with a literal address, as Prometheus exporters write it."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} must be ADDRESS:PORT, e.g. 127.0.0.1:9468 or [::1]:9468")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ipaddress.ip_address(host).version != 6:
            raise ValueError(f"{text!r}: only an IPv6 address goes in brackets")
    elif ":" in host:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, e.g. [::1]:9468")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r}: {host!r} is not an IP address") from None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: port {port!r} must be a number from 1 to 65535")
    return host, int(port)


def _check_listen(text: str) -> str:
    parse_listen(text)
    return text


class Metrics(_Strict):
    """The Prometheus endpoint (docs/metrics.md); off unless `settings.metrics` is present."""

    listen: Annotated[str, AfterValidator(_check_listen)]
    """ADDRESS:PORT to serve /metrics on: 127.0.0.1:9468, [::1]:9468."""

    def address(self) -> tuple[str, int]:
        return parse_listen(self.listen)


class Settings(_Strict):
    """Daemon-wide settings; only allowed in the main file."""

    socket: Path = DEFAULT_SOCKET
    """Control socket path (created 0600, its directory 0700)."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Log verbosity. Key material is never logged at any level."""
    include: str = "conf.d/*.yaml"
    """Glob of per-connection files, relative to the main file's directory."""
    port: Port = 500
    """UDP port for IKE (charon.port)."""
    port_nat_t: Port = 4500
    """UDP port for NAT-T and ESP-in-UDP (charon.port_nat_t)."""
    init_limit_half_open: Annotated[int, Field(ge=1)] = 1000
    """Half-open IKE SAs (responder, before IKE_AUTH) beyond which IKE_SA_INIT is dropped."""
    cookie_threshold: Annotated[int, Field(ge=0)] = 10
    """Half-open IKE SAs in all beyond which every initiator must return a cookie."""
    cookie_threshold_ip: Annotated[int, Field(ge=0)] = 3
    """Half-open IKE SAs from one IP address beyond which that address must return a cookie."""
    block_threshold: Annotated[int, Field(ge=1)] = 5
    """Half-open IKE SAs from one IP address beyond which its IKE_SA_INIT requests are dropped."""
    start_window: Annotated[int, Field(ge=0)] = 64
    """IKE SAs that `start_action: start` sets up at once (in IKE_SA_INIT or IKE_AUTH, for at
    most one retransmission timeout); the other connections to start wait their turn, in
    order. 0: all at once."""
    metrics: Metrics | None = None
    """Prometheus metrics endpoint; none (off) by default."""
    key_export: bool = False
    """Let root export the live SAs' keys for Wireshark (`xfrmctl keys`); off by default."""
    reconcile_interval: Annotated[float, Field(ge=0, le=3600)] = 10.0
    """Shortest seconds between checks that our SAs/policies are still in the kernel
    (stretched so they take at most 1% of the daemon's time); 0: only on notifications."""
    revocation_timeout: Annotated[float, Field(gt=0, le=60)] = 5.0
    """Seconds one CRL or OCSP fetch may take before it counts as failed."""
    restart_state: Path | None = None
    """File a restart stop hands the IKE SAs over in (keys: keep it on tmpfs); default
    restart-state.json beside the control socket (docs/operations.md)."""
    restart_state_max_age: Annotated[float, Field(gt=0, le=3600)] = 120.0
    """Seconds after which a restart state file is too old to adopt (clean start instead)."""


class LocalAuth(_Strict):
    """How we authenticate ourselves (swanctl connections.<conn>.local)."""

    id: IdentityText | None = None
    """Our identity; defaults to our IKE address."""
    auth: Literal["psk", "pubkey"] = "pubkey"
    """psk (needs psk_file) or pubkey (needs certs and key)."""
    certs: list[Path] = []
    """Our certificate first, then intermediates (PEM or DER; one file may hold the chain)."""
    key: Path | None = None
    """Private key file for pubkey; must not be readable by other users."""

    def identity(self) -> Identity | None:
        """Typed identity, or None for "use the IKE address"."""
        return parse_identity(self.id) if self.id else None


class RemoteAuth(_Strict):
    """How the peer must authenticate (swanctl connections.<conn>.remote)."""

    id: IdentityText = ANY
    """Identity the peer must prove; %any accepts any authenticated identity."""
    auth: Literal["psk", "pubkey"] = "pubkey"
    """psk (needs psk_file) or pubkey (needs cacerts or certs)."""
    cacerts: list[Path] = []
    """CA certificates the peer's certificate must chain to: self-signed ones are the trust
    anchors, others intermediates (anchors themselves when none is self-signed)."""
    certs: list[Path] = []
    """Pinned peer certificates accepted as they are."""
    revocation: Literal["strict", "ifuri", "relaxed"] = "relaxed"
    """Certificate status policy (swanctl remote.revocation): relaxed refuses only a certificate
    known revoked; ifuri also one with a CRL/OCSP URI that gave no status; strict any without
    a good status."""
    crls: list[Path] = []
    """CRL files (PEM or DER), used before anything is fetched."""
    ocsp_uris: list[Annotated[str, AfterValidator(_check_http_uri)]] = []
    """OCSP responders asked before the certificate's own AIA OCSP URL (http:// or https://)."""

    def identity(self) -> Identity | None:
        """Typed identity; None means %any."""
        return parse_identity(self.id)


class Child(_Strict):
    """One Child SA (swanctl connections.<conn>.children.<child>)."""

    mode: Literal["tunnel", "transport"] = "tunnel"
    """IPsec mode."""
    protocol: Literal["esp", "ah"] = "esp"
    """ESP (encrypts) or AH (integrity only)."""
    local_ts: list[TrafficSelectorText] = ["dynamic"]
    """Local traffic selectors: PREFIX or PREFIX[PROTO/PORT]; dynamic = our address."""
    remote_ts: list[TrafficSelectorText] = ["dynamic"]
    """Remote traffic selectors; dynamic = the peer's address."""
    esp_proposals: list[EspProposal] | None = None
    """ESP proposals in strongSwan syntax (default aes256gcm16)."""
    ah_proposals: list[AhProposal] | None = None
    """AH proposals in strongSwan syntax (default sha256)."""
    start_action: Literal["none", "trap", "start"] = "none"
    """What to do when the config is loaded: nothing, install trap policies, or initiate."""
    close_action: Literal["none", "trap", "start"] = "none"
    """What to do when the peer closes the Child SA."""
    dpd_action: Literal["clear", "trap", "restart"] = "clear"
    """What to do when DPD declares the peer dead."""
    rekey_time: Duration = 3600
    """Rekey after this time (default 1h)."""
    life_time: Duration | None = None
    """Hard expiry (default rekey_time + 10%)."""
    rand_time: Duration | None = None
    """Random jitter subtracted from rekey_time (default life_time - rekey_time)."""
    rekey_bytes: Size = 0
    """Rekey after this many bytes (0: never)."""
    life_bytes: Size | None = None
    """Hard byte limit (default rekey_bytes + 10%)."""
    rand_bytes: Size | None = None
    """Random byte jitter (default life_bytes - rekey_bytes)."""
    rekey_packets: Size = 0
    """Rekey after this many packets (0: never)."""
    life_packets: Size | None = None
    """Hard packet limit (default rekey_packets + 10%)."""
    rand_packets: Size | None = None
    """Random packet jitter (default life_packets - rekey_packets)."""
    replay_window: Annotated[int, Field(ge=0, le=4096)] = 32
    """Anti-replay window in packets (0 disables replay protection)."""
    if_id_in: IfId | None = None
    """XFRM interface ID for inbound SAs and policies."""
    if_id_out: IfId | None = None
    """XFRM interface ID for outbound SAs and policies."""
    hw_offload: Annotated[
        Literal["no", "yes", "auto", "packet"],
        BeforeValidator(_bool_alias("yes", "no")),
        BeforeValidator(_crypto_is_yes),
    ] = "no"
    """NIC offload (swanctl): no; yes (crypto offload, fail if the device cannot); auto
    (crypto offload where the device can, software otherwise); packet (full packet offload)."""
    ipcomp: bool = False
    """Offer and accept IPComp (RFC 3173, DEFLATE) with this Child SA (swanctl `ipcomp`)."""
    mark_in: MarkText | None = None
    """Mark (VALUE[/MASK]) on the inbound and forward policies, as swanctl's `mark_in`."""
    mark_out: MarkText | None = None
    """Mark (VALUE[/MASK]) on the outbound SA and policy, as swanctl's `mark_out`."""

    @model_validator(mode="after")
    def _fill_defaults(self) -> Child:
        """Derive hard limits and jitter the way strongSwan does when they are not given."""
        values = self.__dict__
        for kind in ("time", "bytes", "packets"):
            rekey = values[f"rekey_{kind}"]
            if values[f"life_{kind}"] is None:
                values[f"life_{kind}"] = rekey + rekey // 10
            if values[f"rand_{kind}"] is None:
                values[f"rand_{kind}"] = max(values[f"life_{kind}"] - rekey, 0)
        if self.esp_proposals is None and self.protocol == "esp":
            values["esp_proposals"] = list(DEFAULT_ESP_PROPOSALS)
        if self.ah_proposals is None and self.protocol == "ah":
            values["ah_proposals"] = list(DEFAULT_AH_PROPOSALS)
        return self

    def proposal_texts(self) -> list[str]:
        """The proposals for the configured protocol."""
        texts = self.ah_proposals if self.protocol == "ah" else self.esp_proposals
        return list(texts or [])

    def proposals(self) -> list[Proposal]:
        """Parsed proposals; needs xfrmctl.ike.proposals."""
        from xfrmctl.ike.proposals import parse_proposals

        protocol = ProtocolId.AH if self.protocol == "ah" else ProtocolId.ESP
        return parse_proposals(self.proposal_texts(), protocol)

    def local_selectors(self) -> list[Selector]:
        """Parsed local_ts; `dynamic` entries have network None until `resolve()`."""
        return [parse_selector(t) for t in self.local_ts]

    def remote_selectors(self) -> list[Selector]:
        """Parsed remote_ts; `dynamic` entries have network None until `resolve()`."""
        return [parse_selector(t) for t in self.remote_ts]


class XfrmInterfaceConfig(_Strict):
    """An XFRM interface for route-based IPsec (connections.<conn>.interface)."""

    name: InterfaceName
    """Interface name; created if missing and then removed on down and stop (an interface
    that already exists is used, never removed)."""
    if_id: IfId
    """XFRM interface ID; every SA and policy of the connection's children gets it
    (if_id_in and if_id_out), so only traffic routed into the interface is encrypted."""
    mtu: Annotated[int, Field(ge=68, le=65535)] | None = None
    """MTU of an interface xfrmctl creates (default: the kernel's)."""
    addresses: list[InterfaceAddressText] = []
    """ADDRESS/PREFIXLEN to put on an interface xfrmctl creates."""
    routes: list[PrefixText] = []
    """Prefixes routed into the interface while the connection is up."""


class Connection(_Strict):
    """One IKE connection (swanctl connections.<conn>)."""

    local_addrs: list[Address] = []
    """Our addresses; empty means any."""
    remote_addrs: list[Address] = []
    """Peer addresses or prefixes; empty means any (responder only)."""
    remote_port: Port = 500
    """The peer's IKE port."""
    proposals: list[IkeProposal] = Field(default_factory=lambda: list(DEFAULT_IKE_PROPOSALS))
    """IKE proposals in strongSwan syntax, e.g. aes256gcm16-prfsha384-x25519."""
    local: LocalAuth = LocalAuth()
    """Our identity and authentication."""
    remote: RemoteAuth = RemoteAuth()
    """The peer's identity and authentication."""
    psk_file: Path | None = None
    """File holding the pre-shared key (not readable by other users; 0x.. hex, 0s.. base64)."""
    psk: str | None = Field(default=None, repr=False, json_schema_extra={"writeOnly": True})
    """Inline pre-shared key; allowed with a warning, prefer psk_file."""
    rekey_time: Duration = 14400
    """IKE SA rekey time (default 4h)."""
    reauth_time: Duration = 0
    """IKE SA reauthentication time, make-before-break (0: never)."""
    over_time: Duration | None = None
    """Hard IKE SA lifetime beyond rekey_time/reauth_time, whichever comes first
    (default 10% of the longer of the two)."""
    rand_time: Duration | None = None
    """Random jitter subtracted from rekey_time and reauth_time (default over_time)."""
    dpd_delay: Duration = 0
    """Check liveness after this much silence (0: off)."""
    dpd_timeout: Duration = 150
    """Declare the peer dead after this long without an answer."""
    encap: Annotated[Literal["auto", "force"], BeforeValidator(_bool_alias("force", "auto"))] = (
        "auto"
    )
    """UDP-encapsulate ESP only behind NAT (auto) or always (force)."""
    keep_alive: Duration = 20
    """NAT-T keepalive interval when we are behind a NAT (0: off)."""
    fragmentation: bool = True
    """Use IKEv2 fragmentation (RFC 7383) when the peer supports it."""
    interface: XfrmInterfaceConfig | None = None
    """Route-based IPsec through an XFRM interface (see docs/configuration.md)."""
    children: dict[Name, Child] = {}
    """Child SAs by name."""

    @model_validator(mode="after")
    def _interface_ids(self) -> Connection:
        """Children of a connection with an interface carry its if_id in both directions."""
        if self.interface is None:
            return self
        want = self.interface.if_id
        for name, child in self.children.items():
            for key in ("if_id_in", "if_id_out"):
                given = getattr(child, key)
                if given is not None and given != want:
                    raise ValueError(
                        f"children.{name}.{key} is {given}, but interface.if_id is {want}: "
                        "leave it out, the interface sets it"
                    )
                child.__dict__[key] = want
        return self

    @model_validator(mode="after")
    def _fill_defaults(self) -> Connection:
        values = self.__dict__
        if self.over_time is None:
            values["over_time"] = max(self.rekey_time, self.reauth_time) // 10
        if self.rand_time is None:
            values["rand_time"] = values["over_time"]
        return self

    def local_identity(self) -> Identity | None:
        """Our identity; None when it defaults to the IKE address in use."""
        return self.local.identity()

    def remote_identity(self) -> Identity | None:
        """The required peer identity; None for %any."""
        return self.remote.identity()

    def ike_proposals(self) -> list[Proposal]:
        """Parsed IKE proposals; needs xfrmctl.ike.proposals."""
        from xfrmctl.ike.proposals import parse_proposals

        return parse_proposals(list(self.proposals), ProtocolId.IKE)

    @property
    def uses_psk(self) -> bool:
        return "psk" in (self.local.auth, self.remote.auth)


def _none_to_empty(value: object) -> object:
    return {} if value is None else value


class XfrmctlConfig(_Strict):
    """xfrmctl configuration: daemon settings and IKE connections."""

    settings: Settings = Settings()
    """Daemon-wide settings."""
    connections: Annotated[dict[Name, Connection], BeforeValidator(_none_to_empty)] = {}
    """Connections by name (also from the include files)."""


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) for editors and `xfrmctl config schema`."""
    from xfrmctl.config.docstrings import describe_fields  # start-up cost: ast, inspect

    schema = XfrmctlConfig.model_json_schema()
    describe_fields(schema, _models(_Strict))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://xfrmctl.invalid/schema/xfrmctl.yaml.json",
        **schema,
    }


def _models(base: type[BaseModel]) -> list[type[BaseModel]]:
    found = []
    for sub in base.__subclasses__():
        found += [sub, *_models(sub)]
    return found
