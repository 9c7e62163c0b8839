"""Durations as people write them in manifests: `30`, `2.5`, `250ms`, `30s`, `5m`, `1h30m`."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str | float | int) -> float:
    """Seconds in `text`; a bare number means seconds. Raises ValueError naming the input."""
    if isinstance(text, bool):
        raise ValueError(f"duration {text!r} is not a number or a string like '30s'")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        cleaned = text.strip()
        try:
            seconds = float(cleaned)
        except ValueError:
            seconds = _parse_units(cleaned)
    if seconds < 0 or seconds != seconds:  # negative or NaN
        raise ValueError(f"duration {text!r} must be zero or positive")
    return seconds


DAY_S = 24 * 3600.0


def parse_days_or_duration(text: str) -> float:
    """Seconds in `text`: days (`7d`, `1.5d`), which spans of days such as a retention or a
    look-back are written in, or anything `parse_duration` reads. Raises ValueError."""
    cleaned = text.strip()
    days = cleaned[:-1]
    if cleaned.endswith("d") and days.replace(".", "", 1).isdigit():
        return float(days) * DAY_S
    return parse_duration(cleaned)


def _parse_units(text: str) -> float:
    position, total = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position != len(text) or not text:
        raise ValueError(
            f"duration {text!r} is not understood; write seconds (30) or units like "
            "250ms, 30s, 5m, 1h30m"
        )
    return total


def positive_duration_from_env(
    environ: Mapping[str, str], name: str, default: float, *, maximum: float, limit: str
) -> float:
    """The duration in `environ[name]`, or `default` when unset; more than 0, at most `maximum`.

    `limit` says in words where `maximum` comes from, for the error message.
    """
    raw = (environ.get(name) or "").strip()
    if not raw:
        return default
    try:
        seconds = parse_duration(raw)
    except ValueError as exc:
        raise ValueError(f"{name}={raw!r} is not a duration: {exc}") from exc
    if not 0 < seconds <= maximum or math.isinf(seconds):
        raise ValueError(f"{name}={raw!r} is out of range: {limit}")
    return seconds
