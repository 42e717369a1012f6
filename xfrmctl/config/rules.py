"""Cross-field rules that pydantic's per-field validation cannot express.

Each rule yields (location, message) so the loader can place it at the offending key's line.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from xfrmctl.config.identities import ANY
from xfrmctl.config.model import Child, Connection, XfrmctlConfig
from xfrmctl.config.yamlnodes import Loc

Finding = tuple[Loc, str]


def _concrete(addrs: list[str]) -> bool:
    """True when the list names at least one single address we can initiate to."""
    for addr in addrs:
        if addr != ANY and "/" not in addr:
            return True
        if "/" in addr and ipaddress.ip_network(addr).num_addresses == 1:
            return True
    return False


def _auth_rules(loc: Loc, conn: Connection) -> Iterator[Finding]:
    if conn.uses_psk:
        if conn.psk_file is None and conn.psk is None:
            yield (*loc, "psk_file"), "auth is psk but no psk_file (or inline psk) is given"
        if conn.psk_file is not None and conn.psk is not None:
            yield (*loc, "psk"), "give either psk_file or psk, not both"
    else:
        for key in ("psk_file", "psk"):
            if getattr(conn, key) is not None:
                yield (*loc, key), f"{key} is set but neither local nor remote uses auth: psk"
    if conn.local.auth == "pubkey":
        if not conn.local.certs:
            yield (*loc, "local", "certs"), "local auth is pubkey but no certificate is given"
        if conn.local.key is None:
            yield (*loc, "local", "key"), "local auth is pubkey but no private key is given"
    else:
        for key in ("certs", "key"):
            if getattr(conn.local, key):
                yield (*loc, "local", key), f"local.{key} is set but local auth is psk"
    if conn.remote.auth == "pubkey":
        if not conn.remote.cacerts and not conn.remote.certs:
            yield (
                (*loc, "remote", "cacerts"),
                "remote auth is pubkey but neither cacerts nor certs is given to verify the peer",
            )
    else:
        for key in ("cacerts", "certs"):
            if getattr(conn.remote, key):
                yield (*loc, "remote", key), f"remote.{key} is set but remote auth is psk"


def _lifetime_rules(loc: Loc, hard: int, rekey: int, rand: int, kind: str) -> Iterator[Finding]:
    life_key = "life_time" if kind == "time" else f"life_{kind}"
    if rekey and hard and hard <= rekey:
        yield (*loc, life_key), f"{life_key} ({hard}) must be greater than rekey_{kind} ({rekey})"
    elif rekey and hard and rand > hard - rekey:
        yield (
            (*loc, f"rand_{kind}"),
            f"rand_{kind} ({rand}) is larger than {life_key} - rekey_{kind} ({hard - rekey}): "
            "a rekey could be scheduled after the SA expires",
        )


def _child_rules(loc: Loc, conn: Connection, child: Child) -> Iterator[Finding]:
    if child.protocol == "ah" and child.esp_proposals is not None:
        yield (*loc, "esp_proposals"), "esp_proposals given but protocol is ah (use ah_proposals)"
    if child.protocol == "esp" and child.ah_proposals is not None:
        yield (*loc, "ah_proposals"), "ah_proposals given but protocol is esp (use esp_proposals)"
    if child.proposal_texts() == []:
        key = "ah_proposals" if child.protocol == "ah" else "esp_proposals"
        yield (*loc, key), "at least one proposal is needed"
    for kind in ("time", "bytes", "packets"):
        values = child.__dict__
        yield from _lifetime_rules(
            loc, values[f"life_{kind}"], values[f"rekey_{kind}"], values[f"rand_{kind}"], kind
        )
    if child.start_action in ("start", "trap") and not _concrete(conn.remote_addrs):
        yield (
            (*loc, "start_action"),
            f"start_action {child.start_action} needs a single remote address in remote_addrs",
        )
    if child.mode == "transport" and child.hw_offload == "packet" and child.protocol == "ah":
        yield (*loc, "hw_offload"), "packet offload is only available for ESP"


def find_problems(config: XfrmctlConfig) -> Iterator[Finding]:
    """Every cross-field mistake in the configuration."""
    for name, conn in config.connections.items():
        loc: Loc = ("connections", name)
        if not conn.proposals:
            yield (*loc, "proposals"), "at least one IKE proposal is needed"
        yield from _auth_rules(loc, conn)
        over, rand = conn.over_time or 0, conn.rand_time or 0
        if (conn.rekey_time or conn.reauth_time) and rand > over:
            yield (*loc, "rand_time"), f"rand_time ({rand}) is larger than over_time ({over})"
        for key in ("rekey_time", "reauth_time"):
            value = getattr(conn, key)
            if value and rand >= value:
                yield (*loc, "rand_time"), f"rand_time ({rand}) must be less than {key} ({value})"
        for child_name, child in conn.children.items():
            yield from _child_rules((*loc, "children", child_name), conn, child)
