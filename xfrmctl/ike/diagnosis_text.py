"""A failure diagnosis as values, JSON and text: the side-by-side table `xfrmctl explain` shows.

Contract: `Diagnosis.to_json()` is the `diagnosis` object of the control protocol's `explain`
reply (docs/control-protocol.md), and its `text` lines are what the CLI prints, so the CLI
needs no engine code. Rows marked `mismatch` get a `!` in the margin.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from xfrmctl.ike.events import Offer
from xfrmctl.ike.payloads import TrafficSelector

MARK = "!"
COLUMN = 34  # width of "ours"; longer values push "theirs" right rather than wrap


@dataclass(frozen=True)
class Row:
    """One fact on both sides; multi-line values are one item per line."""

    label: str
    ours: str
    theirs: str
    mismatch: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "field": self.label,
            "ours": self.ours,
            "theirs": self.theirs,
            "mismatch": self.mismatch,
        }


@dataclass(frozen=True)
class Diagnosis:
    conn: str
    child: str | None
    code: str  # the daemon's error code: a notify name or AUTHENTICATION_FAILED
    reason: str  # the engine's words
    role: str  # "initiator", "responder" or "" (unknown)
    summary: str
    rows: tuple[Row, ...]
    hidden: tuple[str, ...]  # what the protocol did not show us
    suggestions: tuple[str, ...]

    def lines(self) -> list[str]:
        what = f"child {self.child}" if self.child else "IKE SA"
        role = f", we were the {self.role}" if self.role else ""
        out = [f"{self.conn}: {what} failed: {self.code}{role}", f"  {self.summary}"]
        if self.rows:
            out.append("")
            out += _table(self.rows)
        if self.hidden:
            out.append("")
            out += [f"  note: {h}" for h in self.hidden]
        if self.suggestions:
            out.append("")
            out.append("  suggested change:")
            out += [f"    - {s}" for s in self.suggestions]
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "connection": self.conn,
            "child": self.child,
            "code": self.code,
            "reason": self.reason,
            "role": self.role,
            "summary": self.summary,
            "rows": [r.to_json() for r in self.rows],
            "hidden": list(self.hidden),
            "suggestions": list(self.suggestions),
            "text": self.lines(),
        }


def _table(rows: Sequence[Row]) -> list[str]:
    label_w = max(len(r.label) for r in rows)
    ours_w = min(COLUMN, max(len(line) for r in rows for line in r.ours.split("\n")))
    ours_w = max(ours_w, len("our side"))
    out = [f"    {'':<{label_w}}  {'our side':<{ours_w}}  peer side"]
    for r in rows:
        left, right = r.ours.split("\n"), r.theirs.split("\n")
        for i in range(max(len(left), len(right))):
            mark = MARK if r.mismatch and i == 0 else " "
            label = r.label if i == 0 else ""
            a = left[i] if i < len(left) else ""
            b = right[i] if i < len(right) else ""
            out.append(f"  {mark} {label:<{label_w}}  {a:<{ours_w}}  {b}".rstrip())
    return out


def ts_text(selectors: Sequence[TrafficSelector]) -> str:
    return ", ".join(str(t) for t in selectors)


def no_peer_view(hidden: bool) -> str:
    return "(not revealed by the peer)" if hidden else ""


def _nat_word(nat: bool | None) -> str:
    return "" if nat is None else ("behind NAT" if nat else "no NAT")


def nat_row(ours: Offer, theirs: Offer) -> Row:
    return Row("NAT", _nat_word(ours.nat), _nat_word(theirs.nat), False)


def differs(wanted: str, seen: str) -> bool:
    """`seen` is none of the `wanted` (a ", "-joined list; "%any" accepts all)."""
    accepted = wanted.split(", ")
    return bool(wanted and seen) and "%any" not in accepted and seen not in accepted


def identity_rows(ours: Offer, theirs: Offer) -> list[Row]:
    """Each identity and auth method next to what the other side wants of it."""
    pairs = (
        ("peer identity", ours.peer_id, theirs.identity),
        ("our identity", theirs.peer_id, ours.identity),
        ("peer auth", ours.peer_auth, theirs.auth_method),
        ("our auth", theirs.peer_auth, ours.auth_method),
    )
    rows = []
    for label, wanted, seen in pairs:
        mine, peer = (wanted, seen) if label.startswith("peer") else (seen, wanted)
        rows.append(Row(label, mine, peer, differs(wanted, seen)))
    return rows
