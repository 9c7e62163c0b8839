"""What a sump record shows and what redriving it would send: pure decisions, no I/O, no clock.

`asya sump`, `asya redrive` and the gateway's sump page all decide here; asya_sump does the I/O.

A sump record is what x-sump stored (asya_shared.records). It comes in three shapes:

- failed at an actor (the handler raised, timed out, ran out of attempts or of time), handed
  on by x-sink: route {prev: [..., A, x-sink], curr: x-sump, next: [steps not yet run]},
  status.actor A, the payload as A received it. Redriven to A.
- unusable input or result, wrapped by A's sidecar (`reject`): route {prev: [A], curr: x-sump,
  next: []}, payload {"original": the message A received, "encoding"}. When that message is a
  whole envelope addressed to A (A's handler answered something unusable: InvalidResult,
  RouteViolation, OversizeResult), it is redriven to A as it came; what never parsed
  (ParseError), or arrived at the wrong actor (WrongActor), is refused.
- a result for an actor with no queue (UnknownActor): the sidecar kept only route.prev, so
  where it was going is lost; refused.

Anything failed at a crew actor (x-sink, x-sump, x-join, x-pause) is refused too: their
failures are not a handler's to retry (a join that gave up, a pause that expired).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from asya_shared import names, wire
from asya_shared.durations import parse_days_or_duration
from asya_shared.statuses import Phase, Reason, parse_timestamp, status, timestamp

REDRIVEN_FROM_HEADER = wire.REDRIVEN_FROM_HEADER
ERROR_WIDTH = 60  # characters of the error's first line shown in a table

# Reasons whose record wraps the original message (routing.reject) rather than an envelope.
_WRAPPED = frozenset(
    {
        Reason.PARSE_ERROR,
        Reason.WRONG_ACTOR,
        Reason.ROUTE_VIOLATION,
        Reason.INVALID_RESULT,
        Reason.OVERSIZE_RESULT,
    }
)
# Wrapped input that was a well-formed envelope for the actor: its handler answered badly.
_BAD_RESULT = frozenset({Reason.ROUTE_VIOLATION, Reason.INVALID_RESULT, Reason.OVERSIZE_RESULT})
_NEVER = datetime.datetime.min.replace(tzinfo=datetime.UTC)


@dataclass(frozen=True)
class Summary:
    """One sump record as `asya sump ls` lists it."""

    id: str
    actor: str
    reason: str
    attempt: int | None
    failed_at: str
    error: str
    route: Any

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "actor": self.actor,
            "reason": self.reason,
            "attempt": self.attempt,
            "failed_at": self.failed_at,
            "error": self.error,
            "route": self.route,
        }


@dataclass(frozen=True)
class Filters:
    actor: str | None = None
    reason: str | None = None
    since: datetime.datetime | None = None

    @property
    def empty(self) -> bool:
        return self.actor is None and self.reason is None and self.since is None


@dataclass(frozen=True)
class Redrive:
    """The envelope to send to `to`'s queue."""

    to: str
    envelope: dict[str, Any]


@dataclass(frozen=True)
class Refused:
    why: str


def summarize(record: Mapping[str, Any]) -> Summary:
    """The table row of a record; a field the record lacks shows as empty."""
    state = _status(record)
    attempt = state.get("attempt")
    return Summary(
        id=_text(record.get("id")),
        actor=_text(state.get("actor")),
        reason=_text(state.get("reason")),
        attempt=attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else None,
        failed_at=_text(state.get("updated_at")),
        error=error_line(state.get("error")),
        route=record.get("route"),
    )


def error_line(error: Any) -> str:
    """`Type: message`, first line only: what a table has room for."""
    if not isinstance(error, dict):
        return ""
    kind, message = _text(error.get("type")), _text(error.get("message"))
    text = f"{kind}: {message}" if kind and message else kind or message
    lines = text.splitlines()
    return lines[0] if lines else ""


