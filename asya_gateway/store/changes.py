"""What a batch of reports, a create or a cancel changes, decided before anything is
written (pure): the tasks that moved and the events to record, in order. Both stores load
the batch's tasks inside their transaction, call `plan`, and write what it returns.

A `Draft` is an Event before the store numbered it (its `seq` is given on insert).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from asya_gateway import pausing, tasks
from asya_gateway.store.base import Event, TaskConflict
from asya_gateway.store.rows import status_data
from asya_gateway.tasks import Task, TaskStatus, advance, cancel
from asya_shared import wire

__all__ = [
    "Draft",
    "canceled",
    "canceled_record",
    "expired",
    "fly",
    "id_taken",
    "moved",
    "paused",
    "plan",
    "resumed",
]

FLY = "fly"


@dataclass(frozen=True)
class Draft:
    task_id: str
    tenant: str
    kind: str  # "status" | "fly"
    data: Any
    terminal: bool
    status: str | None  # the status a status event moved to; None for fly events

    def numbered(self, seq: int) -> Event:
        return Event(
            seq=seq,
            task_id=self.task_id,
            tenant=self.tenant,
            kind=self.kind,
            data=self.data,
            terminal=self.terminal,
        )

    @property
    def cancels(self) -> bool:
        return self.status == TaskStatus.CANCELED


def moved(task: Task) -> Draft:
    """The status event of `task` as it now is (created, advanced or canceled)."""
    return Draft(task.id, task.tenant, "status", status_data(task), task.terminal, str(task.status))


def fly(task: Task, item: Any) -> Draft:
    """One FLY event of the handler, kept as it was yielded."""
    return Draft(task.id, task.tenant, FLY, item, False, None)


def plan(
    tasks: Mapping[str, Task], reports: Sequence[wire.HopReport]
) -> tuple[dict[str, Task], list[Draft]]:
    """Apply `reports` in order to `tasks` (the batch's tasks, by id): the tasks that changed
    (their final state in this batch) and the events, in the order they happened.

    Reports about unknown ids are skipped (envelopes the gateway did not submit, fan-out
    children). FLY events of a task that already ended are dropped: its stream has ended
    with the terminal status, and a late token would only confuse a replay.
    """
    current = dict(tasks)
    changed: dict[str, Task] = {}
    drafts: list[Draft] = []
    for report in reports:
        task = current.get(report["id"])
        if task is None:
            continue
        if report["event"] == FLY:
            items = report.get("events")
            if not task.terminal and isinstance(items, list):
                drafts.extend(fly(task, item) for item in items)
            continue
        after = advance(task, report)
        if after is None:
            continue
        current[task.id] = changed[task.id] = after
        drafts.append(moved(after))
    return changed, drafts


def canceled(task: Task, *, at: str) -> Task | None:
    """The task canceled at `at`; None when it already was (canceling is idempotent);
    TaskConflict when it already succeeded or failed."""
    after = cancel(task, at=at)
    if after is None and task.status is not TaskStatus.CANCELED:
        raise TaskConflict(
            f"task {task.id!r} already {task.status}; only a pending, running or paused task "
            "can be canceled",
            task,
        )
    return after


def id_taken(task: Task) -> TaskConflict:
    """The error of a create whose id another tenant's task holds. Task ids are envelope
    ids, unique across tenants; the message and the error's `task` (the one the caller
    asked for) say nothing of the task that holds the id."""
    return TaskConflict(f"task id {task.id!r} is already taken: choose another id", task)


def paused(
    task: Task, *, route: wire.Route, attempt: int, pause: dict[str, Any], at: str
) -> Task | None:
    """The task paused; None when this pause changes nothing (tasks.pause); TaskConflict
    when the task already ended (x-pause then drops the envelope)."""
    if task.terminal:
        raise TaskConflict(
            f"task {task.id!r} already {task.status}; there is nothing to pause", task
        )
    return tasks.pause(task, route=route, attempt=attempt, spec=pause, at=at)


def resumed(task: Task, held: str | None, input: Mapping[str, Any], *, at: str) -> tuple[Task, str]:
    """The running task and its continuation (JSON text); TaskConflict when the task is not
    paused; pauses.InvalidInput when the input does not fit."""
    if task.status is TaskStatus.PAUSED and (held is None or task.pause is None):
        raise TaskConflict(
            f"task {task.id!r} is paused, but not by x-pause: the gateway holds no envelope "
            "to continue it with, so it cannot be resumed here",
            task,
        )
    if task.status is not TaskStatus.PAUSED or held is None or task.pause is None:
        raise TaskConflict(
            f"task {task.id!r} is {task.status}, not paused; only a paused task can be "
            "resumed (a concurrent resume may have won)",
            task,
        )
    envelope = pausing.continuation(json.loads(held), task.pause, input, now=at)
    after = tasks.resume(
        task,
        route=cast(wire.Route, envelope["route"]),
        deadline_at=pausing.shift(task.deadline_at, _paused_for(task.pause, at)),
        at=at,
    )
    return after, pausing.encode(envelope)


def expired(task: Task, held: str | None, *, at: str) -> tuple[Task, str | None]:
    """The task failed with PauseExpired, and x-sink's record of it (None without a parked
    envelope, which a store never leaves, but a hand-edited row might)."""
    error = pausing.expired_error(task.pause or {})
    after = tasks.expire(task, at=at, error=error)
    if held is None:
        return after, None
    record = pausing.to_sink(
        json.loads(held), phase="failed", reason=pausing.EXPIRED, error=error, now=at
    )
    return after, pausing.encode(record)


def canceled_record(before: Task, held: str | None, *, at: str) -> str | None:
    """x-sink's record of a paused task canceled (None when it was not paused)."""
    if before.status is not TaskStatus.PAUSED or held is None:
        return None
    record = pausing.to_sink(
        json.loads(held), phase="canceled", reason="Canceled", error=None, now=at
    )
    return pausing.encode(record)


def _paused_for(pause: Mapping[str, Any], at: str) -> float:
    return pausing.seconds_between(str(pause.get("paused_at")), at)
