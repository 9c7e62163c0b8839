"""Fan-in: the headers that tie the parts of a fan-out to the x-join that gathers them, and
the pure decisions about them. Pure: no I/O, no clock (callers pass times in).

A handler fans out by returning N results. When the route ahead of those results holds an
x-join that no enclosing join has claimed yet, the sidecar opens a join (docs/patterns.md):

    x-asya-join        optional, set by the splitting handler: {"into", "timeout", "policy"}
    x-asya-join-part   on every part: a list of levels, innermost last (nested joins push)
                       {"origin", "index", "count", "into", "policy", "deadline_at"}
    x-asya-join-open   on the opener, the one extra message that carries the origin's own
                       payload (the base) and route to x-join: {"origin", "count", "into",
                       "policy", "deadline_at"}

The innermost open level is closed by the first x-join ahead; enclosing levels by the later
ones. So a level opened while `depth` levels are open is closed by the x-join at position
(x-joins ahead - depth) among those ahead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from asya_shared import names, pointers
from asya_shared.durations import parse_duration

__all__ = [
    "DEFAULT_INTO",
    "DEFAULT_TIMEOUT_S",
    "FORWARDED_HEADER",
    "JOIN_INCOMPLETE",
    "MAX_PARTS",
    "OPEN_HEADER",
    "OPTIONS_HEADER",
    "PART_HEADER",
    "POLICIES",
    "InvalidJoin",
    "Level",
    "Options",
    "closing_join",
    "levels",
    "opened",
    "parse_options",
]

OPTIONS_HEADER = "x-asya-join"
PART_HEADER = "x-asya-join-part"
OPEN_HEADER = "x-asya-join-open"
# Set by x-sink on a failed or canceled part it hands to x-join, so that x-join failing on
# that part in turn does not send it round again.
FORWARDED_HEADER = "x-asya-join-forwarded"

DEFAULT_INTO = "/results"
DEFAULT_TIMEOUT_S = 600.0
FAIL = "fail"
PARTIAL = "partial"
POLICIES = (FAIL, PARTIAL)
MAX_PARTS = 10_000
JOIN_INCOMPLETE = "JoinIncomplete"


class InvalidJoin(ValueError):
    """A join header or a fan-out that cannot be joined; the message names the header key."""


@dataclass(frozen=True)
class Options:
    into: str = DEFAULT_INTO
    timeout_s: float = DEFAULT_TIMEOUT_S
    policy: str = FAIL


def parse_options(raw: object) -> Options:
    """The options a splitting handler set in `x-asya-join` (None: the defaults)."""
    if raw is None:
        return Options()
    where = OPTIONS_HEADER
    if not isinstance(raw, Mapping):
        raise InvalidJoin(
            f"header {where} must be an object like "
            '{"into": "/results", "timeout": "10m", "policy": "fail"}, not ' + repr(raw)
        )
    unknown = sorted(set(raw) - {"into", "timeout", "policy"})
    if unknown:
        raise InvalidJoin(f"header {where} has unknown keys {unknown}: use into, timeout, policy")
    into = raw.get("into", DEFAULT_INTO)
    try:
        pointers.parse(into)
    except pointers.InvalidPointer as exc:
        raise InvalidJoin(f"header {where}.into: {exc}") from None
    timeout = raw.get("timeout", DEFAULT_TIMEOUT_S)
    try:
        seconds = parse_duration(timeout)
    except (ValueError, TypeError, AttributeError) as exc:
        raise InvalidJoin(f"header {where}.timeout: {exc}") from None
    if seconds <= 0 or math.isinf(seconds):
        raise InvalidJoin(f"header {where}.timeout must be more than 0 seconds, not {timeout!r}")
    policy = raw.get("policy", FAIL)
    if policy not in POLICIES:
        raise InvalidJoin(
            f"header {where}.policy is {policy!r}; use 'fail' (the joined envelope fails "
            "with JoinIncomplete) or 'partial' (null for each missing part)"
        )
    return Options(into=into, timeout_s=seconds, policy=policy)


@dataclass(frozen=True)
class Level:
    """One open join, as a part carries it."""

    origin: str
    index: int
    count: int
    into: str
    policy: str
    deadline_at: str  # RFC 3339

    def to_json(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "index": self.index,
            "count": self.count,
            "into": self.into,
            "policy": self.policy,
            "deadline_at": self.deadline_at,
        }

    def opener_header(self) -> dict[str, Any]:
        opened = self.to_json()
        del opened["index"]
        return opened


def levels(headers: Mapping[str, Any]) -> list[Level]:
    """The join levels a part carries, outermost first; [] for an envelope in no join."""
    raw = headers.get(PART_HEADER)
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidJoin(f"header {PART_HEADER} must be a list of join levels, not {raw!r}")
    return [_level(item, f"{PART_HEADER}[{i}]", indexed=True) for i, item in enumerate(raw)]


def opened(headers: Mapping[str, Any]) -> Level | None:
    """The join an opener opens (index -1), or None when the envelope is no opener."""
    raw = headers.get(OPEN_HEADER)
    return None if raw is None else _level(raw, OPEN_HEADER, indexed=False)


def _level(raw: Any, where: str, *, indexed: bool) -> Level:
    if not isinstance(raw, Mapping):
        raise InvalidJoin(f"header {where} must be an object, not {raw!r}")
    origin = raw.get("origin")
    if not isinstance(origin, str) or not origin:
        raise InvalidJoin(f"header {where}.origin must be the id the parts came from")
    count = _whole(raw.get("count"))
    if count is None or not 1 <= count <= MAX_PARTS:
        raise InvalidJoin(f"header {where}.count must be a whole number 1-{MAX_PARTS}")
    index = _whole(raw.get("index")) if indexed else -1
    if index is None or (indexed and not 0 <= index < count):
        raise InvalidJoin(f"header {where}.index must be a whole number 0-{count - 1}")
    into, policy, deadline = raw.get("into"), raw.get("policy"), raw.get("deadline_at")
    if not isinstance(into, str) or not isinstance(policy, str) or policy not in POLICIES:
        raise InvalidJoin(f"header {where} lacks into or policy")
    if not isinstance(deadline, str):
        raise InvalidJoin(f"header {where} lacks deadline_at")
    return Level(origin, index, count, into, policy, deadline)


def _whole(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def closing_join(ahead: Sequence[str], depth: int) -> int | None:
    """Where, in the actors `ahead` of a fan-out's results, the x-join that will close a new
    level stands; None when every x-join ahead already belongs to the `depth` open levels
    (the fan-out opens no join)."""
    positions = [i for i, actor in enumerate(ahead) if actor == names.JOIN]
    unclaimed = len(positions) - depth
    if unclaimed <= 0:
        return None
    return positions[unclaimed - 1]
