"""The SQLite store: one file, for `asya dev` and single-node installs.

The standard library's sqlite3 runs on ONE worker thread of the store's own (the connection
never changes threads, and the event loop never waits on the disk). The file is in WAL mode,
so reads do not wait for a writer, with a busy timeout, so two gateways on one file wait for
each other instead of failing. Every write is one `BEGIN IMMEDIATE` transaction: it takes
the file's write lock before reading the tasks it will change, so two writers can never
both move the same task (no lost update, never two terminal states).

`watch()`: SQLite has no notifications, so a poller reads the events after the last one it
saw, at once after this store wrote and otherwise every `poll_interval` (0.2 s by default):
that is how a watcher sees what another process wrote to the same file. Writers hold the
file lock from taking a seq to committing, so seqs appear in order and the poll can never
skip one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from asya_gateway.store import changes, rows, schema, urls
from asya_gateway.store.base import Event, Page, StoreError, TaskNotFound, Unpublished
from asya_gateway.store.hub import Hub, Subscription
from asya_gateway.tasks import TERMINAL, Task, TaskStatus
from asya_shared import sqlite_files, wire

__all__ = ["SQLiteStore"]

log = logging.getLogger("asya.gateway.store")

T = TypeVar("T")

DEFAULT_POLL_INTERVAL_S = 0.2
# Parameters per IN (...) list; SQLite allows 32766 per statement.
_CHUNK = 500
# How many canceled ids one canceled_since call returns at most; call again for more.
CANCELED_PAGE = 1000
_POLL_PAGE = 1000
_TERMINAL_SQL = "(" + ", ".join(f"'{status}'" for status in sorted(TERMINAL)) + ")"
_INSERT_TASK = (
    f"INSERT INTO tasks ({', '.join(rows.INSERT_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in rows.INSERT_COLUMNS)})"
)
# A report that moves a task proves its outbox reached the broker (base.Store).
_APPLY_TASK = (
    f"UPDATE tasks SET {', '.join(f'{name} = ?' for name in rows.MUTABLE_COLUMNS)}, "
    "outbox = NULL, outbox_us = NULL, "
    "held = CASE WHEN ? THEN held END, pause_until_us = CASE WHEN ? THEN pause_until_us END "
    "WHERE id = ?"
)
# An ending or a resume: the parked envelope leaves the row; `outbox` is what to send.
_UNPARK_TASK = (
    f"UPDATE tasks SET {', '.join(f'{name} = ?' for name in rows.MUTABLE_COLUMNS)}, "
    "deadline_at = ?, held = NULL, pause_until_us = NULL, "
    "outbox = coalesce(?, outbox), outbox_us = CASE WHEN ? IS NULL THEN outbox_us ELSE ? END "
    "WHERE id = ?"
)
# x-pause parked the envelope: keep it, and when the pause expires.
_PAUSE_TASK = (
    f"UPDATE tasks SET {', '.join(f'{name} = ?' for name in rows.MUTABLE_COLUMNS)}, "
    "held = ?, pause_until_us = ? WHERE id = ?"
)
_INSERT_EVENT = (
    "INSERT INTO events (task_id, tenant, kind, status, data, terminal) VALUES (?, ?, ?, ?, ?, ?)"
)


class SQLiteStore:
    def __init__(self, path: Path, *, poll_interval: float = DEFAULT_POLL_INTERVAL_S) -> None:
        self.path = path
        self.url = urls.sqlite_url(path)
        self._poll_interval = poll_interval
        self._db = sqlite_files.Worker(
            path,
            store=f"the gateway store {self.url}",
            error=StoreError,
            path_setting="--store / ASYA_GATEWAY_STORE",
            thread_name="asya-sqlite",
        )
        self._hub = Hub()
        self._wake = asyncio.Event()
        # Bumped by every watch(): a poll that began before it must not skip events.
        self._watch_epoch = 0
        self._poller: asyncio.Task[None] | None = None
        self._last_seq = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        await self._db.open()
        try:
            await self._run("creating or migrating the schema", self._migrate)
            self._last_seq = await self._run("reading the newest event", self._max_seq)
        except BaseException:
            await self.close()  # no thread or open file left behind
            raise
        self._poller = asyncio.get_running_loop().create_task(
            self._poll_forever(), name=f"asya-gateway-sqlite-watch {self.path}"
        )

    async def close(self) -> None:
        self._hub.close()
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        await self._db.close()

    async def ping(self) -> None:
        await self._run("answering a ping", lambda conn: conn.execute("SELECT 1").fetchone())

    # -- tasks -----------------------------------------------------------------------------

    async def create(self, task: Task, *, envelope: str | None = None) -> tuple[Task, bool]:
        stored, created = await self._run(f"creating task {task.id}", self._create, task, envelope)
        if created:
            self._changed()
        return stored, created

    async def published(self, task_id: str, envelope: str | None = None) -> None:
        def work(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE tasks SET outbox = NULL, outbox_us = NULL WHERE id = ? "
                "AND (? IS NULL OR outbox = ?)",
                (task_id, envelope, envelope),
            )

        await self._run(f"marking task {task_id} published", work)

    async def outbox(self, task_id: str) -> Unpublished | None:
        row = await self._run(
            f"reading the outbox of task {task_id}",
            lambda conn: conn.execute(
                "SELECT * FROM tasks WHERE id = ? AND outbox IS NOT NULL", (task_id,)
            ).fetchone(),
        )
        return None if row is None else Unpublished(rows.from_row(row), row["outbox"])

    async def pause(
        self,
        task_id: str,
        *,
        envelope: str,
        route: wire.Route,
        attempt: int,
        pause: dict[str, Any],
    ) -> Task:
        def work(conn: sqlite3.Connection) -> tuple[Task, bool]:
            with sqlite_files.transaction(conn):
                row = conn.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
                if row is None:
                    raise TaskNotFound(f"no task {task_id!r}")
                task = rows.from_row(row)
                after = changes.paused(
                    task, route=route, attempt=attempt, pause=pause, at=pause["paused_at"]
                )
                if after is None:
                    return task, False
                conn.execute(
                    _PAUSE_TASK,
                    (
                        *rows.mutable_values(after),
                        envelope,
                        rows.micros(pause["expires_at"]),
                        task_id,
                    ),
                )
                _insert_events(conn, [changes.moved(after)])
            return after, True

        task, changed = await self._run(f"pausing task {task_id}", work)
        if changed:
            self._changed()
        return task

    async def resume(
        self, task_id: str, tenant: str, input: Mapping[str, Any], *, at: str
    ) -> Unpublished:
        def work(conn: sqlite3.Connection) -> Unpublished:
            with sqlite_files.transaction(conn):
                row = conn.execute(
                    "SELECT * FROM tasks WHERE id = ? AND tenant = ?", (task_id, tenant)
                ).fetchone()
                if row is None:
                    raise TaskNotFound(f"no task {task_id!r}")
                after, envelope = changes.resumed(rows.from_row(row), row["held"], input, at=at)
                _unpark(conn, after, envelope, at)
                _insert_events(conn, [changes.moved(after)])
            return Unpublished(after, envelope)

        resumed = await self._run(f"resuming task {task_id}", work)
        self._changed()
        return resumed

    async def expire_pauses(self, *, now: str, limit: int) -> list[Unpublished]:
        cutoff = rows.micros(now)

        def work(conn: sqlite3.Connection) -> list[Unpublished]:
            claimed: list[Unpublished] = []
            with sqlite_files.transaction(conn):
                found = conn.execute(
                    "SELECT * FROM tasks WHERE status = 'paused' AND pause_until_us <= ? "
                    "ORDER BY pause_until_us, id LIMIT ?",
                    (cutoff, limit),
                ).fetchall()
                drafts = []
                for row in found:
                    after, record = changes.expired(rows.from_row(row), row["held"], at=now)
                    _unpark(conn, after, record, now)
                    drafts.append(changes.moved(after))
                    if record is not None:
                        claimed.append(Unpublished(after, record))
                _insert_events(conn, drafts)
            return claimed

        claimed = await self._run("expiring pauses", work)
        if claimed:
            self._changed()
        return claimed

    async def claim_unpublished(self, before: str, *, now: str, limit: int) -> list[Unpublished]:
        cutoff, claimed_at = rows.micros(before), rows.micros(now)

        def work(conn: sqlite3.Connection) -> list[Unpublished]:
            with sqlite_files.transaction(conn):
                found = conn.execute(
                    "SELECT * FROM tasks WHERE outbox IS NOT NULL "
                    "AND outbox_us < ? ORDER BY outbox_us, id LIMIT ?",
                    (cutoff, limit),
                ).fetchall()
                conn.executemany(
                    "UPDATE tasks SET outbox_us = ? WHERE id = ?",
                    [(claimed_at, row["id"]) for row in found],
                )
            return [Unpublished(rows.from_row(row), row["outbox"]) for row in found]

        return await self._run("claiming unpublished tasks", work)

    async def get(self, task_id: str, tenant: str) -> Task:
        row = await self._run(
            f"reading task {task_id}",
            lambda conn: conn.execute(
                "SELECT * FROM tasks WHERE id = ? AND tenant = ?", (task_id, tenant)
            ).fetchone(),
        )
        if row is None:
            raise TaskNotFound(f"no task {task_id!r}")
        return rows.from_row(row)

    async def list_tasks(
        self, tenant: str, *, status: TaskStatus | None, limit: int, cursor: str | None
    ) -> Page:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        where: list[str] = ["tenant = ?"]
        args: list[Any] = [tenant]
        if status is not None:
            where.append("status = ?")
            args.append(str(status))
        if cursor is not None:
            created_us, task_id = rows.decode_cursor(cursor)
            where.append("(created_us, id) < (?, ?)")
            args.extend([created_us, task_id])
        sql = (
            f"SELECT * FROM tasks WHERE {' AND '.join(where)} "
            "ORDER BY created_us DESC, id DESC LIMIT ?"
        )
        found = await self._run(
            "listing tasks", lambda conn: conn.execute(sql, (*args, limit + 1)).fetchall()
        )
        page = [rows.from_row(row) for row in found[:limit]]
        more = len(found) > limit
        last = found[limit - 1] if more else None
        next_cursor = rows.encode_cursor(last["created_us"], last["id"]) if last else None
        return Page(page, next_cursor)

    async def apply(self, reports: Sequence[wire.HopReport]) -> list[Event]:
        if not reports:
            return []
        events = await self._run(f"applying {len(reports)} report(s)", self._apply, list(reports))
        if events:
            self._changed()
        return events

    async def cancel(self, task_id: str, tenant: str, *, at: str) -> Task:
        task, changed = await self._run(
            f"canceling task {task_id}", self._cancel, task_id, tenant, at
        )
        if changed:
            self._changed()
        return task

    async def canceled_since(self, cursor: int) -> tuple[list[str], int]:
        found = await self._run(
            "reading canceled tasks",
            lambda conn: conn.execute(
                "SELECT seq, task_id FROM events WHERE status = 'canceled' AND seq > ? "
                "ORDER BY seq LIMIT ?",
                (cursor, CANCELED_PAGE),
            ).fetchall(),
        )
        return [row["task_id"] for row in found], (found[-1]["seq"] if found else cursor)

    async def events_since(self, task_id: str, tenant: str, seq: int) -> list[Event]:
        found = await self._run(
            f"reading the events of task {task_id}",
            lambda conn: conn.execute(
                "SELECT * FROM events WHERE task_id = ? AND tenant = ? AND seq > ? ORDER BY seq",
                (task_id, tenant, seq),
            ).fetchall(),
        )
        return [_event(row) for row in found]

    def watch(self, task_id: str | None = None) -> Subscription:
        """New events of every task (or of `task_id` only), from now on (see the module's
        docstring); subscribed before it returns. Ends when the store closes."""
        subscription = self._hub.subscribe(task_id)
        self._watch_epoch += 1
        self._wake.set()
        return subscription

    async def delete_finished(self, before: str) -> int:
        cutoff = rows.micros(before)
        return await self._run("deleting finished tasks", self._delete_finished, cutoff)

    # -- on the worker thread --------------------------------------------------------------

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute(schema.VERSION_TABLE["sqlite"])
        if self._version(conn) == schema.CURRENT_VERSION:
            return  # already current: opening changes nothing
        with sqlite_files.transaction(conn):
            steps = schema.pending(self._version(conn), "sqlite", self.url)
            for version, statements in steps:
                for statement in statements:
                    try:
                        conn.execute(statement)
                    except sqlite3.OperationalError as exc:
                        raise StoreError(
                            f"cannot create the schema of the gateway store {self.url} "
                            f"(version {version}): {exc}; if the file holds tables of "
                            "something else, give the gateway a file of its own"
                        ) from exc
                conn.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                    (version, _now()),
                )

    @staticmethod
    def _version(conn: sqlite3.Connection) -> int | None:
        found: int | None = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]
        return found

    @staticmethod
    def _max_seq(conn: sqlite3.Connection) -> int:
        found: int = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
        return found

    def _create(
        self, conn: sqlite3.Connection, task: Task, envelope: str | None
    ) -> tuple[Task, bool]:
        with sqlite_files.transaction(conn):
            row = conn.execute("SELECT * FROM tasks WHERE id = ?", (task.id,)).fetchone()
            if row is not None:
                existing = rows.from_row(row)
                if existing.tenant != task.tenant:
                    raise changes.id_taken(task)
                return existing, False
            conn.execute(_INSERT_TASK, rows.insert_row(task, envelope))
            _insert_events(conn, [changes.moved(task)])
        return task, True

    def _apply(self, conn: sqlite3.Connection, reports: list[wire.HopReport]) -> list[Event]:
        ids = sorted({report["id"] for report in reports})
        with sqlite_files.transaction(conn):
            loaded: dict[str, Task] = {}
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                marks = ", ".join("?" for _ in chunk)
                for row in conn.execute(f"SELECT * FROM tasks WHERE id IN ({marks})", chunk):
                    loaded[row["id"]] = rows.from_row(row)
            changed, drafts = changes.plan(loaded, reports)
            conn.executemany(
                _APPLY_TASK,
                [
                    (*rows.mutable_values(task), *([task.status is TaskStatus.PAUSED] * 2), task.id)
                    for task in changed.values()
                ],
            )
            return _insert_events(conn, drafts)

    def _cancel(
        self, conn: sqlite3.Connection, task_id: str, tenant: str, at: str
    ) -> tuple[Task, bool]:
        with sqlite_files.transaction(conn):
            row = conn.execute(
                "SELECT * FROM tasks WHERE id = ? AND tenant = ?", (task_id, tenant)
            ).fetchone()
            if row is None:
                raise TaskNotFound(f"no task {task_id!r}")
            task = rows.from_row(row)
            after = changes.canceled(task, at=at)
            if after is None:
                return task, False
            _unpark(conn, after, changes.canceled_record(task, row["held"], at=at), at)
            _insert_events(conn, [changes.moved(after)])
        return after, True

    def _delete_finished(self, conn: sqlite3.Connection, cutoff: int) -> int:
        finished = f"status IN {_TERMINAL_SQL} AND updated_us < ?"
        with sqlite_files.transaction(conn):
            conn.execute(
                f"DELETE FROM events WHERE task_id IN (SELECT id FROM tasks WHERE {finished})",
                (cutoff,),
            )
            deleted: int = conn.execute(f"DELETE FROM tasks WHERE {finished}", (cutoff,)).rowcount
        return deleted

    @staticmethod
    def _events_after(conn: sqlite3.Connection, seq: int) -> list[Event]:
        found = conn.execute(
            "SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (seq, _POLL_PAGE)
        ).fetchall()
        return [_event(row) for row in found]

    # -- plumbing --------------------------------------------------------------------------

    async def _run(self, doing: str, call: Callable[..., T], *args: Any) -> T:
        """`call(connection, *args)` on the store's worker thread."""
        return await self._db.run(doing, call, *args)

    def _changed(self) -> None:
        """This store wrote events: let the poller publish them now rather than at its next
        tick (only worth it when someone watches)."""
        if self._hub.subscribers:
            self._wake.set()

    async def _poll_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval)
            self._wake.clear()
            try:
                await self._poll_once()
            except StoreError as exc:
                log.warning("watching the gateway store for new events: %s", exc)

    async def _poll_once(self) -> None:
        if not self._hub.subscribers:
            # Nobody to tell: just keep up, so a new watcher gets events from about now.
            # A watcher that came while we read may be owed events up to the newest: then
            # keep the old mark (it gets a few events from before it came, never a gap).
            epoch = self._watch_epoch
            newest = await self._run("reading the newest event", self._max_seq)
            if epoch == self._watch_epoch:
                self._last_seq = newest
            return
        while True:
            events = await self._run("reading new events", self._events_after, self._last_seq)
            if not events:
                return
            self._last_seq = events[-1].seq
            self._hub.publish(events)
            if len(events) < _POLL_PAGE:
                return


def _unpark(conn: sqlite3.Connection, task: Task, outbox: str | None, at: str) -> None:
    """Write `task` with its parked envelope gone and `outbox` (if any) to send."""
    since = rows.micros(at)
    conn.execute(
        _UNPARK_TASK,
        (*rows.mutable_values(task), task.deadline_at, outbox, outbox, since, task.id),
    )


def _insert_events(conn: sqlite3.Connection, drafts: Sequence[changes.Draft]) -> list[Event]:
    events = []
    for draft in drafts:
        cursor = conn.execute(
            _INSERT_EVENT,
            (
                draft.task_id,
                draft.tenant,
                draft.kind,
                draft.status,
                rows.dump_json(draft.data),
                int(draft.terminal),
            ),
        )
        assert cursor.lastrowid is not None  # an INSERT into a rowid table always has one
        events.append(draft.numbered(cursor.lastrowid))
    return events


def _event(row: sqlite3.Row) -> Event:
    return Event(
        seq=row["seq"],
        task_id=row["task_id"],
        tenant=row["tenant"],
        kind=row["kind"],
        data=rows.load_json(row["data"]),
        terminal=bool(row["terminal"]),
    )


def _now() -> str:
    return datetime.now(UTC).isoformat()
