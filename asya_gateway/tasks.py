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
    progress = done / total          while x-join waits for the parts of the task's fan-out
                                                                     for `total` parts

that is, the share of the route's actors already done, counting the current one as not done
(x-join's share grows with the parts it holds).

A handler that rewrites `route.next` changes the denominator, so progress can step back when
the route grows; it never goes below 0 or above 1.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from asya_shared import wire
from asya_shared.statuses import parse_timestamp

__all__ = [
    "TERMINAL",
    "Task",
    "TaskStatus",
    "advance",
    "cancel",
    "expire",
    "pause",
    "position",
    "progress_of",
    "rank",
    "resume",
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
    # While paused: {"prompt", "fields", "paused_at", "expires_at"} (asya_shared.pauses).
    pause: dict[str, Any] | None = None
    # While x-join waits for the parts of a fan-out: {"done", "total"}.
    join: dict[str, int] | None = None

    def to_json(self) -> dict[str, Any]:
        """The public shape (GET /v1/tasks/<id>); `pause` and `join` only while they hold."""
        shape = {
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
        if self.pause is not None:
            shape["pause"] = self.pause
        if self.join is not None:
            shape["join"] = self.join
        return shape

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
    "joining": TaskStatus.RUNNING,
    "succeeded": TaskStatus.SUCCEEDED,
    "failed": TaskStatus.FAILED,
    "canceled": TaskStatus.CANCELED,
}
# Within one hop (one actor visit), later events of the same visit.
_EVENT_ORDER = {"received": 0, "processing": 1, "retrying": 2, "routed": 3, "paused": 4}
# A pause stored through the internal pause endpoint stands where x-pause's "paused" would.
PAUSED_EVENT = _EVENT_ORDER["paused"]
# x-join's "joining" reports stand after everything x-join's sidecar reports, the one with
# more parts later (5 + done), so a late count never replaces a newer one.
_JOINING_BASE = 5


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
    if report["event"] == "joining":
        done, _total = _join_counts(report)
        return (len(report["route"]["prev"]), 1, _JOINING_BASE + done)
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
    non-terminal one, and the first terminal report is final, but for one thing: a failed
    task takes up a redrive of its envelope made after it failed (`takes_up_redrive`).
    """
    if report["id"] != task.id:
        return None
    if task.terminal:
        if not takes_up_redrive(task, report):
            return None
        # The failed envelope was sent again (asya redrive, or the sump page): the task
        # follows it from the start, as when it was submitted.
        task = dataclasses.replace(
            task, status=TaskStatus.PENDING, position=(0, 0, 0), result=None, error=None,
            reason=None, pause=None, join=None,
        )  # fmt: skip
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
            pause=None,
            join=None,
        )
    if task.status is not TaskStatus.PENDING and here <= task.position:
        return None
    join: dict[str, int] | None = None
    progress = progress_of(route)
    if report["event"] == "joining":
        # What a person watching a fan-out wants to see is how many parts are back.
        done, total = _join_counts(report)
        join = {"done": done, "total": total}
        progress = done / total if total else 0.0
    return dataclasses.replace(
        task,
        status=status,
        route=route,
        actor=route["curr"],
        progress=progress,
        updated_at=report["at"],
        reason=report.get("reason"),
        error=report.get("error"),
        position=here,
        # A "paused" report (no spec of its own) keeps what the pause endpoint stored.
        pause=task.pause if status is TaskStatus.PAUSED else None,
        join=join,
    )


def takes_up_redrive(task: Task, report: wire.HopReport) -> bool:
    """Whether a failed task takes up `report`: one about a redrive of its envelope made
    after it failed. Reports of an earlier redrive, or of the failed run, change nothing; a
    canceled or succeeded task is never taken up again."""
    if task.status is not TaskStatus.FAILED:
        return False
    redriven = parse_timestamp(report.get("redriven_at"))
    failed = parse_timestamp(task.updated_at)
    return redriven is not None and failed is not None and redriven > failed


def _join_counts(report: wire.HopReport) -> tuple[int, int]:
    """(done, total) of a joining report, made safe: whole numbers, 0 <= done <= total."""
    raw = report.get("progress") or {}
    done, total = raw.get("done", 0), raw.get("total", 0)
    total = total if type(total) is int and total > 0 else 0
    done = done if type(done) is int and done > 0 else 0
    return min(done, total) if total else done, total


def pause(
    task: Task,
    *,
    route: wire.Route,
    attempt: int,
    spec: dict[str, Any],
    at: str,
) -> Task | None:
    """The task paused at `route` (curr: the x-pause actor) with `spec` ({"prompt",
    "fields", "paused_at", "expires_at"}); None when it changes nothing: the task ended
    (the caller says so), or it already stands at or past this pause (the same pause again,
    or a pause that was already resumed: its continuation is on its way)."""
    if task.terminal:
        return None
    here = (len(route["prev"]), attempt, PAUSED_EVENT)
    if task.status is not TaskStatus.PENDING and here <= task.position:
        return None
    return _standing(task, TaskStatus.PAUSED, route, at=at, position=here, pause=spec)


def resume(task: Task, *, route: wire.Route, deadline_at: str | None, at: str) -> Task:
    """The paused task running again at `route` (its continuation's). It stands at the
    start of the continuation's hop, so x-pause's own late reports change nothing."""
    return _standing(
        task,
        TaskStatus.RUNNING,
        route,
        at=at,
        position=(len(route["prev"]), 0, 0),
        deadline_at=deadline_at,
    )


def _standing(
    task: Task,
    status: TaskStatus,
    route: wire.Route,
    *,
    at: str,
    position: tuple[int, int, int],
    pause: dict[str, Any] | None = None,
    deadline_at: str | None = None,
) -> Task:
    """The task standing at `route` with `status`, as a pause or a resume leaves it: no
    error, no join counts; the deadline changes only when one is given."""
    return dataclasses.replace(
        task,
        status=status,
        route=route,
        actor=route["curr"],
        progress=progress_of(route),
        updated_at=at,
        deadline_at=task.deadline_at if deadline_at is None else deadline_at,
        reason=None,
        error=None,
        position=position,
        pause=pause,
        join=None,
    )


def expire(task: Task, *, at: str, error: wire.ErrorDetails) -> Task:
    """The paused task failed because nobody resumed it in time (reason PauseExpired)."""
    return dataclasses.replace(
        task,
        status=TaskStatus.FAILED,
        updated_at=at,
        reason="PauseExpired",
        error=error,
        pause=None,
        join=None,
    )


def cancel(task: Task, *, at: str) -> Task | None:
    """The canceled task, or None when it already ended (canceling twice is not a change)."""
    if task.terminal:
        return None
    return dataclasses.replace(
        task, status=TaskStatus.CANCELED, updated_at=at, reason="Canceled", pause=None, join=None
    )
