"""A task as a table row and back, times as sortable numbers, and the list cursor: the
conversions both stores share (pure).

JSON columns travel as JSON text both ways (SQLite has no JSON type; on PostgreSQL the SQL
casts text to jsonb), so one encoder decides what is stored. PostgreSQL's jsonb cannot hold
the character U+0000: `dump_json` replaces it with U+FFFD in the text of strings and keys
rather than let one odd result fail the whole batch of reports it came in.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from asya_gateway.tasks import Task, TaskStatus
from asya_shared import wire

__all__ = [
    "COLUMNS",
    "INSERT_COLUMNS",
    "JSON_COLUMNS",
    "MUTABLE_COLUMNS",
    "InvalidCursor",
    "decode_cursor",
    "dump_json",
    "encode_cursor",
    "from_row",
    "insert_row",
    "load_json",
    "micros",
    "mutable_values",
    "status_data",
    "to_row",
]

# The order of the tasks table's columns in `to_row` (and in INSERTs).
COLUMNS = (
    "id",
    "tenant",
    "status",
    "route",
    "actor",
    "progress",
    "created_at",
    "created_us",
    "updated_at",
    "updated_us",
    "deadline_at",
    "result",
    "error",
    "reason",
    "flow",
    "pos_hop",
    "pos_attempt",
    "pos_event",
    "headers",
    "pause",
    "joining",
)
JSON_COLUMNS = frozenset({"route", "result", "error", "headers", "pause", "joining"})
# A new row also holds its envelope until published (schema version 2; outbox.py).
INSERT_COLUMNS = (*COLUMNS, "outbox", "outbox_us")
# What a report or a cancel may change (everything but identity, creation and the request).
MUTABLE_COLUMNS = (
    "status",
    "route",
    "actor",
    "progress",
    "updated_at",
    "updated_us",
    "result",
    "error",
    "reason",
    "pos_hop",
    "pos_attempt",
    "pos_event",
    "pause",
    "joining",
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_NUL = "\x00"


class InvalidCursor(ValueError):
    """A list cursor this store did not hand out (the API answers 400)."""


def micros(rfc3339: str) -> int:
    """Microseconds since the epoch of an RFC 3339 time (no offset: UTC)."""
    try:
        moment = datetime.fromisoformat(rfc3339)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{rfc3339!r} is not an RFC 3339 time") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _ONE_US


def dump_json(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    # json.dumps writes U+0000 as the escape \u0000; only then is the slow path needed.
    if "\\u0000" in text:
        text = json.dumps(_without_nul(value), ensure_ascii=False, separators=(",", ":"))
    return text


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace(_NUL, "\ufffd")
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    if isinstance(value, dict):
        return {_without_nul(key): _without_nul(item) for key, item in value.items()}
    return value


def load_json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _nullable_json(value: Any) -> str | None:
    return None if value is None else dump_json(value)


def to_row(task: Task) -> tuple[Any, ...]:
    """The task's values in COLUMNS order."""
    hop, attempt, event = task.position
    return (
        task.id,
        task.tenant,
        str(task.status),
        dump_json(task.route),
        task.actor,
        float(task.progress),
        task.created_at,
        micros(task.created_at),
        task.updated_at,
        micros(task.updated_at),
        task.deadline_at,
        _nullable_json(task.result),
        _nullable_json(task.error),
        task.reason,
        task.flow,
        hop,
        attempt,
        event,
        dump_json(task.headers),
        _nullable_json(task.pause),
        _nullable_json(task.join),
    )


def insert_row(task: Task, envelope: str | None) -> tuple[Any, ...]:
    """The new task's values in INSERT_COLUMNS order; `envelope` waits in the outbox."""
    since = None if envelope is None else micros(task.created_at)
    return (*to_row(task), envelope, since)


def mutable_values(task: Task) -> tuple[Any, ...]:
    """The task's values in MUTABLE_COLUMNS order."""
    row = dict(zip(COLUMNS, to_row(task), strict=True))
    return tuple(row[name] for name in MUTABLE_COLUMNS)


def from_row(row: Mapping[str, Any]) -> Task:
    return Task(
        id=row["id"],
        tenant=row["tenant"],
        status=TaskStatus(row["status"]),
        route=cast(wire.Route, load_json(row["route"])),
        actor=row["actor"],
        progress=float(row["progress"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        deadline_at=row["deadline_at"],
        result=load_json(row["result"]),
        error=cast("wire.ErrorDetails | None", load_json(row["error"])),
        reason=row["reason"],
        flow=row["flow"],
        position=(int(row["pos_hop"]), int(row["pos_attempt"]), int(row["pos_event"])),
        headers=load_json(row["headers"]),
        pause=load_json(row["pause"]),
        join=load_json(row["joining"]),
    )


def status_data(task: Task) -> dict[str, Any]:
    """A status event's data: what SSE sends as `event: status` (with the pause while
    paused, and x-join's part counts while it waits)."""
    data: dict[str, Any] = {
        "status": str(task.status),
        "actor": task.actor,
        "progress": task.progress,
    }
    if task.pause is not None:
        data["pause"] = task.pause
    if task.join is not None:
        data["join"] = task.join
    return data


def encode_cursor(created_us: int, task_id: str) -> str:
    """An opaque cursor for the page after the task (created_us, task_id)."""
    raw = json.dumps([created_us, task_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """The (created_us, task_id) an `encode_cursor` cursor holds; InvalidCursor otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_us, task_id = json.loads(raw)
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise _invalid(cursor) from exc
    if type(created_us) is not int or not isinstance(task_id, str):
        raise _invalid(cursor)
    return created_us, task_id


def _invalid(cursor: str) -> InvalidCursor:
    return InvalidCursor(
        f"cursor {cursor[:40]!r} is not one this gateway handed out: pass the next_cursor "
        "of the previous page as it was, or leave it out for the first page"
    )
