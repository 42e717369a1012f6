"""Loading valid configurations: defaults, secrets, includes."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from config_helpers import PSK_CONN, Write, errors_of

from xfrmctl.config import ConfigError, load_config
from xfrmctl.config.selectors import Selector
from xfrmctl.ike.iana import IdType, ProtocolId


def test_contract_example_loads_with_swanctl_defaults(write: Write) -> None:
    write("site-b.psk", "s3cret-s3cret\n", 0o600)
    main = write("xfrmctl.yaml", PSK_CONN)
    config = load_config(main)
    conn = config.connection("site-b")
    assert config.psk_bytes("site-b") == b"s3cret-s3cret"
    assert conn.rekey_time == 4 * 3600 and conn.over_time == 1440 and conn.rand_time == 1440
    assert conn.local_identity() is not None
    assert conn.local_identity().type == IdType.FQDN  # type: ignore[union-attr]
    child = conn.children["lan"]
    assert (child.mode, child.protocol, child.start_action) == ("tunnel", "esp", "none")
    assert (child.rekey_time, child.life_time, child.rand_time) == (3600, 3960, 360)
    assert child.esp_proposals == ["aes256gcm16"]
    assert conn.proposals == ["aes256gcm16-prfsha384-x25519"]
    [ike] = conn.ike_proposals()
    assert ike.protocol == ProtocolId.IKE
    [esp] = child.proposals()
    assert esp.protocol == ProtocolId.ESP


def test_secret_never_in_repr(write: Write) -> None:
    write("site-b.psk", "s3cret-s3cret\n", 0o600)
    config = load_config(write("xfrmctl.yaml", PSK_CONN))
    assert "s3cret" not in repr(config)
    inline = load_config(write("b.yaml", PSK_CONN.replace("psk_file: site-b.psk", "psk: pass1")))
    assert "pass1" not in repr(inline)


def test_durations_sizes_and_plain_seconds(write: Write) -> None:
    write("site-b.psk", "k", 0o600)
    text = PSK_CONN.replace(
        "        remote_ts: [10.2.0.0/16]",
        "        remote_ts: [10.2.0.0/16]\n        rekey_time: 90\n        life_time: 2m\n"
        "        rand_time: 0\n        rekey_bytes: 500M\n        life_bytes: 1G\n"
        "        rekey_packets: 1000\n",
    ).replace("    psk_file: site-b.psk", "    psk_file: site-b.psk\n    rekey_time: 1d")
    conn = load_config(write("xfrmctl.yaml", text)).connection("site-b")
    child = conn.children["lan"]
    assert conn.rekey_time == 86400
    assert (child.rekey_time, child.life_time, child.rand_time) == (90, 120, 0)
    assert (child.rekey_bytes, child.life_bytes) == (500 << 20, 1 << 30)
    assert (child.rekey_packets, child.life_packets, child.rand_packets) == (1000, 1100, 100)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("plain text\n", b"plain text"),
        ("two newlines\n\n", b"two newlines\n"),
        ("crlf\r\n", b"crlf"),
        ("0x0102ff\n", b"\x01\x02\xff"),
        ("0s" + base64.b64encode(b"\x00binary\xff").decode() + "\n", b"\x00binary\xff"),
    ],
)
def test_psk_file_forms(write: Write, content: str, expected: bytes) -> None:
    write("site-b.psk", content, 0o600)
    assert load_config(write("xfrmctl.yaml", PSK_CONN)).psk_bytes("site-b") == expected


def test_psk_mode_0640_is_accepted(write: Write) -> None:
    write("site-b.psk", "k", 0o640)
    assert load_config(write("xfrmctl.yaml", PSK_CONN)).psk_bytes("site-b") == b"k"


def test_inline_psk_warns_and_keeps_hex_text(write: Write) -> None:
    main = write("xfrmctl.yaml", PSK_CONN.replace("psk_file: site-b.psk", "psk: 0x1234"))
    config = load_config(main)
    assert config.psk_bytes("site-b") == b"\x12\x34"  # not YAML's integer 4660
    [warning] = config.warnings
    assert "xfrmctl.yaml:7: warning: connections.site-b.psk:" in str(warning)
    assert "psk_file" in str(warning)


def test_include_dir_merges_and_resolves_paths_relative_to_include(write: Write) -> None:
    main = write("xfrmctl.yaml", "settings:\n  include: conf.d/*.yaml\n")
    write("conf.d/secrets/b.psk", "from-include", 0o600)
    write("conf.d/b.yaml", PSK_CONN.replace("site-b.psk", "secrets/b.psk"))
    write(
        "conf.d/c.yaml",
        "connections:\n  c: {local: {auth: psk}, remote: {auth: psk}, psk: inline-key}\n",
    )
    write("conf.d/ignored.txt", "not: yaml: at all: [")
    config = load_config(main)
    assert sorted(config.connections) == ["c", "site-b"]
    assert config.psk_bytes("site-b") == b"from-include"
    assert [p.name for p in config.files] == ["xfrmctl.yaml", "b.yaml", "c.yaml"]


def test_default_local_ts_is_dynamic_host_prefix(write: Write) -> None:
    write("k.psk", "k", 0o600)
    text = """
    connections:
      t:
        remote_addrs: [192.0.2.2]
        local: {auth: psk}
        remote: {auth: psk}
        psk_file: k.psk
        children:
          host: {mode: transport}
    """
    child = load_config(write("xfrmctl.yaml", text)).connection("t").children["host"]
    [local] = child.local_selectors()
    assert local.network is None
    resolved = local.resolve(__import__("ipaddress").ip_address("192.0.2.1"))
    assert str(resolved.network) == "192.0.2.1/32"
    assert isinstance(resolved, Selector)


def test_load_config_raises_with_every_error(write: Write) -> None:
    main = write("xfrmctl.yaml", "connections:\n  a: {rekey_time: soon, colour: red}\n")
    with pytest.raises(ConfigError) as info:
        load_config(main)
    assert len(info.value.errors) == 2
    assert "rekey_time" in str(info.value) and "colour" in str(info.value)


def test_empty_file_is_a_valid_empty_config(write: Write) -> None:
    main = write("xfrmctl.yaml", "# nothing yet\n")
    assert errors_of(main) == []
    assert load_config(Path(main)).connections == {}


def _shared_psk_conns(count: int) -> str:
    one = PSK_CONN.split("connections:\n", 1)[1]
    return "connections:\n" + "".join(one.replace("site-b:", f"site-{i}:") for i in range(count))


def test_a_psk_file_shared_by_many_connections_is_read_once(
    write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    import xfrmctl.config.loader as loader

    write("site-b.psk", "shared-key", 0o600)
    reads: list[Path] = []

    def counting(path: Path) -> bytes:
        reads.append(path)
        return loader.decode_psk(path.read_bytes(), str(path))

    monkeypatch.setattr(loader, "read_psk", counting)
    config = load_config(write("xfrmctl.yaml", _shared_psk_conns(50)))
    assert [config.psk_bytes(f"site-{i}") for i in (0, 49)] == [b"shared-key"] * 2
    assert len(reads) == 1
    load_config(write("xfrmctl.yaml", _shared_psk_conns(2)))
    assert len(reads) == 2  # the next load reads it again: a changed key is seen


def test_a_refused_shared_psk_file_is_named_at_every_connection(write: Write) -> None:
    write("site-b.psk", "shared-key", 0o644)
    errors = errors_of(write("xfrmctl.yaml", _shared_psk_conns(3)))
    for i in range(3):
        assert any(f"connections.site-{i}.psk_file" in e and "world-readable" in e for e in errors)


def test_a_valid_configuration_records_no_positions(
    write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Positions only place problems; a reload of a valid fleet must not build them (they
    were most of its memory peak), and relative paths still resolve against the include."""
    from xfrmctl.config import yamlnodes

    def refuse(*_: object) -> None:
        raise AssertionError("a position was recorded")

    main = write("xfrmctl.yaml", "settings:\n  include: conf.d/*.yaml\n")
    write("conf.d/secrets/b.psk", "from-include", 0o600)
    write("conf.d/b.yaml", PSK_CONN.replace("site-b.psk", "secrets/b.psk"))
    monkeypatch.setattr(yamlnodes, "Position", refuse)
    assert load_config(main).psk_bytes("site-b") == b"from-include"


def test_reading_the_file_does_not_reserve_the_size_bound(write: Write) -> None:
    """`read(MAX_FILE_SIZE + 1)` had malloc reserve 16 MiB on every reload."""
    import tracemalloc

    main = write("xfrmctl.yaml", PSK_CONN)
    write("site-b.psk", "k", 0o600)
    tracemalloc.start()
    try:
        load_config(main)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20
