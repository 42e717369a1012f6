"""Status JSON: the stable shape `xfrmctl status --json` prints and Ansible reads.

Fields are only ever added, never renamed or removed, within one `schema_version`. The daemon
fills these models; the CLI reads the JSON without importing them (to start fast).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

from xfrmctl.ike.events import ChildSaReady
from xfrmctl.ike.spec import Offload

SCHEMA_VERSION = 1


def _spi_hex(value: Any) -> Any:
    """SPIs are shown as 8 hex digits, as `ip xfrm state` and swanctl do."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return f"{value:08x}"
    if isinstance(value, bytes):
        return value.hex()
    return value


SpiHex = Annotated[str, BeforeValidator(_spi_hex)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InterfaceStatus(_Model):
    """The XFRM interface a route-based Child SA's traffic is routed into."""

    name: str
    """Interface name (connections.<conn>.interface.name)."""
    if_id: int
    """XFRM interface ID on the pair's SAs and policies."""


class IpcompStatus(_Model):
    """IPComp (RFC 3173) negotiated for a Child SA."""

    transform: str = "deflate"
    """Compression algorithm."""
    cpi_in: str
    """Our CPI (the peer compresses with it), 4 hex digits."""
    cpi_out: str
    """The peer's CPI (we compress with it), 4 hex digits."""


class ChildSaStatus(_Model):
    """One installed (or negotiating) Child SA pair."""

    name: str
    """Child name from the configuration."""
    unique_id: int | None = None
    """Daemon-wide number of this Child SA, shown as name{id}."""
    state: str
    """CREATED, INSTALLING, INSTALLED, REKEYING, REKEYED, DELETING, DELETED or FAILED."""
    mode: str
    """tunnel or transport."""
    protocol: str
    """esp or ah."""
    spi_in: SpiHex
    """Inbound SPI, 8 hex digits."""
    spi_out: SpiHex
    """Outbound SPI, 8 hex digits."""
    local_ts: list[str]
    """Negotiated local traffic selectors, swanctl notation."""
    remote_ts: list[str]
    """Negotiated remote traffic selectors, swanctl notation."""
    proposal: str
    """Negotiated algorithms, strongSwan notation (e.g. aes256gcm16)."""
    encap: bool = False
    """True when ESP is UDP-encapsulated (NAT-T)."""
    bytes_in: int = 0
    bytes_out: int = 0
    packets_in: int = 0
    packets_out: int = 0
    installed_at: datetime | None = None
    """When the SA pair was installed (UTC, RFC 3339)."""
    rekey_in: int | None = None
    """Seconds until the scheduled rekey; null when none is scheduled."""
    expires_in: int | None = None
    """Seconds until the hard lifetime ends; null when it has none."""
    offload: str = ""
    """The network device doing this pair's crypto (hw_offload); empty in software."""
    offload_mode: str = "none"
    """none (software), crypto (the device encrypts) or packet (full packet offload)."""
    interface: InterfaceStatus | None = None
    """The XFRM interface of a route-based connection; null otherwise."""
    ipcomp: IpcompStatus | None = None
    """IPComp CPIs when both sides agreed to compress; null otherwise."""
    mark_in: str = ""
    """mark_in as VALUE/MASK in hex (on the in and fwd policies); empty when unset."""
    mark_out: str = ""
    """mark_out as VALUE/MASK in hex (on the outbound SA and policy); empty when unset."""


class IkeSaStatus(_Model):
    """One IKE SA and its Child SAs."""

    name: str
    """Connection name."""
    unique_id: int | None = None
    """Daemon-wide number of this IKE SA, shown as name[id]."""
    state: str
    """CONNECTING, ESTABLISHED, REKEYING, REKEYED, DELETING, DELETED or FAILED."""
    initiator: bool = True
    local_addr: str
    local_port: int = 500
    remote_addr: str
    remote_port: int = 500
    local_id: str
    remote_id: str
    proposal: str
    """Negotiated IKE algorithms, e.g. aes256gcm16-prfsha384-x25519."""
    nat_local: bool = False
    """We are behind a NAT."""
    nat_remote: bool = False
    """The peer is behind a NAT."""
    established_at: datetime | None = None
    """When the IKE SA was established (UTC, RFC 3339); null while connecting."""
    rekey_in: int | None = None
    """Seconds until the IKE SA rekey; null when none is scheduled."""
    reauth_in: int | None = None
    """Seconds until the IKE SA reauthentication; null when none is scheduled."""
    adopted: bool = False
    """Taken over from the previous daemon at a graceful restart, not negotiated by this one."""
    children: list[ChildSaStatus] = []


class ChildConfigStatus(_Model):
    """A configured child, whether or not an SA exists for it."""

    name: str
    mode: str
    protocol: str
    start_action: str
    local_ts: list[str]
    remote_ts: list[str]


class ConnectionStatus(_Model):
    """A configured connection; `active` says whether an IKE SA exists for it."""

    name: str
    local_addrs: list[str] = []
    remote_addrs: list[str] = []
    active: bool = False
    children: list[ChildConfigStatus] = []


class DriftStatus(_Model):
    """Kernel drift by kind: sa_missing, policy_missing, policy_altered, policy_shadowed."""

    found: dict[str, int] = {}
    """Changes to our SAs/policies made by others, by kind (kinds with none left out)."""
    repaired: dict[str, int] = {}
    """Of those, repaired: policies reinstalled, Child SAs rekeyed (shadowing is never)."""


class StatusReport(_Model):
    """Reply to `status`: SAs that exist plus every configured connection."""

    schema_version: int = SCHEMA_VERSION
    ike_sas: list[IkeSaStatus] = []
    connections: list[ConnectionStatus] = []
    drift_found: int = 0
    """Since the daemon started: our SAs/policies others removed or altered (daemon-wide)."""
    drift_repaired: int = 0
    """Since the daemon started: drift the daemon repaired (daemon-wide)."""
    drift: DriftStatus = DriftStatus()
    """drift_found and drift_repaired by kind."""


class UpResult(_Model):
    """Reply to `up`: the IKE SA as established, with the Child SAs it now carries."""

    ike_sa: IkeSaStatus


class DownResult(_Model):
    """Reply to `down`: what was deleted."""

    deleted_ike_sas: int = 0
    deleted_child_sas: int = 0


class ReloadResult(_Model):
    """Reply to `reload`: connection names by what happened to them."""

    added: list[str] = []
    removed: list[str] = []
    changed: list[str] = []
    unchanged: list[str] = []


def child_kernel_fields(ready: ChildSaReady | None, device: str) -> dict[str, Any]:
    """A Child SA's kernel-side fields from what the engine agreed (`ready`, None while not
    installed) and the offload device the kernel glue used ("" in software)."""
    fields: dict[str, Any] = {"offload": device}
    if ready is None:
        return fields
    opts = ready.kernel
    if device:
        fields["offload_mode"] = "packet" if opts.hw_offload == Offload.PACKET else "crypto"
    if opts.interface is not None:
        fields["interface"] = InterfaceStatus(name=opts.interface.name, if_id=opts.interface.if_id)
    if ready.cpi_in and ready.cpi_out:
        fields["ipcomp"] = IpcompStatus(
            cpi_in=f"{ready.cpi_in:04x}", cpi_out=f"{ready.cpi_out:04x}"
        )
    for key, mark in (("mark_in", opts.mark_in), ("mark_out", opts.mark_out)):
        if mark is not None:
            fields[key] = f"{mark.value:#x}/{mark.mask:#x}"
    return fields
