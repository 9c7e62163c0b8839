"""Tasks and how reports move them: pure data and pure decisions, no I/O.

A task is one submitted envelope, followed from submission to its terminal status; its id
is the envelope id. Sidecars and the crew send reports (asya_shared.wire.HopReport); `advance`
decides what a report does to a task. Status only moves forward along the ladder

    pending < running < paused < succeeded | failed | canceled

so a late, duplicated or out-of-order report changes nothing, and one terminal status never
replaces another.

Progress, defined once (docs/gateway.md repeats it):

    progress = len(route.prev) / (len(route.prev) + 1 + len(route.next))   while not terminal
    progress = 1.0                                                         once succeeded
    progress = the same formula on the route of the failed or canceled report that ended it
    progress stays where it was                             once canceled through the API

that is, the share of the route's actors already done, counting the current one as not done.
A handler that rewrites `route.next` changes the denominator, so progress can step back when
the route grows; it never goes below 0 or above 1.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from asya_shared import wire

__all__ = [
    "TERMINAL",
    "Task",
    "TaskStatus",
    "advance",
    "cancel",
    "position",
    "progress_of",
    "rank",
    "status_of_report",
]


class TaskStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


TERMINAL = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELED})
_RANK = {
    TaskStatus.PENDING: 0,
    TaskStatus.RUNNING: 1,
    TaskStatus.PAUSED: 2,
    TaskStatus.SUCCEEDED: 3,
    TaskStatus.FAILED: 3,
    TaskStatus.CANCELED: 3,
}


def rank(status: TaskStatus) -> int:
    return _RANK[status]


@dataclass(frozen=True)
class Task:
    id: str
    tenant: str  # "" when auth is off
    status: TaskStatus
    route: wire.Route
    actor: str | None  # the actor it is at (route.curr), or was at when it ended
    progress: float
    created_at: str  # RFC 3339
    updated_at: str  # RFC 3339
    deadline_at: str | None = None
    result: Any = None  # the final payload once succeeded
    error: wire.ErrorDetails | None = None
    reason: str | None = None
    flow: str | None = None
    # The `position` of the last report applied: later reports must stand further on.
    position: tuple[int, int, int] = (0, 0, 0)
    headers: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The public shape (GET /v1/tasks/<id>)."""
        return {
            "id": self.id,
            "status": str(self.status),
            "route": dict(self.route),
            "actor": self.actor,
            "progress": self.progress,
            "result": self.result,
            "error": self.error,
            "reason": self.reason,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "deadline_at": self.deadline_at,
        }

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


def progress_of(route: wire.Route) -> float:
    done = len(route["prev"])
    total = done + 1 + len(route["next"])
    return done / total


# What each report event means for the task's status.
_EVENT_STATUS = {
    "received": TaskStatus.RUNNING,
    "processing": TaskStatus.RUNNING,
    "routed": TaskStatus.RUNNING,
    "retrying": TaskStatus.RUNNING,
    "paused": TaskStatus.PAUSED,
    "succeeded": TaskStatus.SUCCEEDED,
    "failed": TaskStatus.FAILED,
    "canceled": TaskStatus.CANCELED,
}
# Within one hop (one actor visit), later events of the same visit.
_EVENT_ORDER = {"received": 0, "processing": 1, "retrying": 2, "routed": 3, "paused": 4}


def status_of_report(report: wire.HopReport) -> TaskStatus | None:
    """The task status a report implies; None for side events (FLY), which move nothing."""
    return _EVENT_STATUS.get(report["event"])


def position(report: wire.HopReport) -> tuple[int, int, int]:
    """Where a report stands in the task's life: (hop, attempt, event within the attempt)."""
    if report["event"] == "routed":
        # Sent with the route as sent (route.prev already holds the sender), so it stands
        # at the start of the next hop: before the next actor's first report, whatever
        # attempt the sender was on.
        return (len(report["route"]["prev"]), 0, 0)
    return (
        len(report["route"]["prev"]),
        report.get("attempt", 1),
        _EVENT_ORDER.get(report["event"], 0),
    )


def advance(task: Task, report: wire.HopReport) -> Task | None:
    """The task after `report`, or None when the report changes nothing (stale, duplicate,
    a side event, or a report about another envelope: a fan-out child never finishes its
    parent).

    Reports are ordered by `position`: a later hop (more actors in route.prev) wins, then a
    later attempt at the same actor, then a later event of the attempt (received <
    processing < retrying < paused); `routed` carries the route as sent and stands before
    everything the next actor reports. Any terminal report wins over every
    non-terminal one, and the first terminal report is final.
    """
    if task.terminal or report["id"] != task.id:
        return None
    status = status_of_report(report)
    if status is None:
        return None
    route = report["route"]
    here = position(report)
    if status in TERMINAL:
        return dataclasses.replace(
            task,
            status=status,
            route=route,
            actor=route["curr"],
            # From the report, not the task: the same final state in whatever order the
            # reports came (a failure that overtook its actor's `processing` report).
            progress=1.0 if status is TaskStatus.SUCCEEDED else progress_of(route),
            updated_at=report["at"],
            result=report.get("result") if status is TaskStatus.SUCCEEDED else None,
            error=report.get("error"),
            reason=report.get("reason"),
            position=max(here, task.position),
        )
    if task.status is not TaskStatus.PENDING and here <= task.position:
        return None
    return dataclasses.replace(
        task,
        status=status,
        route=route,
        actor=route["curr"],
        progress=progress_of(route),
        updated_at=report["at"],
        reason=report.get("reason"),
        error=report.get("error"),
        position=here,
    )


def cancel(task: Task, *, at: str) -> Task | None:
    """The canceled task, or None when it already ended (canceling twice is not a change)."""
    if task.terminal:
        return None
    return dataclasses.replace(task, status=TaskStatus.CANCELED, updated_at=at, reason="Canceled")
