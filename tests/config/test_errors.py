"""Every kind of mistake is reported as file:line: key: words."""

from __future__ import annotations

import pytest
from config_helpers import PSK_CONN, Write, errors_of


def one_error(write: Write, text: str) -> str:
    write("site-b.psk", "k", 0o600)
    errors = errors_of(write("xfrmctl.yaml", text))
    assert len(errors) == 1, errors
    return errors[0]


def test_bad_literal_names_line_key_and_choices(write: Write) -> None:
    text = PSK_CONN.replace("      lan:\n", "      lan:\n        mode: tunel\n")
    error = one_error(write, text)
    assert error.endswith(
        "xfrmctl.yaml:10: connections.site-b.children.lan.mode: "
        "'tunel' is not one of tunnel, transport"
    )


def test_wrong_type(write: Write) -> None:
    error = one_error(write, PSK_CONN.replace("[192.0.2.1]", "{a: 1}"))
    assert "xfrmctl.yaml:3: connections.site-b.local_addrs: expected a list" in error


def test_unknown_key_with_hint(write: Write) -> None:
    error = one_error(write, PSK_CONN.replace("    children:", "    dpd_dealy: 30s\n    children:"))
    assert "xfrmctl.yaml:8: connections.site-b.dpd_dealy: unknown key 'dpd_dealy'" in error
    assert "did you mean 'dpd_delay'?" in error


def test_unknown_key_without_close_match_lists_valid_keys(write: Write) -> None:
    error = one_error(write, "settings:\n  zzz: 1\n")
    assert "xfrmctl.yaml:2: settings.zzz: unknown key 'zzz' (valid keys: socket," in error


def test_bad_proposal_token_is_named(write: Write) -> None:
    text = PSK_CONN.replace(
        "    psk_file", "    proposals: [aes256gcm16-prfsha384-x25591]\n    psk_file"
    )
    error = one_error(write, text)
    assert "xfrmctl.yaml:7: connections.site-b.proposals[0]:" in error
    assert "x25591" in error


def test_bad_esp_proposal_token_on_its_item_line(write: Write) -> None:
    text = PSK_CONN.replace(
        "        remote_ts: [10.2.0.0/16]",
        "        remote_ts: [10.2.0.0/16]\n        esp_proposals:\n          - aes256gcm16\n"
        "          - aes256gcm16-prfsha256",
    )
    error = one_error(write, text)
    assert "xfrmctl.yaml:14: connections.site-b.children.lan.esp_proposals[1]:" in error
    assert "prfsha256" in error


@pytest.mark.parametrize(
    ("selector", "words"),
    [
        ("10.2.0.1/16", "host bits set; did you mean 10.2.0.0/16?"),
        ("10.2.0.0/33", "bad prefix"),
        ("10.2.0.0/16[tpc/443]", "unknown protocol 'tpc'"),
        ("10.2.0.0/16[tcp/70000]", "port 70000 is above 65535"),
        ("10.2.0.0/16[gre/5]", "protocol 47 has no ports"),
    ],
)
def test_bad_traffic_selector(write: Write, selector: str, words: str) -> None:
    error = one_error(write, PSK_CONN.replace("[10.2.0.0/16]", f'["{selector}"]'))
    assert "xfrmctl.yaml:11: connections.site-b.children.lan.remote_ts[0]:" in error
    assert words in error


def test_world_readable_psk_file_is_refused_naming_file_and_mode(write: Write) -> None:
    main = write("xfrmctl.yaml", PSK_CONN)
    psk = write("site-b.psk", "k", 0o644)
    [error] = errors_of(main)
    assert "xfrmctl.yaml:7: connections.site-b.psk_file:" in error
    assert f"psk_file {psk} has mode 0644 (world-readable)" in error


def test_group_writable_psk_file_is_refused(write: Write) -> None:
    main = write("xfrmctl.yaml", PSK_CONN)
    write("site-b.psk", "k", 0o660)
    [error] = errors_of(main)
    assert "mode 0660 (group-writable)" in error


def test_missing_psk_file(write: Write) -> None:
    main = write("xfrmctl.yaml", PSK_CONN)
    [error] = errors_of(main)
    assert "xfrmctl.yaml:7: connections.site-b.psk_file: psk_file" in error
    assert "site-b.psk does not exist" in error


def test_empty_psk_is_refused(write: Write) -> None:
    main = write("xfrmctl.yaml", PSK_CONN)
    write("site-b.psk", "\n", 0o600)
    [error] = errors_of(main)
    assert "pre-shared key is empty" in error


def test_world_readable_private_key_is_refused(write: Write) -> None:
    write("ca.crt", "x")
    write("me.crt", "x")
    write("me.key", "x", 0o604)
    text = """
    connections:
      c:
        remote_addrs: [192.0.2.2]
        local: {auth: pubkey, certs: [me.crt], key: me.key}
        remote: {auth: pubkey, cacerts: [ca.crt]}
    """
    [error] = errors_of(write("xfrmctl.yaml", text))
    assert "xfrmctl.yaml:4: connections.c.local.key: private key" in error
    assert "mode 0604 (world-readable)" in error


def test_duplicate_connection_across_files_names_both(write: Write) -> None:
    write("site-b.psk", "k", 0o600)
    main = write("xfrmctl.yaml", PSK_CONN)
    write("conf.d/dup.yaml", "# other\nconnections:\n  site-b: {}\n")
    [error] = errors_of(main)
    assert "conf.d/dup.yaml:3: connections.site-b: duplicate connection name 'site-b'" in error
    assert "already defined at" in error and "xfrmctl.yaml:2" in error


