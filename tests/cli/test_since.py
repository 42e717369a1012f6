"""An IKE SA's age in `up`/`status` output: the datetime-free reading of the daemon's UTC
times (`commands._age`) agrees with datetime's, and leaves every other form to it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from xfrmctl import commands


class _Stamp(BaseModel):
    at: datetime


def _as_daemon_sends(when: datetime) -> str:
    """The text the daemon's status models put on the wire for a time."""
    text = _Stamp(at=when).model_dump(mode="json")["at"]
    assert isinstance(text, str)
    return text


@given(st.datetimes(min_value=datetime(1, 1, 2), timezones=st.just(UTC)))
def test_the_fast_reading_agrees_with_datetime(when: datetime) -> None:
    stamp = _as_daemon_sends(when)
    now = datetime(2026, 12, 6, 10, 0, tzinfo=UTC).timestamp() + 0.25
    fast = commands._age(stamp, now)
    slow = commands._age_by_datetime(stamp, now)
    assert fast is not None and slow is not None
    assert abs(fast - slow) < 1e-3 * max(1.0, abs(slow) / 1e9)


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-12-06T10:14:18+00:00",
        "2026-12-06T10:14:18.123Z",  # three digits: datetime's to read
        "2026-12-06T10:14:18.123456+01:00",
        "2026-02-29T10:14:18Z",  # not a leap year
        "2026-13-01T00:00:00Z",
        "2026-12-06 10:14:18Z",
        "2026-12-06T24:00:00Z",
        "２026-12-06T10:14:18Z",
        "yesterday",
        "",
    ],
)
def test_other_forms_are_left_to_datetime(stamp: str) -> None:
    assert commands._age(stamp, 0.0) is None


def test_since_reads_both_forms_and_keeps_what_it_cannot_read() -> None:
    ago = datetime.now(UTC) - timedelta(hours=1, minutes=2, seconds=30)
    assert commands._since(_as_daemon_sends(ago)) == "1h2m ago"
    assert commands._since(ago.isoformat()) == "1h2m ago"  # +00:00: through datetime
    assert commands._since("yesterday") == "yesterday"


def test_format_duration() -> None:
    assert commands.format_duration(5400) == "1h30m"
    assert commands.format_duration(45) == "45s"
    assert commands.format_duration(90061) == "1d1h"
    assert commands.format_duration(0) == "0s"
