"""Every documented connection and child key reaches the engine's spec (daemon/specs.py).

Each case sets one key to a non-default value and checks the spec field it feeds: the field
must differ from the spec built without the key, and equal what the key says. A key that the
translation drops fails here; what the engine does with each field is tested in tests/ike/.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from xfrmctl.config import load_config
from xfrmctl.daemon.specs import build_specs, endpoint_config
from xfrmctl.ike.iana import EncrId, IntegId, ProtocolId, TransformType
from xfrmctl.ike.spec import (
    CloseAction,
    ConnectionSpec,
    Encap,
    Identity,
    MarkSpec,
    Mode,
    Offload,
    PskAuth,
    StartAction,
)

BASE: dict[str, Any] = {
    "local_addrs": ["192.0.2.1"],
    "remote_addrs": ["192.0.2.2"],
    "local": {"auth": "psk", "id": "a.example"},
    "remote": {"auth": "psk", "id": "b.example"},
    "psk_file": "k.psk",
    "children": {"n": {"local_ts": ["10.1.0.0/16"], "remote_ts": ["10.2.0.0/16"]}},
}


def build(tmp: Path, conn: dict[str, Any], settings: dict[str, Any] | None = None) -> Any:
    psk = tmp / "k.psk"
    psk.write_text("file secret\n")
    psk.chmod(0o600)
    doc: dict[str, Any] = {"connections": {"c": conn}}
    if settings:
        doc["settings"] = settings
    cfg = tmp / "xfrmctl.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    return load_config(cfg)


def spec_with(tmp: Path, conn_keys: dict[str, Any], child_keys: dict[str, Any]) -> ConnectionSpec:
    conn = {**BASE, **conn_keys}
    conn["children"] = {"n": {**BASE["children"]["n"], **child_keys}}
    if "psk" in conn_keys:
        del conn["psk_file"]
    (spec,) = build_specs(build(tmp, conn))
    return spec


def transforms(proposal: Any, kind: TransformType) -> list[int]:
    return [t.id for t in proposal.transforms if t.type == kind]


def net(text: str) -> Any:
    return ipaddress.ip_network(text)


Getter = Callable[[ConnectionSpec], Any]
CONNECTION_CASES: list[tuple[str, Any, Getter, Any]] = [
    (
        "proposals",
        ["aes128-sha256-modp2048"],
        lambda s: (
            transforms(s.ike_proposals[0], TransformType.ENCR),
            transforms(s.ike_proposals[0], TransformType.INTEG),
            len(s.ike_proposals),
        ),
        ([EncrId.AES_CBC], [IntegId.HMAC_SHA2_256_128], 1),
    ),
    ("remote_port", 4501, lambda s: s.remote_port, 4501),
    ("rekey_time", "2h", lambda s: s.rekey_time, 7200.0),
    ("reauth_time", "3h", lambda s: s.reauth_time, 10800.0),
    ("over_time", "5m", lambda s: s.over_time, 300.0),
    ("rand_time", "1m", lambda s: s.rand_time, 60.0),
    ("dpd_delay", "10s", lambda s: s.dpd_delay, 10.0),
    ("dpd_timeout", "20s", lambda s: s.dpd_timeout, 20.0),
    ("encap", "force", lambda s: s.encap, Encap.FORCE),
    ("fragmentation", False, lambda s: s.fragmentation, False),
    ("keep_alive", "7s", lambda s: s.keep_alive, 7.0),
    ("local_addrs", ["192.0.2.9"], lambda s: s.local_addrs, (ipaddress.ip_address("192.0.2.9"),)),
    (
        "remote_addrs",
        ["198.51.100.7"],
        lambda s: s.remote_addrs,
        (ipaddress.ip_address("198.51.100.7"),),
    ),
    ("psk", "inline secret", lambda s: (s.auth, s.peer_auth), (PskAuth(b"inline secret"),) * 2),
    (
        "remote",
        {"auth": "psk", "id": "c.example"},
        lambda s: s.remote_id,
        Identity.parse("c.example"),
    ),
    (
        "local",
        {"auth": "psk", "id": "z.example"},
        lambda s: s.local_id,
        Identity.parse("z.example"),
    ),
]

CHILD_CASES: list[tuple[str, Any, Getter, Any]] = [
    (
        "esp_proposals",
        ["aes128-sha256"],
        lambda s: transforms(s.children[0].proposals[0], TransformType.ENCR),
        [EncrId.AES_CBC],
    ),
    ("mode", "transport", lambda s: s.children[0].mode, Mode.TRANSPORT),
    (
        "local_ts",
        ["10.9.0.0/24"],
        lambda s: [t.network for t in s.children[0].local_ts],
        [net("10.9.0.0/24")],
    ),
    (
        "remote_ts",
        ["10.8.0.0/24"],
        lambda s: [t.network for t in s.children[0].remote_ts],
        [net("10.8.0.0/24")],
    ),
    ("rekey_time", "20m", lambda s: s.children[0].rekey_time, 1200.0),
    ("life_time", "2h", lambda s: s.children[0].life_time, 7200.0),
    ("rand_time", "30s", lambda s: s.children[0].rand_time, 30.0),
    ("rekey_bytes", "1M", lambda s: s.children[0].rekey_bytes, 1 << 20),
    ("life_bytes", "2M", lambda s: s.children[0].life_bytes, 2 << 20),
    ("rand_bytes", 1000, lambda s: s.children[0].rand_bytes, 1000),
    ("rekey_packets", 5000, lambda s: s.children[0].rekey_packets, 5000),
    ("life_packets", 9000, lambda s: s.children[0].life_packets, 9000),
    ("rand_packets", 100, lambda s: s.children[0].rand_packets, 100),
    ("start_action", "trap", lambda s: s.children[0].start_action, StartAction.TRAP),
    ("close_action", "start", lambda s: s.children[0].close_action, CloseAction.START),
    ("dpd_action", "restart", lambda s: s.children[0].dpd_action, CloseAction.START),
    ("replay_window", 256, lambda s: s.children[0].kernel.replay_window, 256),
    ("if_id_in", 7, lambda s: s.children[0].kernel.if_id_in, 7),
    ("if_id_out", 8, lambda s: s.children[0].kernel.if_id_out, 8),
    ("hw_offload", "auto", lambda s: s.children[0].kernel.hw_offload, Offload.AUTO),
    ("ipcomp", True, lambda s: s.children[0].ipcomp, True),
    ("mark_in", "0x2a/0xff", lambda s: s.children[0].kernel.mark_in, MarkSpec(42, 0xFF)),
    ("mark_out", 7, lambda s: s.children[0].kernel.mark_out, MarkSpec(7, 0xFFFFFFFF)),
]


@pytest.mark.parametrize(
    ("key", "value", "field", "expected"), CONNECTION_CASES, ids=[c[0] for c in CONNECTION_CASES]
)
def test_connection_key_reaches_the_spec(
    tmp_path: Path, key: str, value: Any, field: Getter, expected: Any
) -> None:
    base = spec_with(tmp_path, {}, {})
    spec = spec_with(tmp_path, {key: value}, {})
    assert field(spec) == expected
    assert field(spec) != field(base), f"{key} is the default: the case proves nothing"


@pytest.mark.parametrize(
    ("key", "value", "field", "expected"), CHILD_CASES, ids=[c[0] for c in CHILD_CASES]
)
def test_child_key_reaches_the_spec(
    tmp_path: Path, key: str, value: Any, field: Getter, expected: Any
) -> None:
    base = spec_with(tmp_path, {}, {})
    spec = spec_with(tmp_path, {}, {key: value})
    assert field(spec) == expected
    assert field(spec) != field(base), f"{key} is the default: the case proves nothing"


def test_ah_protocol_and_its_proposals(tmp_path: Path) -> None:
    (child,) = spec_with(tmp_path, {}, {"protocol": "ah", "ah_proposals": ["sha384"]}).children
    assert child.protocol == ProtocolId.AH
    assert transforms(child.proposals[0], TransformType.INTEG) == [IntegId.HMAC_SHA2_384_192]
    assert transforms(child.proposals[0], TransformType.ENCR) == []


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        ("port", 1500, "ike_port"),
        ("port_nat_t", 14500, "natt_port"),
        ("init_limit_half_open", 77, "max_half_open"),
        ("cookie_threshold", 33, "cookie_threshold"),
        ("cookie_threshold_ip", 4, "cookie_threshold_ip"),
        ("block_threshold", 9, "block_threshold"),
    ],
)
def test_settings_reach_the_engine(tmp_path: Path, key: str, value: int, field: str) -> None:
    default = endpoint_config(build(tmp_path, dict(BASE)).settings)
    config = endpoint_config(build(tmp_path, dict(BASE), {key: value}).settings)
    assert getattr(config, field) == value != getattr(default, field)
