"""`status --json` timing fields from a live daemon: each documented field carries a value."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from daemon_helpers import BASE_PORT, RecordingKernel, loopback_pair, make_daemon, no_progress


def test_ike_and_child_times_are_reported(tmp_path: Path) -> None:
    a, b = loopback_pair(
        tmp_path,
        BASE_PORT + 700,
        a_conn="rekey_time: 2h\nreauth_time: 3h\nrand_time: 60",
        a_child="rekey_time: 1h\nlife_time: 70m\nrand_time: 60",
    )

    async def scenario() -> None:
        da, ha, _ = await make_daemon(a)
        db, _, _ = await make_daemon(b)
        try:
            await asyncio.wait_for(ha.up("tun", None, no_progress), 20)
            (ike,) = (await ha.status(None)).ike_sas
            assert ike.established_at is not None
            assert abs(ike.established_at - datetime.now(UTC)) < timedelta(seconds=30)
            assert ike.rekey_in is not None and 7200 - 60 - 30 <= ike.rekey_in <= 7200
            assert ike.reauth_in is not None and 10800 - 60 - 30 <= ike.reauth_in <= 10800
            (child,) = ike.children
            assert child.rekey_in is not None and 3600 - 60 - 30 <= child.rekey_in <= 3600
            assert child.expires_in is not None and 4200 - 30 <= child.expires_in <= 4200
            assert child.offload == ""  # the recording kernel offloads nothing
        finally:
            await da.stop()
            await db.stop()

    asyncio.run(scenario())


class _OffloadingKernel(RecordingKernel):
    def offload_of(self, spi_in: int) -> str:
        return "eth9" if spi_in in self.sas else ""


def test_interface_offload_ipcomp_and_marks_are_reported(tmp_path: Path) -> None:
    a, b = loopback_pair(
        tmp_path,
        BASE_PORT + 720,
        a_conn="interface: {name: xfrm-t, if_id: 42}",
        a_child="ipcomp: yes\nmark_in: 0x2a/0xff\nmark_out: 43\nhw_offload: packet",
        b_child="ipcomp: yes",
    )

    async def scenario() -> None:
        da, ha, _ = await make_daemon(a, _OffloadingKernel())
        db, hb, _ = await make_daemon(b)
        try:
            await asyncio.wait_for(ha.up("tun", None, no_progress), 20)
            (ike,) = (await ha.status(None)).ike_sas
            (child,) = ike.children
            assert child.interface is not None
            assert (child.interface.name, child.interface.if_id) == ("xfrm-t", 42)
            assert (child.offload, child.offload_mode) == ("eth9", "packet")
            assert (child.mark_in, child.mark_out) == ("0x2a/0xff", "0x2b/0xffffffff")
            (peer,) = (await hb.status(None)).ike_sas
            (other,) = peer.children
            assert child.ipcomp is not None and other.ipcomp is not None
            assert child.ipcomp.transform == "deflate" and len(child.ipcomp.cpi_in) == 4
            assert (child.ipcomp.cpi_in, child.ipcomp.cpi_out) == (
                other.ipcomp.cpi_out,
                other.ipcomp.cpi_in,
            )
            # b: software, no interface, no marks.
            assert (other.offload, other.offload_mode, other.interface) == ("", "none", None)
            assert (other.mark_in, other.mark_out) == ("", "")
            text = other.model_dump_json()
            assert '"ipcomp":{"transform":"deflate"' in text
        finally:
            await da.stop()
            await db.stop()

    asyncio.run(scenario())


def test_every_ike_sa_state_is_shown_as_the_protocol_documents_it() -> None:
    """docs/control-protocol.md lists the IKE SA states a client may see; the engine's own
    (init-sent, half-open, dead, ...) are mapped onto them, none shown raw."""
    import re

    from xfrmctl.daemon.handler import IKE_STATES
    from xfrmctl.ike.exchanges import IkeState

    doc = (Path(__file__).resolve().parents[2] / "docs" / "control-protocol.md").read_text()
    line = next(x for x in doc.split("\n- ") if x.startswith("IKE SA `state`"))
    documented = set(re.findall(r"`([A-Z]+)`", line))
    assert {s.value for s in IkeState} == set(IKE_STATES)
    assert set(IKE_STATES.values()) <= documented, documented
