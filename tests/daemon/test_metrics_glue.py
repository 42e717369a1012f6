"""XfrmGlue.counters_all: a metrics scrape reads every pair's counters from one SA dump (the
in-memory kernel's), keyed by inbound SPI, and skips pairs the kernel no longer holds."""

from __future__ import annotations

import asyncio
from typing import Any

from glue_helpers import FakeKernel, glue_on, ready

from xfrmctl.daemon.kernel_glue import ChildCounters


def test_one_dump_for_every_pair() -> None:
    k = FakeKernel()
    dumps: list[int] = []
    real_dump = k.dump_raw

    def counting_dump(msg_type: int, *args: Any) -> Any:
        dumps.append(msg_type)
        return real_dump(msg_type, *args)

    k.dump_raw = counting_dump
    glue = glue_on(k)
    one, two, gone = ready(0x1001, 0x2001), ready(0x1002, 0x2002), ready(0x1003, 0x2003)

    async def scenario() -> dict[int, ChildCounters]:
        await glue.install_child(one)
        await glue.install_child(two)
        return await glue.counters_all([one, two, gone])

    found = asyncio.run(scenario())
    assert set(found) == {0x1001, 0x1002}, found
    assert len(dumps) == 1, dumps
    assert found[0x1001] == ChildCounters()  # the in-memory kernel counts nothing
