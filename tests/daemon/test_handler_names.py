"""`up`/`down NAME/CHILD` with a child the connection does not have is an error naming it and
the known children (down used to answer ok with zero deletions)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from daemon_helpers import BASE_PORT, make_daemon, no_progress, write_config

from xfrmctl.daemon.control import ControlError


@pytest.mark.parametrize("command", ["up", "down"])
def test_unknown_child_is_an_error(tmp_path: Path, command: str) -> None:
    port = BASE_PORT + 500 + (0 if command == "up" else 10)
    cfg = write_config(tmp_path, "a", "127.0.0.1", "127.0.0.2", port, port + 2, "a.x", "b.x")

    async def scenario() -> None:
        daemon, handler, _ = await make_daemon(cfg)
        try:
            action = handler.up if command == "up" else handler.down
            with pytest.raises(ControlError) as info:
                await action("tun", "nope", no_progress)
            assert info.value.code == "UNKNOWN_CHILD"
            assert "has no child 'nope' (children: host)" in info.value.message
            with pytest.raises(ControlError) as info:
                await action("nosuch", None, no_progress)
            assert info.value.code == "UNKNOWN_CONNECTION"
        finally:
            await daemon.stop()

    asyncio.run(scenario())
