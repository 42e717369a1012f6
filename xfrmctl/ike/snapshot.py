"""Carry established IKE SAs across a daemon restart: export to plain JSON-able data, rebuild.

Contract: `export(ep, now, wall)` returns a versioned dict of lists, strings and numbers holding
each *quiescent* IKE SA (ESTABLISHED, no request in flight or queued, no half-received
fragments, not linked to a rekey or reauthentication, every Child SA INSTALLED) with just what
resuming it needs: SPIs, the agreed proposal and SK_* keys (RFC 7296 §2.14), message IDs both
ways and the last response (§2.3: a retransmitted request must get it again), addresses, NAT
state (§2.23), the peer's ID, and per Child SA its SPIs, proposal, selectors, reqid, mode and
lifetimes. Nonces, IKE_SA_INIT messages and Child SA keys are left out: the first two serve only
IKE_AUTH, the kernel keeps the last. Deadlines go out as wall-clock epoch seconds, since the
engine clock (`now`) of the next process starts elsewhere.

An IKE SA that is not quiescent is dropped from the snapshot, with the reason in `skipped`:
an exchange in flight cannot be resumed safely (its KE secret and nonces are in memory only),
so the next daemon starts that connection cleanly. `restore(ep, data, now, wall)` rebuilds the
SAs into a fresh endpoint; one whose connection is gone or changed (`fingerprint`) is refused.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from xfrmctl.ike.crypto.keys import IkeKeys
from xfrmctl.ike.engine import IkeEndpoint
from xfrmctl.ike.errors import LocalProtocolError
from xfrmctl.ike.exchanges import IkeState
from xfrmctl.ike.iana import ProtocolId, TransformType
from xfrmctl.ike.negotiation import ike_algorithms
from xfrmctl.ike.payloads import TrafficSelector
from xfrmctl.ike.proposals import format_proposal
from xfrmctl.ike.reqids import selectors_of
from xfrmctl.ike.sa import Address, ChildSa, ChildState, IkeCrypto, IkeSa
from xfrmctl.ike.spec import ConnectionSpec, Mode
from xfrmctl.ike.transforms import Proposal, Transform

VERSION = 1
_KEY_NAMES = ("sk_d", "sk_ai", "sk_ar", "sk_ei", "sk_er", "sk_pi", "sk_pr")

Json = dict[str, Any]


class SnapshotError(ValueError):
    """A snapshot that cannot be used: wrong version or malformed data."""


@dataclass
class Restored:
    """What `restore` made of a snapshot: resumed IKE SAs and why others were refused."""

    sas: list[IkeSa] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


def fingerprint(spec: ConnectionSpec) -> str:
    """What must not change for an IKE SA to be resumed: proposals, IDs, children's policy."""
    parts = [
        spec.name,
        str(spec.local_id),
        str(spec.remote_id),
        *(format_proposal(p) for p in spec.ike_proposals),
    ]
    for c in spec.children:
        parts += [c.name, c.mode.value, c.protocol.name, repr(c.local_ts), repr(c.remote_ts)]
        parts += [format_proposal(p) for p in c.proposals]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def why_not_quiescent(sa: IkeSa) -> str | None:
    """None if `sa` can be carried over, else why not."""
    if sa.spec is None or sa.crypto is None or sa.proposal is None:
        return "not authenticated yet"
    if sa.state != IkeState.ESTABLISHED:
        return f"state {sa.state.value}"
    if sa.outstanding is not None or sa.tasks:
        return "exchange in flight"
    if sa.reassembly:
        return "fragments of a message pending"
    if any(x is not None for x in (sa.replaced_by, sa.reauth_of, sa.reauth_by, sa.expire_at)):
        return "rekey or reauthentication under way"
    if any(c.state != ChildState.INSTALLED for c in sa.children):
        return "Child SA rekey or delete under way"
    return None


def export(ep: IkeEndpoint, now: float, wall: float) -> tuple[Json, list[str]]:
    """The snapshot and, per IKE SA left out, a line saying which and why."""
    sas: list[Json] = []
    skipped: list[str] = []
    for sa in ep.sas.values():
        why = why_not_quiescent(sa)
        if why is not None:
            skipped.append(f"IKE SA #{sa.id} ({sa.conn_name or '?'}): {why}")
            continue
        sas.append(_export_sa(sa, _Clock(now, wall)))
    reqids = [
        [
            conn,
            child,
            [_ts(t) for t in sorted(selectors_of(lts), key=_ts)],
            [_ts(t) for t in sorted(selectors_of(rts), key=_ts)],
            r,
        ]
        for (conn, child, lts, rts), r in ep.reqids().items()
    ]
    return {"version": VERSION, "written_at": wall, "reqids": reqids, "ike_sas": sas}, skipped


