"""The daemon keeps the last failure per connection for `explain`: recorded with its diagnosis,
replaced by a newer one, cleared by success, and only for configured connections."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path

import pytest
from daemon_helpers import BASE_PORT, make_daemon, no_progress, write_config

from xfrmctl.daemon.control import ControlError
from xfrmctl.daemon.failures import FailureLog
from xfrmctl.ike.events import NegotiationFailed, Offer

PORT = BASE_PORT + 800
WEAK = "proposals: [aes128-sha256-modp3072]"


def configs(tmp: Path, a_extra: str) -> tuple[Path, Path]:
    a = write_config(
        tmp,
        "a",
        "127.0.0.1",
        "127.0.0.2",
        PORT,
        PORT + 2,
        "a.example",
        "b.example",
        conn_extra=a_extra,
    )
    b = write_config(tmp, "b", "127.0.0.2", "127.0.0.1", PORT + 2, PORT, "b.example", "a.example")
    return a, b


def test_failure_is_kept_explained_and_cleared_by_success(tmp_path: Path) -> None:
    a_cfg, b_cfg = configs(tmp_path, WEAK)

    async def scenario() -> None:
        da, ha, _ = await make_daemon(a_cfg)
        db, hb, _ = await make_daemon(b_cfg)
        try:
            quiet = await ha.explain("tun")
            assert quiet["failure"] is None and "no failed negotiation" in quiet["text"][0]
            with pytest.raises(ControlError) as err:
                await asyncio.wait_for(ha.up("tun", None, no_progress), 20)
            shown = "\n".join(err.value.details["diagnosis"])  # what `up` prints
            assert "the peer accepted none of our IKE proposals" in shown, shown
            mine = (await ha.explain("tun"))["failure"]
            assert (mine["code"], mine["role"], mine["child"]) == (
                "NO_PROPOSAL_CHOSEN",
                "initiator",
                None,
            )
            assert "\n".join(mine["text"][1:]) == shown
            theirs = (await hb.explain("tun"))["failure"]
            assert theirs["role"] == "responder", theirs
            assert "add `aes128-sha256-modp3072` to `connections.tun.proposals`" in "\n".join(
                theirs["suggestions"]
            )
            # The fix from the diagnosis, applied on b; success clears both records.
            text = b_cfg.read_text().replace(
                "    psk_file:", "    proposals: [aes128-sha256-modp3072]\n    psk_file:"
            )
            b_cfg.write_text(text)
            assert (await hb.reload())["changed"] == ["tun"]
            await asyncio.wait_for(ha.up("tun", None, no_progress), 20)
            assert (await ha.explain("tun"))["failure"] is None
            assert (await hb.explain("tun"))["failure"] is None
            with pytest.raises(ControlError) as unknown:
                await ha.explain("nope")
            assert unknown.value.code == "UNKNOWN_CONNECTION" and "tun" in unknown.value.message
        finally:
            await da.stop()
            await db.stop()

    asyncio.run(scenario())


def _failed(conn: str, reason: str, child: str | None = None) -> NegotiationFailed:
    remote = (ipaddress.ip_address("192.0.2.2"), 500)
    return NegotiationFailed(conn, 1, child, reason, Offer(), Offer(), remote, True)


def test_one_record_per_connection_newest_wins() -> None:
    log = FailureLog()
    known = {"tun", "other"}
    log.record(_failed("tun", "NO_PROPOSAL_CHOSEN"), known)
    log.record(_failed("tun", "TS_UNACCEPTABLE", "net"), known)
    log.record(_failed("stranger", "NO_PROPOSAL_CHOSEN"), known)  # not configured: not kept
    assert len(log) == 1
    last = log.get("tun")
    assert last is not None and last.diagnosis.code == "TS_UNACCEPTABLE"
    log.succeeded("tun")  # the IKE SA came up: a child's failure stays
    assert log.get("tun") is not None
    log.succeeded("tun", "net")
    assert log.get("tun") is None
    log.record(_failed("other", "NO_PROPOSAL_CHOSEN"), known)
    log.forget_except({"tun"})  # a reload removed it
    assert log.get("other") is None and len(log) == 0


def test_a_diagnosis_bug_still_records_the_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    import xfrmctl.ike.diagnosis as diagnosis_module  # what failures.py imports when it fails

    def broken(event: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(diagnosis_module, "diagnose", broken)
    log = FailureLog()
    diagnosis = log.record(_failed("tun", "TS_UNACCEPTABLE", "net"), {"tun"})
    assert (diagnosis.code, diagnosis.child, diagnosis.summary) == (
        "TS_UNACCEPTABLE",
        "net",
        "TS_UNACCEPTABLE",
    )
    assert log.get("tun") is not None
