"""build_specs shares equal immutable values across connections (daemon/specs.py): the specs
must equal those built one by one, and values that differ must stay apart."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml

from xfrmctl.config import load_config
from xfrmctl.daemon.specs import build_spec, build_specs
from xfrmctl.ike.spec import TsSpec, last_address


def _conn(i: int, esp: str, remote_id: str, window: int = 32) -> dict[str, object]:
    return {
        "local_addrs": ["192.0.2.1"],
        "remote_addrs": ["192.0.2.2"],
        "local": {"auth": "psk", "id": "a.example"},
        "remote": {"auth": "psk", "id": remote_id},
        "psk_file": "k.psk",
        "children": {
            "n": {
                "local_ts": [f"10.1.{i}.0/24"],
                "remote_ts": [f"10.2.{i}.0/24"],
                "esp_proposals": [esp],
                "replay_window": window,
            }
        },
    }


def test_equal_values_are_one_instance_and_the_specs_are_unchanged(tmp_path: Path) -> None:
    (tmp_path / "k.psk").write_text("secret\n")
    (tmp_path / "k.psk").chmod(0o600)
    conns = {
        "c0": _conn(0, "aes256gcm16", "b.example"),
        "c1": _conn(1, "aes256gcm16", "b.example"),
        "c2": _conn(2, "aes128gcm16", "c.example"),
        "c3": _conn(3, "aes128gcm16", "c.example", window=64),
    }
    config = tmp_path / "xfrmctl.yaml"
    config.write_text(yaml.safe_dump({"connections": conns}))
    loaded = load_config(config)
    specs = build_specs(loaded)
    alone = [build_spec(loaded, name, conn) for name, conn in loaded.connections.items()]
    assert specs == alone  # sharing changes no value
    c0, c1, c2, c3 = specs
    assert c0.ike_proposals is c1.ike_proposals is c2.ike_proposals
    assert c0.local_id is c1.local_id is c2.local_id and c0.auth is c1.auth
    assert c0.remote_id is c1.remote_id and c2.remote_id != c0.remote_id
    assert c0.children[0].proposals is c1.children[0].proposals
    assert c2.children[0].proposals != c0.children[0].proposals
    assert c0.children[0].kernel is c2.children[0].kernel
    assert c3.children[0].kernel.replay_window == 64 and c3.children[0].proposals is (
        c2.children[0].proposals
    )
    assert c0.children[0].local_ts != c1.children[0].local_ts
    assert c0.local_addrs is c3.local_addrs and c0.remote_addrs is c3.remote_addrs
    assert c0.dpd_delay is c3.dpd_delay and c0.rekey_time is c3.rekey_time  # one float each
    assert c0.children[0].rekey_time is c3.children[0].rekey_time


@pytest.mark.parametrize(
    "text", ["10.0.0.0/8", "192.0.2.7/32", "0.0.0.0/0", "2001:db8::/32", "::/96", "::1/128"]
)
def test_last_address_is_the_broadcast_address_without_caching_it(text: str) -> None:
    network = ipaddress.ip_network(text)
    selector = TsSpec(network).to_selector()
    assert "broadcast_address" not in vars(network)  # not cached: the dict stays small
    assert selector.end == last_address(network) == ipaddress.ip_network(text).broadcast_address
    assert type(selector.end) is type(network.network_address)