def restore(ep: IkeEndpoint, data: Json, now: float, wall: float) -> Restored:
    """Rebuild the snapshot's IKE SAs into `ep`; raises SnapshotError if it is unusable."""
    if not isinstance(data, dict) or data.get("version") != VERSION:
        found = data.get("version") if isinstance(data, dict) else type(data).__name__
        raise SnapshotError(f"snapshot version {found!r}, expected {VERSION}")
    out = Restored()
    clock = _Clock(now, wall)
    try:
        ep.adopt_reqids(
            {
                (c, ch, frozenset(map(_unts, lts)), frozenset(map(_unts, rts))): int(r)
                for c, ch, lts, rts, r in data["reqids"]
            }
        )
        for raw in data["ike_sas"]:
            spec = ep.specs.get(raw["conn"])
            if spec is None:
                out.refused.append(f"{raw['conn']}: connection no longer configured")
            elif fingerprint(spec) != raw["fingerprint"]:
                out.refused.append(
                    f"{raw['conn']}: connection changed (proposals, IDs or children)"
                )
            else:
                out.sas.append(_restore_sa(ep, spec, raw, clock))
    except (KeyError, TypeError, ValueError, LocalProtocolError) as exc:
        raise SnapshotError(f"malformed snapshot: {type(exc).__name__}: {exc}") from None
    return out


@dataclass(frozen=True)
class _Clock:
    """Converts engine-clock deadlines to wall-clock and back."""

    now: float
    wall: float

    def out(self, t: float | None) -> float | None:
        return None if t is None else t - self.now + self.wall

    def back(self, t: float | None) -> float | None:
        return None if t is None else float(t) - self.wall + self.now


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _unb64(s: str) -> bytes:
    return base64.b64decode(s, validate=True)


def _addr(a: Address) -> list[Any]:
    return [str(a[0]), a[1]]


def _unaddr(a: list[Any]) -> Address:
    return ipaddress.ip_address(a[0]), int(a[1])


def _proposal(p: Proposal) -> Json:
    return {
        "protocol": int(p.protocol),
        "num": p.num,
        "spi": _b64(p.spi),
        "transforms": [[int(t.type), t.id, t.key_length] for t in p.transforms],
    }


def _transform(t: list[Any]) -> Transform:
    return Transform(TransformType(t[0]), int(t[1]), None if t[2] is None else int(t[2]))


def _unproposal(d: Json) -> Proposal:
    transforms = tuple(_transform(t) for t in d["transforms"])
    return Proposal(ProtocolId(d["protocol"]), transforms, int(d["num"]), _unb64(d["spi"]))


def _ts(t: TrafficSelector) -> list[Any]:
    return [str(t.start), str(t.end), t.ip_proto, t.start_port, t.end_port]


def _unts(t: list[Any]) -> TrafficSelector:
    start, end = ipaddress.ip_address(t[0]), ipaddress.ip_address(t[1])
    return TrafficSelector(start, end, int(t[2]), int(t[3]), int(t[4]))


def _export_sa(sa: IkeSa, clock: _Clock) -> Json:
    assert sa.spec is not None and sa.crypto is not None and sa.proposal is not None
    keys = sa.crypto.keys
    return {
        "conn": sa.spec.name,
        "fingerprint": fingerprint(sa.spec),
        "id": sa.id,
        "initiator": sa.initiator,
        "spi_i": sa.spi_i.hex(),
        "spi_r": sa.spi_r.hex(),
        "local": _addr(sa.local),
        "remote": _addr(sa.remote),
        "proposal": _proposal(sa.proposal),
        "keys": {name: _b64(getattr(keys, name)) for name in _KEY_NAMES},
        "peer_id": sa.peer_id,
        "my_mid": sa.my_mid,
        "peer_mid": sa.peer_mid,
        "last_response": (
            None
            if sa.last_response is None
            else [sa.last_response[0], [_b64(p) for p in sa.last_response[1]]]
        ),
        "nat_local": sa.nat_local,
        "nat_remote": sa.nat_remote,
        "peer_fragmentation": sa.peer_fragmentation,
        "peer_hash_algorithms": sa.peer_hash_algorithms,
        "times": {
            name: clock.out(getattr(sa, name))
            for name in (
                "rekey_at",
                "reauth_at",
                "hard_at",
                "dpd_at",
                "last_inbound",
                "keepalive_sent",
                "established_at",
            )
        },
        "children": [_export_child(c, clock) for c in sa.children],
    }


