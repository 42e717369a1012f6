"""`--log-level debug` logs every IKE message decoded, naming the connection, with no secret."""

from __future__ import annotations

import asyncio
import base64
import logging
from pathlib import Path

import pytest
from daemon_helpers import BASE_PORT, make_daemon, no_progress, until, write_config

PSK = "correct horse battery staple"  # what daemon_helpers.write_config puts in the PSK file


def configs(tmp: Path, offset: int) -> tuple[Path, Path]:
    port = BASE_PORT + 400 + offset
    a = write_config(tmp, "a", "127.0.0.1", "127.0.0.2", port, port + 2, "a.example", "b.example")
    b = write_config(tmp, "b", "127.0.0.2", "127.0.0.1", port + 2, port, "b.example", "a.example")
    return a, b


def encodings(secret: bytes) -> list[str]:
    forms = [secret.hex(), secret.hex().upper(), repr(secret)[2:-1]]
    forms += [base64.b64encode(secret).decode(), secret[:8].hex()]
    return [f for f in forms if len(f) >= 8]


def test_debug_level_logs_payload_lines_and_no_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = configs(tmp_path, 0)
    secrets: list[bytes] = [PSK.encode()]

    async def scenario() -> None:
        da, ha, ka = await make_daemon(a)
        db, _, kb = await make_daemon(b)
        try:
            assert da.engine.trace and db.engine.trace
            await asyncio.wait_for(ha.up("tun", None, no_progress), 20)
            await until(lambda: len(kb.sas) == 1, what="b's pair")
            for ready in [*ka.sas.values(), *kb.sas.values()]:
                secrets.extend([ready.encr_key_in, ready.encr_key_out])
            await asyncio.wait_for(ha.down("tun", None, no_progress), 20)
        finally:
            await da.stop()
            await db.stop()

    with caplog.at_level(logging.DEBUG):
        asyncio.run(scenario())
    trace = [r.getMessage() for r in caplog.records if r.name == "xfrmctl.daemon.trace"]
    assert trace and all(
        r.levelno == logging.DEBUG for r in caplog.records if r.name.endswith("trace")
    )
    text = "\n".join(trace)
    # Every exchange of the life cycle, both directions, each line naming the connection.
    for exchange in ("IKE_SA_INIT", "IKE_AUTH", "INFORMATIONAL"):
        assert f"tun: out {exchange}" in text or f"tun: in {exchange}" in text, exchange
    for payload in ("SA", "KE", "NONCE", "IDi", "IDr", "AUTH", "TSi", "TSr", "DELETE"):
        assert any(line.split(": ", 1)[1].lstrip().startswith(payload) for line in trace), payload
    everything = "\n".join(r.getMessage() for r in caplog.records)
    for secret in secrets:
        for form in encodings(secret):
            assert form not in everything, f"secret in the log as {form!r}"


def test_info_level_traces_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a, b = configs(tmp_path, 10)

    async def scenario() -> None:
        da, ha, _ = await make_daemon(a)
        db, _, _ = await make_daemon(b)
        try:
            assert not da.engine.trace
            await asyncio.wait_for(ha.up("tun", None, no_progress), 20)
        finally:
            await da.stop()
            await db.stop()

    with caplog.at_level(logging.INFO):
        asyncio.run(scenario())
    assert not [r for r in caplog.records if r.name == "xfrmctl.daemon.trace"]