def test_settings_in_include_is_an_error(write: Write) -> None:
    main = write("xfrmctl.yaml", "")
    write("conf.d/x.yaml", "settings: {port: 1}\n")
    [error] = errors_of(main)
    assert "x.yaml:1: settings: only 'connections' may appear in an include file" in error


def test_errors_in_several_files_are_all_reported(write: Write) -> None:
    main = write("xfrmctl.yaml", "settings:\n  port: 0\n  log_level: loud\n")
    write("conf.d/a.yaml", "connections:\n  a:\n    encap: sometimes\n")
    write("conf.d/b.yaml", "connections:\n  b:\n    children:\n      x: {protocol: gre}\n")
    errors = errors_of(main)
    assert len(errors) == 4, errors
    text = "\n".join(errors)
    assert "xfrmctl.yaml:2: settings.port: 0 is out of range: must be at least 1" in text
    assert "xfrmctl.yaml:3: settings.log_level: 'loud' is not one of" in text
    assert "a.yaml:3: connections.a.encap: 'sometimes' is not one of auto, force" in text
    assert "b.yaml:4: connections.b.children.x.protocol: 'gre' is not one of esp, ah" in text


def test_yaml_syntax_error_has_a_line(write: Write) -> None:
    [error] = errors_of(write("xfrmctl.yaml", "connections:\n  a: [1, 2\n  b: {}\n"))
    assert error.startswith(str(write("xfrmctl.yaml", "connections:\n  a: [1, 2\n  b: {}\n")))
    assert "YAML syntax error" in error and ":3:" in error


def test_duplicate_yaml_key(write: Write) -> None:
    [error] = errors_of(write("xfrmctl.yaml", "settings:\n  port: 500\n  port: 501\n"))
    assert "xfrmctl.yaml:3: settings.port: duplicate key 'port' (first given on line 2)" in error


def test_missing_main_file(write: Write) -> None:
    missing = write("x", "").parent / "nope.yaml"
    [error] = errors_of(missing)
    assert error == f"{missing}: configuration file does not exist"


@pytest.mark.parametrize(
    ("patch", "where", "words"),
    [
        ("    psk_file: site-b.psk\n", "connections.site-b.psk_file", "no psk_file"),
        ("{id: gw-a.example.org, auth: psk}", "connections.site-b.local.certs", "no certificate"),
        ("[192.0.2.2]", "connections.site-b.remote_addrs[0]", "not an IP address"),
        ("gw-b.example.org", "connections.site-b.remote.id", "unknown attribute 'X'"),
    ],
)
def test_cross_field_and_value_rules(write: Write, patch: str, where: str, words: str) -> None:
    replacement = {
        "    psk_file: site-b.psk\n": "",
        "{id: gw-a.example.org, auth: psk}": "{auth: pubkey, key: site-b.psk}",
        "[192.0.2.2]": "[192.0.2.300]",
        "gw-b.example.org": "'C=CH, X=y'",
    }[patch]
    write("site-b.psk", "k", 0o600)
    errors = errors_of(write("xfrmctl.yaml", PSK_CONN.replace(patch, replacement)))
    assert any(f"{where}: " in e and words in e for e in errors), errors


def test_life_time_must_exceed_rekey_time(write: Write) -> None:
    text = PSK_CONN.replace(
        "        remote_ts: [10.2.0.0/16]",
        "        remote_ts: [10.2.0.0/16]\n        life_time: 30m",
    )
    error = one_error(write, text)
    assert "connections.site-b.children.lan.life_time: life_time (1800) must be greater" in error


def test_start_action_needs_a_peer_address(write: Write) -> None:
    text = PSK_CONN.replace("    remote_addrs: [192.0.2.2]\n", "").replace(
        "      lan:\n", "      lan:\n        start_action: start\n"
    )
    error = one_error(write, text)
    assert "connections.site-b.children.lan.start_action: start_action start needs" in error


def test_bad_connection_name(write: Write) -> None:
    error = one_error(write, "connections:\n  a/b: {}\n")
    assert "xfrmctl.yaml:2: connections.a/b: name 'a/b' must start with" in error


def test_one_problem_across_a_fleet_is_counted_not_repeated(write: Write) -> None:
    """A world-readable secrets file shared by many connections: the daemon's and `reload`'s
    text shows it three times and counts the rest; `issues` (and `xfrmctl check`) keep all."""
    from xfrmctl.config import ConfigError, load_config

    write("shared.psk", "k", 0o644)
    conns = "".join(
        f"  c{i}: {{local: {{auth: psk}}, remote: {{auth: psk}}, psk_file: shared.psk}}\n"
        for i in range(10)
    )
    main = write("xfrmctl.yaml", "connections:\n" + conns)
    with pytest.raises(ConfigError) as info:
        load_config(main)
    assert len(info.value.errors) == 10
    lines = str(info.value).splitlines()
    assert [line.split(": ", 2)[1] for line in lines[:3]] == [
        f"connections.c{i}.psk_file" for i in range(3)
    ]
    assert lines[3].startswith("... and 7 more places with the same problem (psk_file ")
    assert lines[3].endswith("`xfrmctl check` lists every one") and len(lines) == 4
    assert len(errors_of(main)) == 10