def _export_child(c: ChildSa, clock: _Clock) -> Json:
    return {
        "name": c.spec.name,
        "unique_id": c.unique_id,
        "reqid": c.reqid,
        "protocol": int(c.protocol),
        "spi_in": c.spi_in,
        "spi_out": c.spi_out,
        "proposal": _proposal(c.proposal),
        "encr": None if c.encr is None else [int(c.encr.type), c.encr.id, c.encr.key_length],
        "integ": None if c.integ is None else [int(c.integ.type), c.integ.id, c.integ.key_length],
        "esn": c.esn,
        "mode": c.mode.value,
        "local_ts": [_ts(t) for t in c.local_ts],
        "remote_ts": [_ts(t) for t in c.remote_ts],
        "rekey_at": clock.out(c.rekey_at),
        "expire_at": clock.out(c.expire_at),
        "tfc_padding": c.tfc_padding,
        "cpi_in": c.cpi_in,
        "cpi_out": c.cpi_out,
    }


def _restore_sa(ep: IkeEndpoint, spec: ConnectionSpec, d: Json, clock: _Clock) -> IkeSa:
    local, remote = _unaddr(d["local"]), _unaddr(d["remote"])
    sa = IkeSa(
        ep,
        spec,
        bool(d["initiator"]),
        bytes.fromhex(d["spi_i"]),
        bytes.fromhex(d["spi_r"]),
        local,
        remote,
        clock.now,
        resumed=True,
    )
    sa.proposal = _unproposal(d["proposal"])
    prf, integ, encr = ike_algorithms(sa.proposal)
    keys = IkeKeys(**{name: _unb64(d["keys"][name]) for name in _KEY_NAMES})
    sa.crypto = IkeCrypto(prf, integ, encr, keys, sa.initiator)
    sa.peer_id = str(d["peer_id"])
    sa.my_mid, sa.peer_mid = int(d["my_mid"]), int(d["peer_mid"])
    last = d["last_response"]
    sa.last_response = None if last is None else (int(last[0]), [_unb64(p) for p in last[1]])
    sa.nat_local, sa.nat_remote = bool(d["nat_local"]), bool(d["nat_remote"])
    sa.peer_fragmentation = bool(d["peer_fragmentation"])
    sa.peer_hash_algorithms = d["peer_hash_algorithms"]
    times = d["times"]
    sa.rekey_at = clock.back(times["rekey_at"])
    sa.reauth_at = clock.back(times["reauth_at"])
    sa.hard_at = clock.back(times["hard_at"])
    sa.dpd_at = clock.back(times["dpd_at"])
    sa.last_inbound = clock.back(times["last_inbound"]) or clock.now
    sa.keepalive_sent = clock.back(times["keepalive_sent"]) or clock.now
    sa.established_at = clock.back(times["established_at"])
    sa.children = [_restore_child(spec, c, clock) for c in d["children"]]
    sa.adopt(int(d["id"]), [c.unique_id for c in sa.children])
    return sa


def _restore_child(spec: ConnectionSpec, d: Json, clock: _Clock) -> ChildSa:
    expire_at = clock.back(d["expire_at"])
    if expire_at is None:
        raise ValueError("Child SA without expiry")
    return ChildSa(
        spec=spec.child(d["name"]),
        unique_id=int(d["unique_id"]),
        reqid=int(d["reqid"]),
        protocol=ProtocolId(d["protocol"]),
        spi_in=int(d["spi_in"]),
        spi_out=int(d["spi_out"]),
        proposal=_unproposal(d["proposal"]),
        encr=None if d["encr"] is None else _transform(d["encr"]),
        integ=None if d["integ"] is None else _transform(d["integ"]),
        esn=bool(d["esn"]),
        mode=Mode(d["mode"]),
        local_ts=tuple(_unts(t) for t in d["local_ts"]),
        remote_ts=tuple(_unts(t) for t in d["remote_ts"]),
        rekey_at=clock.back(d["rekey_at"]),
        expire_at=expire_at,
        tfc_padding=bool(d["tfc_padding"]),
        cpi_in=int(d["cpi_in"]),
        cpi_out=int(d["cpi_out"]),
    )
