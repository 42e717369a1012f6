# Copyright: xfrmctl developers
# Apache License 2.0 (see the repository's LICENSE)
"""Derive each host's end of every tunnel from one inventory description of the tunnel.

A tunnel is written once (``xfrmctl_tunnels``, usually in group_vars) and names its two ends by
inventory hostname; each end's address, identity and subnets are that host's inventory
variables. Both hosts render the same tunnel from opposite sides, so the two configurations
agree by construction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

TUNNEL_KEYS = {
    "name",
    "ends",
    "psk",
    "mode",
    "protocol",
    "proposals",
    "esp_proposals",
    "child",
    "connection_options",
    "child_options",
    "interface",
}
INTERFACE_KEYS = {"name", "if_id", "mtu"}
MODES = ("tunnel", "transport")
DEFAULT_CHILD = "net"


def _fail(tunnel: Any, message: str) -> AnsibleFilterError:
    label = tunnel.get("name", "?") if isinstance(tunnel, Mapping) else repr(tunnel)
    return AnsibleFilterError(f"xfrmctl_tunnels: tunnel {label!r}: {message}")


def _check(tunnel: Any) -> None:
    if not isinstance(tunnel, Mapping):
        raise _fail(tunnel, "each entry must be a mapping with name, ends and psk")
    unknown = sorted(set(tunnel) - TUNNEL_KEYS)
    if unknown:
        raise _fail(tunnel, f"unknown key(s) {', '.join(unknown)}; known: {sorted(TUNNEL_KEYS)}")
    name = tunnel.get("name")
    if not isinstance(name, str) or not name:
        raise _fail(tunnel, "'name' is required (letters, digits, '.', '_', '-')")
    ends = tunnel.get("ends")
    if not isinstance(ends, list) or len(ends) != 2 or ends[0] == ends[1]:
        raise _fail(tunnel, "'ends' must list exactly two different inventory hostnames")
    if tunnel.get("mode", "tunnel") not in MODES:
        raise _fail(tunnel, f"'mode' must be one of {', '.join(MODES)}")
    iface = tunnel.get("interface")
    if iface is not None and (
        not isinstance(iface, Mapping)
        or set(iface) - INTERFACE_KEYS
        or not {"name", "if_id"} <= set(iface)
    ):
        raise _fail(tunnel, "'interface' takes name and if_id (and optionally mtu)")


def _end(hostvars: Mapping[str, Any], host: str, tunnel: Mapping[str, Any]) -> dict[str, Any]:
    try:
        hv = hostvars[host]
    except KeyError:
        raise _fail(tunnel, f"end {host!r} is not a host in the inventory") from None
    address = hv.get("xfrmctl_address")
    if not address:
        raise _fail(tunnel, f"host {host!r} has no xfrmctl_address (its IKE address)")
    subnets = hv.get("xfrmctl_subnets") or []
    if not isinstance(subnets, list):
        raise _fail(tunnel, f"host {host!r}: xfrmctl_subnets must be a list of prefixes")
    return {
        "address": str(address),
        "id": str(hv.get("xfrmctl_id") or host),
        "subnets": [str(s) for s in subnets],
    }


def _everything(*ends: Mapping[str, Any]) -> list[str]:
    """0.0.0.0/0, and ::/0 too when either end has IPv6 subnets."""
    v6 = any(":" in s for end in ends for s in end["subnets"])
    return ["0.0.0.0/0", "::/0"] if v6 else ["0.0.0.0/0"]


def tunnel_connections(
    tunnels: list[Any], me: str, hostvars: Mapping[str, Any], config_dir: str = "/etc/xfrmctl"
) -> dict[str, Any]:
    """The ``connections:`` mapping of ``me``'s xfrmctl configuration.

    The first end of a tunnel traps (negotiates on the first packet); the second only responds,
    so the two never race to initiate.
    """
    connections: dict[str, Any] = {}
    for tunnel in tunnels or []:
        _check(tunnel)
        ends = list(tunnel["ends"])
        if me not in ends:
            continue
        name = tunnel["name"]
        if name in connections:
            raise _fail(tunnel, "two tunnels with this name include this host")
        if not tunnel.get("psk"):
            raise _fail(tunnel, "'psk' is required (keep it in ansible-vault)")
        local = _end(hostvars, me, tunnel)
        remote = _end(hostvars, ends[1] if ends[0] == me else ends[0], tunnel)
        mode = tunnel.get("mode", "tunnel")
        child: dict[str, Any] = {
            "mode": mode,
            "protocol": tunnel.get("protocol", "esp"),
            "local_ts": local["subnets"] or ["dynamic"],
            "remote_ts": remote["subnets"] or ["dynamic"],
            "start_action": "trap" if ends[0] == me else "none",
        }
        iface = tunnel.get("interface")
        if iface is not None:
            # Route-based: the peer's subnets are routed into the interface, and the
            # selectors cover everything (routing decides what is encrypted).
            child["local_ts"] = child["remote_ts"] = _everything(local, remote)
        if tunnel.get("esp_proposals"):
            child["esp_proposals"] = list(tunnel["esp_proposals"])
        child.update(tunnel.get("child_options") or {})
        conn: dict[str, Any] = {
            "local_addrs": [local["address"]],
            "remote_addrs": [remote["address"]],
            "local": {"id": local["id"], "auth": "psk"},
            "remote": {"id": remote["id"], "auth": "psk"},
            "psk_file": f"{config_dir}/secrets/{name}.psk",
        }
        if tunnel.get("proposals"):
            conn["proposals"] = list(tunnel["proposals"])
        if iface is not None:
            conn["interface"] = {**dict(iface), "routes": remote["subnets"]}
        conn.update(tunnel.get("connection_options") or {})
        conn["children"] = {tunnel.get("child") or DEFAULT_CHILD: child}
        connections[name] = conn
    return connections


def tunnel_secrets(tunnels: list[Any], me: str) -> list[dict[str, str]]:
    """``[{name, psk}]`` for the tunnels ``me`` is an end of (for the 0600 secret files)."""
    out = []
    for tunnel in tunnels or []:
        _check(tunnel)
        if me in tunnel["ends"]:
            if not tunnel.get("psk"):
                raise _fail(tunnel, "'psk' is required (keep it in ansible-vault)")
            out.append({"name": str(tunnel["name"]), "psk": str(tunnel["psk"])})
    return out


class FilterModule:
    """xfrmctl.ipsec filters."""

    def filters(self) -> dict[str, Any]:
        return {"tunnel_connections": tunnel_connections, "tunnel_secrets": tunnel_secrets}
