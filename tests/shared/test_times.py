"""asya_shared.times: RFC 3339 as Asya writes and reads it."""

from __future__ import annotations

import datetime

import pytest

from asya_shared import times

CET = datetime.timezone(datetime.timedelta(hours=1))


def test_written_in_utc_with_a_z_to_the_millisecond_by_default() -> None:
    moment = datetime.datetime(2026, 12, 7, 13, 0, 0, 123456, tzinfo=CET)
    assert times.rfc3339(moment) == "2026-12-07T12:00:00.123Z"
    assert times.rfc3339(moment, timespec="microseconds") == "2026-12-07T12:00:00.123456Z"


@pytest.mark.parametrize(
    "text", ["2026-12-07T12:00:00.123Z", "2026-12-07T13:00:00.123+01:00", "2026-12-07T12:00:00.123"]
)
def test_read_back_as_aware_utc_whatever_the_offset(text: str) -> None:
    parsed = times.parse_rfc3339(text)
    assert parsed == datetime.datetime(2026, 12, 7, 12, 0, 0, 123000, tzinfo=datetime.UTC)
    assert parsed.tzinfo is datetime.UTC


def test_not_a_time_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="soon"):
        times.parse_rfc3339("soon")
