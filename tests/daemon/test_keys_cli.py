"""`xfrmctl keys --wireshark DIR` through the real control socket, against two daemons on
loopback: both ends export the same tables, holding the keys the SAs really use; the daemon
refuses while settings.key_export is off (reload turns it on and off); no key is logged."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import stat
from pathlib import Path

import pytest
from daemon_helpers import BASE_PORT, RecordingKernel, cli, served_pair, write_config

from xfrmctl.client import ControlClient, RemoteError
from xfrmctl.daemon.main import run_daemon

PORT = BASE_PORT + 960
FLAG = "--i-know-this-writes-secrets"


def records(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if not line.startswith("#")]


def configs(tmp: Path, **extra: str) -> tuple[Path, Path]:
    ids = ("a.example", "b.example")
    a = write_config(tmp, "a", "127.0.0.1", "127.0.0.2", PORT, PORT + 2, *ids, **extra)
    b = write_config(tmp, "b", "127.0.0.2", "127.0.0.1", PORT + 2, PORT, *ids[::-1], **extra)
    return a, b


def keydir(tmp: Path, name: str) -> Path:
    path = tmp / name
    path.mkdir(mode=0o700)
    return path


def test_both_ends_export_the_keys_their_sas_use(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with served_pair(*configs(tmp_path)) as (a, b):
        code, _, err = cli(a.sock, "up", "tun")
        assert code == 0, err
        dir_a = keydir(tmp_path, "keys-a")
        code, _, err = cli(a.sock, "keys", "--wireshark", str(dir_a), FLAG)
        assert code == 1, err  # settings.key_export defaults to off
        assert "keys failed: KEY_EXPORT_DISABLED" in err, err
        assert "set settings.key_export: true and run `xfrmctl reload`" in err, err
        assert list(dir_a.iterdir()) == []

        a.handler.key_export = b.handler.key_export = True
        dir_b = keydir(tmp_path, "keys-b")
        code, out, err = cli(a.sock, "keys", "--wireshark", str(dir_a), FLAG)
        assert code == 0 and err == "", err
        assert f"wrote {dir_a}/esp_sa (2 ESP SAs) and {dir_a}/ikev2_decryption_table" in out
        assert "(1 IKE SAs), mode 0600" in out, out
        assert cli(b.sock, "keys", "--wireshark", str(dir_b), FLAG)[0] == 0

        for name in ("esp_sa", "ikev2_decryption_table"):
            assert stat.S_IMODE((dir_a / name).stat().st_mode) == 0o600
            # Each end describes the same SAs: the initiator's outbound is the responder's
            # inbound, with the same addresses, SPI and keys.
            assert sorted(records(dir_a / name)) == sorted(records(dir_b / name)), name
        esp, (ike,) = records(dir_a / "esp_sa"), records(dir_a / "ikev2_decryption_table")

        (entry,) = a.daemon.installed.values()
        ready = entry.ready
        assert (
            f'"IPv4","127.0.0.1","127.0.0.2","0x{ready.spi_out:08x}",'
            f'"AES-GCM with 16 octet ICV [RFC4106]","0x{ready.encr_key_out.hex()}","NULL",""'
        ) in esp
        assert f'"0x{ready.spi_in:08x}"' in " ".join(esp) and ready.encr_key_in.hex() in str(esp)
        assert b.kernel.sas[ready.spi_out].encr_key_in == ready.encr_key_out  # b decrypts it

        (sa,) = a.daemon.engine.sas.values()
        assert sa.crypto is not None
        sk = sa.crypto.keys
        assert ike == (
            f"{sa.spi_i.hex()},{sa.spi_r.hex()},{sk.sk_ei.hex()},{sk.sk_er.hex()},"
            '"AES-GCM-256 with 16 octet ICV [RFC5282]",,,"NONE [RFC4306]"'
        )
    assert "exported the keys of 1 IKE SA(s) and 2 ESP SA(s) to a control client" in caplog.text
    for secret in (ready.encr_key_out, ready.encr_key_in, sk.sk_ei, sk.sk_er, sk.sk_d):
        assert secret.hex() not in caplog.text


def test_an_sa_wireshark_cannot_decrypt_is_named_and_left_out(tmp_path: Path) -> None:
    a_cfg, b_cfg = configs(tmp_path, esp="chacha20poly1305")
    with served_pair(a_cfg, b_cfg) as (a, _):
        assert cli(a.sock, "up", "tun")[0] == 0
        a.handler.key_export = True
        out_dir = keydir(tmp_path, "keys")
        code, out, err = cli(a.sock, "keys", "--wireshark", str(out_dir), FLAG)
        assert code == 0, err
        spi_in, entry = next(iter(a.daemon.installed.items()))
        assert (
            f"xfrmctl: left out ESP SA 0x{entry.ready.spi_out:08x} of tun/host "
            "(127.0.0.1 -> 127.0.0.2): Wireshark cannot decrypt ESP with CHACHA20_POLY1305"
        ) in err, err
        assert f"left out ESP SA 0x{spi_in:08x} of tun/host (127.0.0.2 -> 127.0.0.1)" in err
        assert "(0 ESP SAs)" in out and "(1 IKE SAs)" in out, out
        assert records(out_dir / "esp_sa") == []
        assert len(records(out_dir / "ikev2_decryption_table")) == 1


def test_reload_switches_key_export_on_and_off(tmp_path: Path) -> None:
    """settings.key_export is read at start and again by every reload."""
    sock = tmp_path / "ctl.sock"
    psk = tmp_path / "k.psk"
    psk.write_text("a secret\n")
    psk.chmod(0o600)
    cfg = tmp_path / "xfrmctl.yaml"

    def write(key_export: bool) -> None:
        cfg.write_text(
            f"settings:\n  socket: {sock}\n  port: {PORT + 10}\n  port_nat_t: {PORT + 11}\n"
            f"  key_export: {str(key_export).lower()}\n"
            "connections:\n  c:\n    local_addrs: [127.0.0.1]\n    remote_addrs: [127.0.0.2]\n"
            "    local: {auth: psk, id: a.example}\n    remote: {auth: psk, id: b.example}\n"
            f"    psk_file: {psk}\n    children:\n      n: {{mode: transport}}\n"
        )

    def keys() -> str:
        try:
            result = ControlClient(sock).call("keys")
        except RemoteError as exc:
            return exc.code
        return f"{result['esp_sas']} {result['ike_sas']}"

    async def scenario() -> list[str]:
        task = asyncio.create_task(run_daemon(cfg, None, RecordingKernel()))
        for _ in range(200):
            if sock.exists() or task.done():
                break
            await asyncio.sleep(0.02)
        seen = [await asyncio.to_thread(keys)]
        for allowed in (False, True):
            write(allowed)
            await asyncio.to_thread(ControlClient(sock).call, "reload")
            seen.append(await asyncio.to_thread(keys))
        os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(task, 10) == 0
        return seen

    write(True)
    assert asyncio.run(scenario()) == ["0 0", "KEY_EXPORT_DISABLED", "0 0"]
