"""Deriving both ends of each tunnel from one inventory description."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("ansible", reason="ansible-core is in the dev extra")
from ansible.errors import AnsibleFilterError

COLLECTION = Path(__file__).resolve().parents[2] / "ansible/collections"
sys.path.insert(0, str(COLLECTION / "ansible_collections/xfrmctl/ipsec/plugins/filter"))
from tunnels import FilterModule, tunnel_connections, tunnel_secrets  # noqa: E402

HOSTVARS: dict[str, dict[str, Any]] = {
    "left": {"xfrmctl_address": "192.0.2.1", "xfrmctl_subnets": ["10.1.0.0/16"]},
    "right": {"xfrmctl_address": "192.0.2.2", "xfrmctl_id": "gw-b.example.org"},
    "third": {"xfrmctl_address": "192.0.2.3"},
    "noaddr": {},
}
TUNNELS = [
    {"name": "left-right", "ends": ["left", "right"], "psk": "s3cret-lr", "mode": "tunnel"},
    {
        "name": "third-left",
        "ends": ["third", "left"],
        "psk": "s3cret-tl",
        "mode": "transport",
        "esp_proposals": ["chacha20poly1305"],
        "connection_options": {"dpd_delay": "30s"},
        "child_options": {"replay_window": 64},
    },
]


def test_both_ends_mirror_each_other() -> None:
    left = tunnel_connections(TUNNELS, "left", HOSTVARS)["left-right"]
    right = tunnel_connections(TUNNELS, "right", HOSTVARS)["left-right"]
    assert left["local_addrs"] == right["remote_addrs"] == ["192.0.2.1"]
    assert left["remote_addrs"] == right["local_addrs"] == ["192.0.2.2"]
    assert left["local"] == right["remote"] == {"id": "left", "auth": "psk"}
    assert left["remote"] == right["local"] == {"id": "gw-b.example.org", "auth": "psk"}
    lc, rc = left["children"]["net"], right["children"]["net"]
    assert lc["local_ts"] == rc["remote_ts"] == ["10.1.0.0/16"]
    assert lc["remote_ts"] == rc["local_ts"] == ["dynamic"]
    assert (lc["start_action"], rc["start_action"]) == ("trap", "none")
    assert left["psk_file"] == "/etc/xfrmctl/secrets/left-right.psk"


def test_secrets_never_go_into_the_configuration() -> None:
    conns = tunnel_connections(TUNNELS, "left", HOSTVARS, "/srv/x")
    assert "s3cret" not in repr(conns)
    assert conns["third-left"]["psk_file"] == "/srv/x/secrets/third-left.psk"
    assert tunnel_secrets(TUNNELS, "left") == [
        {"name": "left-right", "psk": "s3cret-lr"},
        {"name": "third-left", "psk": "s3cret-tl"},
    ]
    assert tunnel_secrets(TUNNELS, "right") == [{"name": "left-right", "psk": "s3cret-lr"}]


def test_options_and_only_my_tunnels() -> None:
    conns = tunnel_connections(TUNNELS, "third", HOSTVARS)
    assert list(conns) == ["third-left"]
    conn = conns["third-left"]
    assert conn["dpd_delay"] == "30s"
    child = conn["children"]["net"]
    assert child["mode"] == "transport" and child["start_action"] == "trap"
    assert child["esp_proposals"] == ["chacha20poly1305"] and child["replay_window"] == 64
    assert tunnel_connections(TUNNELS, "noaddr", HOSTVARS) == {}


@pytest.mark.parametrize(
    ("tunnel", "message"),
    [
        ({"name": "t", "ends": ["left"], "psk": "x"}, "exactly two different"),
        ({"name": "t", "ends": ["left", "left"], "psk": "x"}, "exactly two different"),
        ({"name": "t", "ends": ["left", "ghost"], "psk": "x"}, "'ghost' is not a host"),
        ({"name": "t", "ends": ["left", "noaddr"], "psk": "x"}, "no xfrmctl_address"),
        ({"name": "t", "ends": ["left", "right"]}, "'psk' is required"),
        ({"name": "t", "ends": ["left", "right"], "psk": "x", "mode": "tunel"}, "'mode'"),
        ({"name": "t", "ends": ["left", "right"], "psk": "x", "peer": "y"}, "unknown key(s) peer"),
        ({"ends": ["left", "right"], "psk": "x"}, "'name' is required"),
        (
            {"name": "t", "ends": ["left", "right"], "psk": "x", "interface": {"name": "x"}},
            "'interface' takes name and if_id",
        ),
        ("left-right", "must be a mapping"),
    ],
)
def test_bad_tunnels_name_what_is_wrong(tunnel: Any, message: str) -> None:
    with pytest.raises(AnsibleFilterError, match="xfrmctl_tunnels: tunnel") as info:
        tunnel_connections([tunnel], "left", HOSTVARS)
    assert message in str(info.value)


def test_duplicate_tunnel_names_are_refused() -> None:
    with pytest.raises(AnsibleFilterError, match="two tunnels with this name"):
        tunnel_connections([TUNNELS[0], TUNNELS[0]], "left", HOSTVARS)


def test_filters_are_registered() -> None:
    assert set(FilterModule().filters()) == {"tunnel_connections", "tunnel_secrets"}


def test_derived_configuration_is_valid_for_xfrmctl(tmp_path: Path) -> None:
    """Both ends' configurations, as the role writes them, pass xfrmctl's own loader."""
    from xfrmctl.config import check_config

    for me in ("left", "right", "third"):
        conf_dir = tmp_path / me
        (conf_dir / "secrets").mkdir(parents=True)
        for secret in tunnel_secrets(TUNNELS, me):
            psk = conf_dir / "secrets" / f"{secret['name']}.psk"
            psk.write_text(secret["psk"] + "\n")
            psk.chmod(0o600)
        config = {
            "settings": {"socket": str(conf_dir / "x.sock"), "include": f"{conf_dir}/conf.d/*"},
            "connections": tunnel_connections(TUNNELS, me, HOSTVARS, str(conf_dir)),
        }
        path = conf_dir / "xfrmctl.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        loaded, issues = check_config(path)
        assert loaded is not None, [str(i) for i in issues]
        assert sorted(loaded.connections) == sorted(config["connections"])
        assert loaded.psk_bytes("left-right" if me != "third" else "third-left")


ROUTED = {
    "name": "left-right",
    "ends": ["left", "right"],
    "psk": "s3cret-lr",
    "interface": {"name": "xfrm-lr", "if_id": 42, "mtu": 1400},
}
ROUTED_HOSTS = {**HOSTVARS, "right": {**HOSTVARS["right"], "xfrmctl_subnets": ["10.2.0.0/16"]}}


def test_a_route_based_tunnel_routes_each_peers_subnets_into_the_interface(
    tmp_path: Path,
) -> None:
    from xfrmctl.config import check_config

    left = tunnel_connections([ROUTED], "left", ROUTED_HOSTS, str(tmp_path))["left-right"]
    right = tunnel_connections([ROUTED], "right", ROUTED_HOSTS)["left-right"]
    base = {"name": "xfrm-lr", "if_id": 42, "mtu": 1400}
    assert left["interface"] == {**base, "routes": ["10.2.0.0/16"]}
    assert right["interface"] == {**base, "routes": ["10.1.0.0/16"]}
    for conn in (left, right):
        child = conn["children"]["net"]
        assert child["local_ts"] == child["remote_ts"] == ["0.0.0.0/0"]
    (tmp_path / "secrets").mkdir()
    psk = tmp_path / "secrets" / "left-right.psk"
    psk.write_text("s3cret-lr\n")
    psk.chmod(0o600)
    path = tmp_path / "xfrmctl.yaml"
    path.write_text(yaml.safe_dump({"connections": {"left-right": left}}, sort_keys=False))
    loaded, issues = check_config(path)
    assert loaded is not None, [str(i) for i in issues]
    assert loaded.connection("left-right").children["net"].if_id_in == 42
