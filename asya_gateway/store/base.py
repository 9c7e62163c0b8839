"""What the gateway keeps, behind one protocol: SQLite (sqlite.py) and PostgreSQL
(postgres.py) implement it, and one contract suite (tests/gateway/store_contract.py) runs on
both.

The store owns the decisions' outcome, not the decisions: `apply` calls the pure
asya_gateway.tasks.advance for each report, inside one transaction per batch, so two gateway
replicas applying reports for the same task cannot both move it (row lock or
compare-and-set, per store).

Every change that moves a task is also an `Event` with a store-wide increasing `seq`: the
SSE stream replays `events_since(task, seq)` after a reconnect (Last-Event-ID) and follows
`watch()` for new ones, which on PostgreSQL also carries the changes other replicas made
(LISTEN/NOTIFY).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from asya_gateway.tasks import Task, TaskStatus
from asya_shared import wire

__all__ = [
    "Event",
    "Page",
    "Store",
    "StoreError",
    "TaskConflict",
    "TaskNotFound",
    "Unpublished",
]


class StoreError(Exception):
    """The store cannot be reached or refused the operation; the message says which."""


class TaskNotFound(StoreError):
    """No task with that id for that tenant (another tenant's task is not found either)."""


class TaskConflict(StoreError):
    """The operation does not fit the task's status (cancel a task that already ended)."""

    def __init__(self, message: str, task: Task) -> None:
        super().__init__(message)
        self.task = task


@dataclass(frozen=True)
class Event:
    """One step of a task's life as SSE sends it."""

    seq: int  # increasing across the store; the SSE `id:`
    task_id: str
    tenant: str
    kind: str  # "status" | "fly"
    # status: {"status", "actor", "progress"} (+ "pause" while paused, "join" while x-join
    # waits); fly: the FLY event
    data: dict[str, Any]
    terminal: bool = False


@dataclass(frozen=True)
class Unpublished:
    """A task with an envelope in its outbox (to publish to the envelope's route.curr)."""

    task: Task
    envelope: str


@dataclass(frozen=True)
class Page:
    tasks: list[Task]
    next_cursor: str | None


class Store(Protocol):
    async def open(self) -> None:
        """Connect, and create or migrate the schema (versioned) if needed."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise StoreError when the store cannot answer (for /readyz)."""

    async def create(self, task: Task, *, envelope: str | None = None) -> tuple[Task, bool]:
        """Insert `task`; if one with its id exists for its tenant, return that one and
        False (idempotent submit). The first status event (pending) is recorded. `envelope`
        (the JSON text to publish for it) waits in the task's outbox until `published`."""

    async def published(self, task_id: str, envelope: str | None = None) -> None:
        """The broker has taken the task's envelope: empty its outbox (only if it still
        holds `envelope`, when given: a newer one must not be lost)."""

    async def claim_unpublished(self, before: str, *, now: str, limit: int) -> list[Unpublished]:
        """Tasks (whatever their status) whose envelope has waited in the outbox since
        before `before` (RFC 3339), oldest first. Each is claimed, its outbox time set to
        `now`, so that a replica sweeping at the same moment skips it. A report that moves
        a task empties its outbox: the envelope has evidently reached the broker."""

    async def outbox(self, task_id: str) -> Unpublished | None:
        """The task's outbox, if it holds an envelope."""

    async def get(self, task_id: str, tenant: str) -> Task:
        """The task, or TaskNotFound."""

    async def list_tasks(
        self, tenant: str, *, status: TaskStatus | None, limit: int, cursor: str | None
    ) -> Page:
        """Newest first (created_at, then id); `cursor` is an opaque next_cursor."""

    async def apply(self, reports: Sequence[wire.HopReport]) -> list[Event]:
        """Apply each report to its task (unknown ids are ignored); return the events of
        the changes made, in order. FLY reports become `fly` events of their task."""

    async def cancel(self, task_id: str, tenant: str, *, at: str) -> Task:
        """Cancel; a task already canceled is returned as it is (idempotent); one that
        succeeded or failed raises TaskConflict; an unknown one TaskNotFound. A paused
        task's parked envelope goes to the outbox, for x-sink (phase canceled)."""

    async def pause(
        self,
        task_id: str,
        *,
        envelope: str,
        route: wire.Route,
        attempt: int,
        pause: dict[str, Any],
    ) -> Task:
        """Park `envelope` (x-pause's, JSON text) in the task's row and show the task
        paused with `pause` ({"prompt", "fields", "paused_at", "expires_at"}), whatever its
        tenant. Idempotent: the same pause again, or one the task has already moved past,
        returns the task unchanged. TaskNotFound; TaskConflict once the task ended."""

    async def resume(
        self, task_id: str, tenant: str, input: Mapping[str, Any], *, at: str
    ) -> Unpublished:
        """In one transaction only one caller wins: check `input` against the pause
        (pauses.InvalidInput), build the continuation, put it in the outbox and set the task
        running. TaskNotFound; TaskConflict when the task is not paused (any more)."""

    async def expire_pauses(self, *, now: str, limit: int) -> list[Unpublished]:
        """Fail paused tasks whose pause expired before `now` (reason PauseExpired), each
        once across replicas, with x-sink's record of it in the outbox."""

    async def canceled_since(self, cursor: int) -> tuple[list[str], int]:
        """Ids of tasks canceled after `cursor` and the new cursor (sidecars skip them)."""

    async def events_since(self, task_id: str, tenant: str, seq: int) -> list[Event]:
        """The task's status events after `seq`, oldest first."""

    def watch(self, task_id: str | None = None) -> AsyncIterator[Event]:
        """Every new event of any task (or only of `task_id`), as it is recorded by this
        or another replica."""

    async def delete_finished(self, before: str) -> int:
        """Delete terminal tasks updated before `before` (RFC 3339); return how many."""
