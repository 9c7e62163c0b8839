"""Tasks and reports as the gateway's tests write them: one place that knows the shapes,
so a test says only what matters to it.

A task follows a route of actors; `lifecycle` is the reports its envelope sends, in the
order they happen: at each actor received, processing, routed (the route leaves the actor
shifted to the next one), then x-sink's succeeded with the result.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from asya_gateway.tasks import Task, TaskStatus, progress_of
from asya_shared import wire

__all__ = ["EPOCH", "at", "lifecycle", "make_task", "report", "route_at", "unique_id"]

EPOCH = datetime(2024, 5, 1, tzinfo=UTC)
SINK = "x-sink"


def at(seconds: float) -> str:
    """An RFC 3339 time `seconds` after a fixed moment (UTC, microseconds, "Z")."""
    return (
        (EPOCH + timedelta(seconds=seconds))
        .isoformat(timespec="microseconds")
        .replace("+00:00", "Z")
    )


def unique_id(prefix: str = "task") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def route_at(actors: Sequence[str], hop: int) -> wire.Route:
    """The route of an envelope at actor number `hop` (len(actors): at x-sink)."""
    curr = actors[hop] if hop < len(actors) else SINK
    return {"prev": list(actors[:hop]), "curr": curr, "next": list(actors[hop + 1 :])}


def make_task(
    task_id: str | None = None,
    *,
    tenant: str = "acme",
    actors: Sequence[str] = ("a", "b", "c"),
    created: float = 0.0,
    created_at: str | None = None,
    **fields: Any,
) -> Task:
    route = route_at(actors, 0)
    when = created_at or at(created)
    values: dict[str, Any] = {
        "id": task_id or unique_id(),
        "tenant": tenant,
        "status": TaskStatus.PENDING,
        "route": route,
        "actor": route["curr"],
        "progress": progress_of(route),
        "created_at": when,
        "updated_at": when,
    }
    values.update(fields)
    return Task(**values)


def report(
    task_id: str,
    event: str,
    route: wire.Route,
    *,
    when: float = 1.0,
    attempt: int = 1,
    parent_id: str | None = None,
    **extra: Any,
) -> wire.HopReport:
    made: wire.HopReport = {
        "id": task_id,
        "parent_id": parent_id,
        "actor": route["curr"],
        "event": event,
        "route": route,
        "attempt": attempt,
        "at": at(when),
    }
    made.update(extra)  # type: ignore[typeddict-item]  # reason, error, result, events
    return made


def lifecycle(
    task_id: str,
    actors: Sequence[str] = ("a", "b", "c"),
    *,
    result: Any = None,
    start: float = 1.0,
) -> list[wire.HopReport]:
    """The reports of a task that goes through `actors` and succeeds, in order."""
    reports: list[wire.HopReport] = []
    when = start
    for hop in range(len(actors)):
        here = route_at(actors, hop)
        for event, route in (
            ("received", here),
            ("processing", here),
            ("routed", route_at(actors, hop + 1)),
        ):
            reports.append(report(task_id, event, route, when=when))
            when += 1
    done = route_at(actors, len(actors))
    reports.append(report(task_id, "succeeded", done, when=when, result=result))
    return reports
