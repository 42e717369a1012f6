"""The daemon primes the crypto of every configured IKE proposal before its first IKE SA, and
a reload's new ones (xfrmctl.ike.crypto.prime, issue 15)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

import pytest
from daemon_helpers import BASE_PORT, make_daemon, write_config

from xfrmctl.daemon import core
from xfrmctl.ike.iana import KeId, TransformType
from xfrmctl.ike.transforms import Proposal

PORT = BASE_PORT + 970


def test_start_and_reload_prime_the_configured_proposals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    primed: list[Proposal] = []

    def record(proposals: Iterable[Proposal]) -> int:
        primed.extend(proposals)
        return 0

    def config(extra: str = "") -> Path:
        return write_config(
            tmp_path, "a", "127.0.0.1", "127.0.0.2", PORT, PORT + 2, "a", "b", conn_extra=extra
        )

    monkeypatch.setattr(core, "prime", record)

    async def run() -> None:
        daemon, handler, _ = await make_daemon(config())
        try:
            [spec] = daemon.engine.specs.values()
            assert primed == list(spec.ike_proposals)
            primed.clear()
            config("proposals: [aes128gcm16-prfsha256-ecp256]")
            await handler.reload()
            [spec] = daemon.engine.specs.values()
            assert primed == list(spec.ike_proposals)
            assert [t.id for t in primed[0].of_type(TransformType.KE)] == [KeId.ECP256]
        finally:
            daemon.stop_timeout = 0.0
            await daemon.stop()

    asyncio.run(run())
