"""The stores' tables, versioned: what each schema version adds, per SQL dialect, and which
steps a database at a given version still needs.

`schema_version` holds one row per applied version (the highest is the database's version).
A store opening a database runs the steps above that version, in one transaction; at the
current version it changes nothing; at a version above the one this code knows it refuses,
since an older gateway must not write to tables it does not understand.

To change the schema, append a step to both dialects' lists (never edit a released one):
version N is `STEPS[dialect][N - 1]`.

Tables (both dialects; JSON columns are TEXT on SQLite, jsonb on PostgreSQL):

    tasks    one row per task; `created_us`/`updated_us` are the RFC 3339 times as
             microseconds since the epoch, for ordering and retention whatever the text form
    events   every status change and FLY event; `seq` is the store-wide order (the SSE id);
             `status` is set on status events, so the canceled ones are found by an index

Version 2 adds the outbox to `tasks`: `outbox` holds a new task's envelope until the broker
has taken it, `outbox_us` when it was last (re)published, so that a gateway that dies
between recording a task and publishing it publishes it on its next sweep (outbox.py).

Version 3 adds pauses and join progress: `pause` (what the task shows while paused),
`held` (the envelope x-pause parked, JSON text), `pause_until_us` (when the pause expires,
for the sweep's index) and `joining` (x-join's {"done", "total"}). The outbox may now hold
any envelope the gateway sends on a task's behalf (a resume's continuation, the record of
an expired or canceled pause for x-sink), addressed to its own `route.curr`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from asya_gateway.store.base import StoreError

__all__ = ["CURRENT_VERSION", "STEPS", "VERSION_TABLE", "Dialect", "SchemaTooNew", "pending"]

Dialect = Literal["sqlite", "postgresql"]

VERSION_TABLE = {
    "sqlite": "CREATE TABLE IF NOT EXISTS schema_version ("
    " version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
    "postgresql": "CREATE TABLE IF NOT EXISTS schema_version ("
    " version integer PRIMARY KEY, applied_at text NOT NULL)",
}

_TERMINAL = "('succeeded', 'failed', 'canceled')"


def _v1(
    *, ident: str, text: str, json: str, real: str, big: str, boolean: str, serial: str
) -> list[str]:
    # Plain CREATE TABLE (no IF NOT EXISTS): a `tasks` table the gateway did not create
    # must stop it rather than be written to.
    return [
        f"""CREATE TABLE tasks (
            id {ident} PRIMARY KEY,
            tenant {text} NOT NULL,
            status {text} NOT NULL,
            route {json} NOT NULL,
            actor {text},
            progress {real} NOT NULL,
            created_at {text} NOT NULL,
            created_us {big} NOT NULL,
            updated_at {text} NOT NULL,
            updated_us {big} NOT NULL,
            deadline_at {text},
            result {json},
            error {json},
            reason {text},
            flow {text},
            pos_hop {big} NOT NULL,
            pos_attempt {big} NOT NULL,
            pos_event {big} NOT NULL,
            headers {json} NOT NULL
        )""",
        "CREATE INDEX tasks_by_tenant ON tasks (tenant, created_us DESC, id DESC)",
        "CREATE INDEX tasks_by_tenant_status ON tasks (tenant, status, created_us DESC, id DESC)",
        f"CREATE INDEX tasks_finished ON tasks (updated_us) WHERE status IN {_TERMINAL}",
        f"""CREATE TABLE events (
            seq {serial},
            task_id {text} NOT NULL,
            tenant {text} NOT NULL,
            kind {text} NOT NULL,
            status {text},
            data {json},
            terminal {boolean} NOT NULL
        )""",
        "CREATE INDEX events_by_task ON events (task_id, seq)",
        "CREATE INDEX events_canceled ON events (seq) WHERE status = 'canceled'",
    ]


def _v2(*, text: str, big: str) -> list[str]:
    return [
        f"ALTER TABLE tasks ADD COLUMN outbox {text}",
        f"ALTER TABLE tasks ADD COLUMN outbox_us {big}",
        "CREATE INDEX tasks_unpublished ON tasks (outbox_us) WHERE outbox IS NOT NULL",
    ]


def _v3(*, text: str, json: str, big: str) -> list[str]:
    return [
        f"ALTER TABLE tasks ADD COLUMN pause {json}",
        f"ALTER TABLE tasks ADD COLUMN joining {json}",
        f"ALTER TABLE tasks ADD COLUMN held {text}",
        f"ALTER TABLE tasks ADD COLUMN pause_until_us {big}",
        "CREATE INDEX tasks_paused ON tasks (pause_until_us) WHERE status = 'paused'",
    ]


STEPS: dict[Dialect, list[list[str]]] = {
    "sqlite": [
        _v1(
            ident="TEXT",
            text="TEXT",
            json="TEXT",
            real="REAL",
            big="INTEGER",
            boolean="INTEGER",
            # AUTOINCREMENT: a seq is never reused, even after the newest events are deleted,
            # so an SSE client's Last-Event-ID can never point at a different event.
            serial="INTEGER PRIMARY KEY AUTOINCREMENT",
        ),
        _v2(text="TEXT", big="INTEGER"),
        _v3(text="TEXT", json="TEXT", big="INTEGER"),
    ],
    "postgresql": [
        _v1(
            # Byte order, as SQLite's: list order and cursors do not depend on a locale.
            ident='text COLLATE "C"',
            text="text",
            json="jsonb",
            real="double precision",
            big="bigint",
            boolean="boolean",
            serial="bigserial PRIMARY KEY",
        ),
        _v2(text="text", big="bigint"),
        _v3(text="text", json="jsonb", big="bigint"),
    ],
}

CURRENT_VERSION = len(STEPS["sqlite"])
assert len(STEPS["postgresql"]) == CURRENT_VERSION, "both dialects must have the same versions"


class SchemaTooNew(StoreError):
    """The database was written by a newer gateway."""


def pending(found: int | None, dialect: Dialect, where: str) -> list[tuple[int, Sequence[str]]]:
    """The (version, statements) steps a database at version `found` (None: no schema yet)
    needs, oldest first; [] when it is current. SchemaTooNew when it is ahead of this code."""
    have = found or 0
    if have > CURRENT_VERSION:
        raise SchemaTooNew(
            f"the gateway store at {where} has schema version {have}, newer than this "
            f"gateway knows ({CURRENT_VERSION}): upgrade the gateway (every replica) to the "
            "version that wrote it"
        )
    steps = STEPS[dialect]
    return [(version, steps[version - 1]) for version in range(have + 1, CURRENT_VERSION + 1)]