def cut(text: str, width: int = ERROR_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def matches(summary: Summary, filters: Filters) -> bool:
    if filters.actor is not None and summary.actor != filters.actor:
        return False
    # Old records say RuntimeError where new ones say HandlerError: one filter finds both.
    wanted = wire.canonical_reason(filters.reason)
    if wanted is not None and wire.canonical_reason(summary.reason) != wanted:
        return False
    if filters.since is not None:
        failed = parse_timestamp(summary.failed_at)
        if failed is None or failed < filters.since:
            return False
    return True


def newest_first(summaries: Iterable[Summary]) -> list[Summary]:
    """By failure time, newest first; records without one last; ties by id."""
    by_id = sorted(summaries, key=lambda summary: summary.id)
    return sorted(by_id, key=failure_time, reverse=True)


def failure_time(summary: Summary) -> datetime.datetime:
    """When the record's envelope failed; the earliest time there is when it does not say."""
    return parse_timestamp(summary.failed_at) or _NEVER


def parse_since(text: str, *, now: datetime.datetime, name: str = "--since") -> datetime.datetime:
    """`--since`: a duration back from `now` (`30m`, `2h`, `1d`, seconds) or an RFC 3339 time.

    Raises ValueError saying which forms are accepted; it calls the value `name` (the CLI's
    option, the API's query parameter).
    """
    cleaned = text.strip()
    moment = parse_timestamp(cleaned) if "T" in cleaned or "-" in cleaned else None
    if moment is not None:
        return moment
    try:
        seconds = parse_days_or_duration(cleaned)
    except ValueError:
        raise ValueError(
            f"{name} {text!r} is neither a duration (30m, 2h, 1d, or seconds) nor an RFC 3339 "
            "time (2026-12-01T10:00:00Z)"
        ) from None
    if seconds < 0:
        raise ValueError(f"{name} {text!r} must not be negative")
    return now - datetime.timedelta(seconds=seconds)


def plan(record: Mapping[str, Any], *, now: datetime.datetime) -> Redrive | Refused:
    """The envelope that tries a sump record again, or why it cannot be.

    The envelope keeps the id, parent_id, payload and headers, and goes back to the actor that
    failed with the steps it had not run; its status is fresh (attempt 1, no deadline: a
    redrive is a new try) and the header `redriven-from` says what it is a retry of.
    """
    state = _status(record)
    actor, reason = state.get("actor"), state.get("reason")
    if not isinstance(actor, str) or not actor:
        return Refused("the record's status names no actor that failed")
    if actor in names.RESERVED:
        return Refused(f"it failed at the crew actor {actor}, which a redrive cannot retry")
    if reason == Reason.UNKNOWN_ACTOR:
        return _plan_unknown_actor(record, actor=actor, state=state, now=now)
    if reason in _WRAPPED:
        return _plan_wrapped(record, actor=actor, reason=reason, now=now)
    route = _route(record.get("route"))
    if route is None:
        return Refused("the record has no route: route must be {prev, curr, next} actor lists")
    prev, _, next_ = route
    if len(prev) < 2 or prev[-1] != names.SINK or prev[-2] != actor:
        return Refused(
            f"its route {prev!r} does not end with {actor!r} then {names.SINK!r}, so where to "
            "resume is unknown"
        )
    if not isinstance(record.get("id"), str) or not record.get("id"):
        return Refused("the record has no id")
    if "payload" not in record:
        return Refused("the record has no payload")
    envelope = _envelope(record, prev=prev[:-2], actor=actor, next_=next_, state=state, now=now)
    return Redrive(actor, envelope)


def _plan_unknown_actor(
    record: Mapping[str, Any], *, actor: str, state: Mapping[str, Any], now: datetime.datetime
) -> Redrive | Refused:
    """`actor` made a result for an actor whose queue did not exist; the sidecar kept where it
    was headed in route.next. It goes there now: the actor may have been deployed since (if
    not, the send fails and the record stays)."""
    route = _route(record.get("route"))
    if route is None or not route[2]:
        return Refused(
            "it was a result for an actor with no queue, and the record does not say which "
            "(written before 0.18); deploy the actor and send the work again"
        )
    prev, _, (destination, *rest) = route
    if destination in names.RESERVED:
        return Refused(f"it was headed for the crew actor {destination}, which is not redriven")
    if not isinstance(record.get("id"), str) or not record.get("id") or "payload" not in record:
        return Refused("the record has no id or no payload")
    envelope = _envelope(record, prev=prev, actor=destination, next_=rest, state=state, now=now)
    envelope["headers"][REDRIVEN_FROM_HEADER]["actor"] = actor
    return Redrive(destination, envelope)


def _plan_wrapped(
    record: Mapping[str, Any], *, actor: str, reason: str, now: datetime.datetime
) -> Redrive | Refused:
    if reason == Reason.PARSE_ERROR:
        return Refused(
            "the message it received was not a usable envelope (ParseError); fix the producer "
            "and send it again"
        )
    if reason == Reason.WRONG_ACTOR:
        return Refused(
            f"the message was addressed to another actor but arrived at {actor}'s queue "
            "(WrongActor); fix the producer and send it again"
        )
    assert reason in _BAD_RESULT
    original = _original(record.get("payload"))
    if isinstance(original, Refused):
        return original
    route = _route(original.get("route"))
    if route is None or route[1] != actor:
        return Refused(f"the original message is not an envelope addressed to {actor}")
    if not isinstance(original.get("id"), str) or "payload" not in original:
        return Refused("the original message has no id or no payload")
    prev, _, next_ = route
    # The wrapper's headers are the original's with x-sump's trace context: keep the latter.
    merged = {**_headers(original), **_headers(record)}
    source = {**original, "headers": merged}
    envelope = _envelope(source, prev=prev, actor=actor, next_=next_, state=_status(record),
                         now=now)  # fmt: skip
    return Redrive(actor, envelope)


def _original(payload: Any) -> dict[str, Any] | Refused:
    """The envelope a sidecar wrapped for x-sump (its original bytes, decoded and parsed)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("original"), str):
        return Refused("the record does not carry the original message")
    if payload.get("truncated"):
        return Refused("the original message was cut to fit the broker, so it cannot be resent")
    text: str = payload["original"]
    if payload.get("encoding") == "base64":
        try:
            text = base64.b64decode(text, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return Refused("the original message is not UTF-8 JSON")
    try:
        original = json.loads(text)
    except ValueError:
        return Refused("the original message is not valid JSON")
    if not isinstance(original, dict):
        return Refused("the original message is not a JSON object")
    return original


def _envelope(
    source: Mapping[str, Any],
    *,
    prev: Sequence[str],
    actor: str,
    next_: Sequence[str],
    state: Mapping[str, Any],
    now: datetime.datetime,
) -> dict[str, Any]:
    redriven_from = {
        "actor": actor,
        "reason": state.get("reason"),
        "failed_at": state.get("updated_at"),
        "redriven_at": timestamp(now),
        "attempt": state.get("attempt"),
    }
    return {
        "id": source["id"],
        "parent_id": source.get("parent_id"),
        "route": {"prev": list(prev), "curr": actor, "next": list(next_)},
        "headers": {**_headers(source), REDRIVEN_FROM_HEADER: redriven_from},
        # As `asya send` starts an envelope: attempt 1, no reason, error or deadline.
        "status": status(None, phase=Phase.PENDING, actor=actor, now=now),
        "payload": source["payload"],
    }


def _route(raw: Any) -> tuple[list[str], str, list[str]] | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("curr"), str):
        return None
    prev, next_ = raw.get("prev") or [], raw.get("next") or []
    for steps in (prev, next_):
        if not isinstance(steps, list) or not all(isinstance(step, str) for step in steps):
            return None
    for step in (raw["curr"], *next_):
        try:
            names.check_actor_name(step)
        except names.InvalidName:
            return None
    return list(prev), raw["curr"], list(next_)


def _status(record: Mapping[str, Any]) -> Mapping[str, Any]:
    state = record.get("status")
    return state if isinstance(state, dict) else {}


def _headers(fields: Mapping[str, Any]) -> dict[str, Any]:
    headers = fields.get("headers")
    return dict(headers) if isinstance(headers, dict) else {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
