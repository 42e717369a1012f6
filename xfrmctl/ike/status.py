"""Read-only snapshots of IKE and Child SAs for `xfrmctl status` (no key material)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from xfrmctl.ike.events import Address
from xfrmctl.ike.proposals import format_proposal

if TYPE_CHECKING:
    from xfrmctl.ike.sa import ChildSa, IkeSa


@dataclass(frozen=True)
class ChildSaStatus:
    conn: str
    name: str
    unique_id: int
    state: str
    mode: str
    protocol: str
    spi_in: int
    spi_out: int
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]
    proposal: str
    encap: bool


@dataclass(frozen=True)
class IkeSaStatus:
    ike_sa_id: int
    conn: str
    state: str
    initiator: bool
    local: Address
    remote: Address
    spi_i: str
    spi_r: str
    local_id: str
    remote_id: str
    proposal: str
    nat_local: bool
    nat_remote: bool
    children: tuple[ChildSaStatus, ...]
    # Engine-clock times (the host's `now`) of the next rekey, reauth and hard expiry.
    rekey_at: float | None = None
    reauth_at: float | None = None
    hard_at: float | None = None
    established_at: float | None = None
    adopted: bool = False  # resumed from a previous daemon's snapshot


@dataclass(frozen=True, slots=True)
class IkeSaBrief:
    """What a metrics scrape needs of an IKE SA: no formatted proposal or selectors, which
    at 10,000 SAs took seconds of an emulated guest per scrape (issue 15)."""

    conn: str
    state: str
    rekey_at: float | None


def ike_brief(sa: IkeSa) -> IkeSaBrief:
    return IkeSaBrief(sa.conn_name, sa.state.value, sa.rekey_at)


def child_status(sa: IkeSa, c: ChildSa) -> ChildSaStatus:
    return ChildSaStatus(
        sa.conn_name,
        c.spec.name,
        c.unique_id,
        c.state.value,
        c.mode.value,
        c.protocol.name,
        c.spi_in,
        c.spi_out,
        tuple(str(t) for t in c.local_ts),
        tuple(str(t) for t in c.remote_ts),
        format_proposal(c.proposal),
        sa.nat,
    )


def ike_status(sa: IkeSa) -> IkeSaStatus:
    return IkeSaStatus(
        sa.id,
        sa.conn_name,
        sa.state.value,
        sa.initiator,
        sa.local,
        sa.remote,
        sa.spi_i.hex(),
        sa.spi_r.hex(),
        str(sa.spec.local_id) if sa.spec else "",
        sa.peer_id,
        format_proposal(sa.proposal) if sa.proposal else "",
        sa.nat_local,
        sa.nat_remote,
        tuple(child_status(sa, c) for c in sa.children),
        sa.rekey_at,
        sa.reauth_at,
        sa.hard_at,
        sa.established_at,
        sa.adopted,
    )
