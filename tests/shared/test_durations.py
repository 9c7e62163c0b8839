"""Days or a duration: how retentions and look-backs are written (`7d`, `36h`, `90`)."""

from __future__ import annotations

import pytest

from asya_shared import durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("7d", 7 * 86400.0), (" 1.5d ", 1.5 * 86400.0), ("36h", 36 * 3600.0), ("90", 90.0)],
)
def test_days_or_a_duration(text: str, seconds: float) -> None:
    assert durations.parse_days_or_duration(text) == seconds


@pytest.mark.parametrize("text", ["d", "-1d", "infd", "1e3d", "1dd", "soon"])
def test_what_is_neither_days_nor_a_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        durations.parse_days_or_duration(text)
