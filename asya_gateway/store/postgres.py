"""The PostgreSQL store: what several gateway replicas share in production (asyncpg).

Writes: one transaction per call. `apply` locks the batch's task rows with SELECT ... FOR
UPDATE in id order (two replicas lock in the same order, so they cannot deadlock), decides
with the pure `changes.plan`, and writes; a replica applying reports for the same task waits
for the lock and then sees the other's result, so no update is lost and a task never gets
two terminal states.

Events: `seq` is a bigserial. Within one task, seqs follow commit order (each event is
written under the task's row lock), which is what `events_since` needs. Across tasks two
transactions may commit out of seq order; two things depend on that order and are guarded:

- `watch()`: each transaction NOTIFYs the exact seqs it wrote, on a channel named after the
  schema; PostgreSQL delivers the notification only on commit, to every replica's listener,
  which reads those rows and hands them to its watchers. So a watcher on replica B sees what
  replica A wrote, and never misses an event because another one was still uncommitted.
  If the listening connection is lost, it reconnects and then delivers everything after the
  last seq it saw (possibly a few events twice: watchers skip seqs they already sent).
- `canceled_since`: transactions that record a cancellation take a transaction-scoped
  advisory lock before taking their seqs, so canceled events commit in seq order and a
  cursor never passes over one still being written. Cancellations are rare; the lock costs
  the reports' hot path nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg

from asya_gateway.store import changes, rows, schema, urls
from asya_gateway.store.base import Event, Page, StoreError, TaskNotFound, Unpublished
from asya_gateway.store.hub import Hub, Subscription
from asya_gateway.tasks import TERMINAL, Task, TaskStatus
from asya_shared import wire

__all__ = ["PostgresStore", "channel_for", "pack_seqs", "unpack_seqs"]

log = logging.getLogger("asya.gateway.store")

T = TypeVar("T")

CONNECT_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 30.0
POOL_SIZE = 10
# How long the listener waits between checks that its connection is still alive (a dead
# network may never tell it).
LISTENER_CHECK_S = 30.0
RECONNECT_MAX_S = 5.0
# How many canceled ids one canceled_since call returns at most; call again for more.
CANCELED_PAGE = 1000
_CATCH_UP_PAGE = 1000
# PostgreSQL refuses NOTIFY payloads of 8000 bytes or more.
_PAYLOAD_MAX = 7000
_DEADLOCK_RETRIES = 3
_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
_TERMINAL_SQL = "(" + ", ".join(f"'{status}'" for status in sorted(TERMINAL)) + ")"


def _placeholder(index: int, column: str) -> str:
    return f"${index}::jsonb" if column in rows.JSON_COLUMNS else f"${index}"


_INSERT_TASK = (
    f"INSERT INTO tasks ({', '.join(rows.INSERT_COLUMNS)}) VALUES ("
    + ", ".join(_placeholder(i, name) for i, name in enumerate(rows.INSERT_COLUMNS, 1))
    + ") ON CONFLICT (id) DO NOTHING RETURNING id"
)
_M = len(rows.MUTABLE_COLUMNS)
_SET_MUTABLE = ", ".join(
    f"{name} = {_placeholder(i, name)}" for i, name in enumerate(rows.MUTABLE_COLUMNS, 1)
)
# A report that moves a task proves its outbox reached the broker (base.Store).
_APPLY_TASK = (
    f"UPDATE tasks SET {_SET_MUTABLE}, outbox = NULL, outbox_us = NULL, "
    f"held = CASE WHEN ${_M + 1}::boolean THEN held END, "
    f"pause_until_us = CASE WHEN ${_M + 1}::boolean THEN pause_until_us END "
    f"WHERE id = ${_M + 2}"
)
# x-pause parked the envelope: keep it, and when the pause expires.
_PAUSE_TASK = (
    f"UPDATE tasks SET {_SET_MUTABLE}, held = ${_M + 1}, pause_until_us = ${_M + 2} "
    f"WHERE id = ${_M + 3}"
)
# An ending or a resume: the parked envelope leaves the row; `outbox` is what to send.
_UNPARK_TASK = (
    f"UPDATE tasks SET {_SET_MUTABLE}, deadline_at = ${_M + 1}, held = NULL, "
    f"pause_until_us = NULL, outbox = coalesce(${_M + 2}::text, outbox), "
    f"outbox_us = CASE WHEN ${_M + 2}::text IS NULL THEN outbox_us ELSE ${_M + 3} END "
    f"WHERE id = ${_M + 4}"
)
_INSERT_EVENTS = """
    INSERT INTO events (seq, task_id, tenant, kind, status, data, terminal)
    SELECT seq, task_id, tenant, kind, status, data::jsonb, terminal
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                $7::boolean[]) AS u(seq, task_id, tenant, kind, status, data, terminal)
"""


class _CatchUp:
    """Queued after the listener reconnected: deliver everything after the last seq seen."""


_CATCH_UP = _CatchUp()


class PostgresStore:
    def __init__(self, url: str, *, pool_size: int = POOL_SIZE) -> None:
        self._dsn = url
        self.url = urls.redact(url)
        self._pool_size = pool_size
        self._pool: Any = None  # asyncpg.Pool
        self._hub = Hub()
        self._channel = ""
        self._cancel_lock = ""
        self._sequence = ""
        self._inbox: asyncio.Queue[str | _CatchUp] = asyncio.Queue()
        self._last_seq = 0
        self._listener: Any = None  # asyncpg.Connection
        self._listener_lost = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        async with self._failures("connecting"):
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=self._pool_size,
                timeout=CONNECT_TIMEOUT_S,
                command_timeout=COMMAND_TIMEOUT_S,
            )
        try:
            await self._prepare()
            await self._listen()
        except BaseException:
            await self._pool.close()
            self._pool = None
            raise
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._keep_listening(), name="asya-gateway-pg-listen"),
            loop.create_task(self._deliver_forever(), name="asya-gateway-pg-deliver"),
        ]

    async def close(self) -> None:
        self._hub.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._drop_listener()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), CONNECT_TIMEOUT_S)
            except (TimeoutError, *_ERRORS):
                pool.terminate()

    async def ping(self) -> None:
        async with self._failures("answering a ping"):
            await self._connected().fetchval("SELECT 1")

    # -- tasks -----------------------------------------------------------------------------

    async def create(self, task: Task, *, envelope: str | None = None) -> tuple[Task, bool]:
        row = rows.insert_row(task, envelope)

        async def work(conn: Any) -> tuple[Task, bool]:
            if await conn.fetchval(_INSERT_TASK, *row) is not None:
                await self._record(conn, [changes.moved(task)])
                return task, True
            # The id exists (a concurrent insert of it has committed: ON CONFLICT waited).
            existing = await conn.fetchrow("SELECT * FROM tasks WHERE id = $1", task.id)
            if existing is None:  # deleted in between by retention: it had ended long ago
                raise changes.id_taken(task)
            found = rows.from_row(existing)
            if found.tenant != task.tenant:
                raise changes.id_taken(task)
            return found, False

        return await self._transact(f"creating task {task.id}", work)

    async def published(self, task_id: str, envelope: str | None = None) -> None:
        async with self._failures(f"marking task {task_id} published"):
            await self._connected().execute(
                "UPDATE tasks SET outbox = NULL, outbox_us = NULL WHERE id = $1 "
                "AND ($2::text IS NULL OR outbox = $2::text)",
                task_id,
                envelope,
            )

    async def outbox(self, task_id: str) -> Unpublished | None:
        async with self._failures(f"reading the outbox of task {task_id}"):
            row = await self._connected().fetchrow(
                "SELECT * FROM tasks WHERE id = $1 AND outbox IS NOT NULL", task_id
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
        async def work(conn: Any) -> Task:
            row = await conn.fetchrow("SELECT * FROM tasks WHERE id = $1 FOR UPDATE", task_id)
            if row is None:
                raise TaskNotFound(f"no task {task_id!r}")
            task = rows.from_row(row)
            after = changes.paused(
                task, route=route, attempt=attempt, pause=pause, at=pause["paused_at"]
            )
            if after is None:
                return task
            await conn.execute(
                _PAUSE_TASK,
                *rows.mutable_values(after),
                envelope,
                rows.micros(pause["expires_at"]),
                task_id,
            )
            await self._record(conn, [changes.moved(after)])
            return after

        return await self._transact(f"pausing task {task_id}", work)

    async def resume(
        self, task_id: str, tenant: str, input: Mapping[str, Any], *, at: str
    ) -> Unpublished:
        async def work(conn: Any) -> Unpublished:
            # The row lock decides the winner across replicas: a second resume waits here,
            # then finds the task running and gets TaskConflict.
            row = await conn.fetchrow(
                "SELECT * FROM tasks WHERE id = $1 AND tenant = $2 FOR UPDATE", task_id, tenant
            )
            if row is None:
                raise TaskNotFound(f"no task {task_id!r}")
            after, envelope = changes.resumed(rows.from_row(row), row["held"], input, at=at)
            await _unpark(conn, after, envelope, at)
            await self._record(conn, [changes.moved(after)])
            return Unpublished(after, envelope)

        return await self._transact(f"resuming task {task_id}", work)

    async def expire_pauses(self, *, now: str, limit: int) -> list[Unpublished]:
        async def work(conn: Any) -> list[Unpublished]:
            # SKIP LOCKED: a pause another replica is expiring (or a resume holds) is left
            # to it; each expired pause is failed once.
            found = await conn.fetch(
                "SELECT * FROM tasks WHERE status = 'paused' AND pause_until_us <= $1 "
                "ORDER BY pause_until_us, id LIMIT $2 FOR UPDATE SKIP LOCKED",
                rows.micros(now),
                limit,
            )
            claimed: list[Unpublished] = []
            drafts = []
            for row in found:
                after, record = changes.expired(rows.from_row(row), row["held"], at=now)
                await _unpark(conn, after, record, now)
                drafts.append(changes.moved(after))
                if record is not None:
                    claimed.append(Unpublished(after, record))
            await self._record(conn, drafts)
            return claimed

        return await self._transact("expiring pauses", work)

    async def claim_unpublished(self, before: str, *, now: str, limit: int) -> list[Unpublished]:
        async with self._failures("claiming unpublished tasks"):
            # SKIP LOCKED: a row a report or another replica's sweep holds is left for the
            # next sweep rather than waited for.
            found = await self._connected().fetch(
                "UPDATE tasks SET outbox_us = $2 WHERE id IN ("
                " SELECT id FROM tasks WHERE outbox IS NOT NULL"
                " AND outbox_us < $1 ORDER BY outbox_us, id LIMIT $3 FOR UPDATE SKIP LOCKED"
                ") RETURNING *",
                rows.micros(before),
                rows.micros(now),
                limit,
            )
        ordered = sorted(found, key=lambda row: (row["created_us"], row["id"]))
        return [Unpublished(rows.from_row(row), row["outbox"]) for row in ordered]

    async def get(self, task_id: str, tenant: str) -> Task:
        async with self._failures(f"reading task {task_id}"):
            row = await self._connected().fetchrow(
                "SELECT * FROM tasks WHERE id = $1 AND tenant = $2", task_id, tenant
            )
        if row is None:
            raise TaskNotFound(f"no task {task_id!r}")
        return rows.from_row(row)

    async def list_tasks(
        self, tenant: str, *, status: TaskStatus | None, limit: int, cursor: str | None
    ) -> Page:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        args: list[Any] = [tenant]
        where = ["tenant = $1"]
        if status is not None:
            args.append(str(status))
            where.append(f"status = ${len(args)}")
        if cursor is not None:
            args.extend(rows.decode_cursor(cursor))
            where.append(f"(created_us, id) < (${len(args) - 1}, ${len(args)})")
        args.append(limit + 1)
        sql = (
            f"SELECT * FROM tasks WHERE {' AND '.join(where)} "
            f"ORDER BY created_us DESC, id DESC LIMIT ${len(args)}"
        )
        async with self._failures("listing tasks"):
            found = await self._connected().fetch(sql, *args)
        more = len(found) > limit
        last = found[limit - 1] if more else None
        return Page(
            [rows.from_row(row) for row in found[:limit]],
            rows.encode_cursor(last["created_us"], last["id"]) if last is not None else None,
        )

    async def apply(self, reports: Sequence[wire.HopReport]) -> list[Event]:
        if not reports:
            return []
        batch = list(reports)
        ids = sorted({report["id"] for report in batch})

        async def work(conn: Any) -> list[Event]:
            # Lock in id order: another replica locking an overlapping batch waits, never
            # deadlocks. Unknown ids (envelopes not submitted here) cost nothing more.
            found = await conn.fetch(
                "SELECT * FROM tasks WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE", ids
            )
            loaded = {row["id"]: rows.from_row(row) for row in found}
            changed, drafts = changes.plan(loaded, batch)
            if changed:
                await conn.executemany(
                    _APPLY_TASK,
                    [
                        (*rows.mutable_values(task), task.status is TaskStatus.PAUSED, task.id)
                        for task in changed.values()
                    ],
                )
            return await self._record(conn, drafts)

        return await self._transact(f"applying {len(batch)} report(s)", work)

    async def cancel(self, task_id: str, tenant: str, *, at: str) -> Task:
        async def work(conn: Any) -> Task:
            row = await conn.fetchrow(
                "SELECT * FROM tasks WHERE id = $1 AND tenant = $2 FOR UPDATE", task_id, tenant
            )
            if row is None:
                raise TaskNotFound(f"no task {task_id!r}")
            task = rows.from_row(row)
            after = changes.canceled(task, at=at)
            if after is None:
                return task
            await _unpark(conn, after, changes.canceled_record(task, row["held"], at=at), at)
            await self._record(conn, [changes.moved(after)])
            return after

        return await self._transact(f"canceling task {task_id}", work)

    async def canceled_since(self, cursor: int) -> tuple[list[str], int]:
        async with self._failures("reading canceled tasks"):
            found = await self._connected().fetch(
                "SELECT seq, task_id FROM events WHERE status = 'canceled' AND seq > $1 "
                "ORDER BY seq LIMIT $2",
                cursor,
                CANCELED_PAGE,
            )
        return [row["task_id"] for row in found], (found[-1]["seq"] if found else cursor)

    async def events_since(self, task_id: str, tenant: str, seq: int) -> list[Event]:
        async with self._failures(f"reading the events of task {task_id}"):
            found = await self._connected().fetch(
                "SELECT * FROM events WHERE task_id = $1 AND tenant = $2 AND seq > $3 ORDER BY seq",
                task_id,
                tenant,
                seq,
            )
        return [_event(row) for row in found]

    def watch(self, task_id: str | None = None) -> Subscription:
        """New events of every task (or of `task_id` only), written through any replica,
        from now on (see the module's docstring); subscribed before it returns. Ends when
        the store closes."""
        return self._hub.subscribe(task_id)

    async def delete_finished(self, before: str) -> int:
        cutoff = rows.micros(before)

        async def work(conn: Any) -> int:
            # Lock in id order, as apply does, so the two never deadlock.
            ids = [
                row["id"]
                for row in await conn.fetch(
                    f"SELECT id FROM tasks WHERE status IN {_TERMINAL_SQL} AND updated_us < $1 "
                    "ORDER BY id FOR UPDATE",
                    cutoff,
                )
            ]
            if ids:
                await conn.execute("DELETE FROM events WHERE task_id = ANY($1::text[])", ids)
                await conn.execute("DELETE FROM tasks WHERE id = ANY($1::text[])", ids)
            return len(ids)

        return await self._transact("deleting finished tasks", work)

    # -- schema ----------------------------------------------------------------------------

    async def _prepare(self) -> None:
        async with self._failures("creating or migrating the schema"), self._pool.acquire() as conn:
            found_schema = await conn.fetchval("SELECT current_schema()")
            if found_schema is None:
                raise StoreError(
                    f"the gateway store {self.url} has no schema to create its tables in: "
                    "none of its search_path exists; create one or fix search_path"
                )
            await self._migrate(conn, found_schema)
            self._channel = channel_for(found_schema)
            self._cancel_lock = f"asya_gateway.cancel.{found_schema}"
            self._sequence = await conn.fetchval("SELECT pg_get_serial_sequence('events', 'seq')")
            self._last_seq = await conn.fetchval("SELECT coalesce(max(seq), 0) FROM events")

    async def _migrate(self, conn: Any, where: str) -> None:
        if await _version(conn) == schema.CURRENT_VERSION:
            return  # already current: opening changes nothing, and takes no lock
        async with conn.transaction():
            # One replica migrates; the others wait here, then find it done.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))", f"asya_gateway.schema.{where}"
            )
            await conn.execute(schema.VERSION_TABLE["postgresql"])
            for version, statements in schema.pending(await _version(conn), "postgresql", self.url):
                for statement in statements:
                    try:
                        await conn.execute(statement)
                    except asyncpg.DuplicateTableError as exc:
                        raise StoreError(
                            f"cannot create the schema of the gateway store {self.url} "
                            f"(version {version}): {exc}; that database (schema {where!r}) "
                            "holds tables of something else: give the gateway a database or "
                            "schema of its own"
                        ) from exc
                await conn.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)",
                    version,
                    datetime.now(UTC).isoformat(),
                )

    # -- events ----------------------------------------------------------------------------

    async def _record(self, conn: Any, drafts: Sequence[changes.Draft]) -> list[Event]:
        """Insert the drafts' events (inside the caller's transaction) and NOTIFY their seqs,
        which every replica's listener receives when the transaction commits."""
        if not drafts:
            return []
        if any(draft.cancels for draft in drafts):
            # Before taking seqs: canceled events then commit in seq order (module docstring).
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self._cancel_lock)
        taken = await conn.fetch(
            "SELECT nextval($1::regclass) FROM generate_series(1, $2)",
            self._sequence,
            len(drafts),
        )
        seqs = sorted(row[0] for row in taken)
        await conn.execute(
            _INSERT_EVENTS,
            seqs,
            [draft.task_id for draft in drafts],
            [draft.tenant for draft in drafts],
            [draft.kind for draft in drafts],
            [draft.status for draft in drafts],
            [rows.dump_json(draft.data) for draft in drafts],
            [draft.terminal for draft in drafts],
        )
        for payload in pack_seqs(seqs):
            await conn.execute("SELECT pg_notify($1, $2)", self._channel, payload)
        return [draft.numbered(seq) for draft, seq in zip(drafts, seqs, strict=True)]

    async def _listen(self) -> None:
        """Open the listening connection and LISTEN (before open() returns, so a watch()
        right after it misses nothing)."""
        async with self._failures("listening for events"):
            conn = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT_S)
            # An event of this connection's own: the end of one closed earlier (reported
            # late) must not be taken for the end of this one.
            lost = asyncio.Event()
            try:
                conn.add_termination_listener(lambda _conn: lost.set())
                await conn.add_listener(self._channel, self._notified)
            except BaseException:
                conn.terminate()
                raise
        self._listener, self._listener_lost = conn, lost

    async def _drop_listener(self) -> None:
        conn, self._listener = self._listener, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), CONNECT_TIMEOUT_S)
            except (TimeoutError, *_ERRORS):
                conn.terminate()

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self._inbox.put_nowait(payload)

    async def _keep_listening(self) -> None:
        """Watch the listening connection; when it is lost, reconnect (with backoff) and
        queue a catch-up."""
        while True:
            try:
                await asyncio.wait_for(self._listener_lost.wait(), LISTENER_CHECK_S)
            except TimeoutError:
                if await self._listener_alive():
                    continue
            log.warning("the gateway store %s: lost the event listener; reconnecting", self.url)
            await self._drop_listener()
            delay = 0.1
            while True:
                try:
                    await self._listen()
                    break
                except StoreError as exc:
                    log.warning("%s; retrying in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RECONNECT_MAX_S)
            self._inbox.put_nowait(_CATCH_UP)

    async def _listener_alive(self) -> bool:
        conn = self._listener
        if conn is None or conn.is_closed():
            return False
        try:
            await asyncio.wait_for(conn.fetchval("SELECT 1"), CONNECT_TIMEOUT_S)
        except (TimeoutError, *_ERRORS):
            return False
        return True

    async def _deliver_forever(self) -> None:
        while True:
            first = await self._inbox.get()
            items = [first]
            while not self._inbox.empty():  # take what else has come: one read for all
                items.append(self._inbox.get_nowait())
            try:
                await self._deliver(items)
            except StoreError as exc:
                log.warning("delivering new events to watchers: %s", exc)

    async def _deliver(self, items: list[str | _CatchUp]) -> None:
        notified: list[int] = []
        for item in items:
            if isinstance(item, _CatchUp):
                await self._deliver_seqs(notified)
                notified = []
                await self._catch_up()
            else:
                notified.extend(unpack_seqs(item))
        await self._deliver_seqs(notified)

    async def _deliver_seqs(self, seqs: list[int]) -> None:
        if not seqs:
            return
        self._last_seq = max(self._last_seq, *seqs)
        if not self._hub.subscribers:
            return
        async with self._failures("reading new events"):
            found = await self._connected().fetch(
                "SELECT * FROM events WHERE seq = ANY($1::bigint[]) ORDER BY seq", seqs
            )
        self._hub.publish([_event(row) for row in found])

    async def _catch_up(self) -> None:
        while True:
            async with self._failures("reading the events missed while reconnecting"):
                found = await self._connected().fetch(
                    "SELECT * FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
                    self._last_seq,
                    _CATCH_UP_PAGE,
                )
            if not found:
                return
            self._last_seq = found[-1]["seq"]
            self._hub.publish([_event(row) for row in found])

    # -- plumbing --------------------------------------------------------------------------

    def _connected(self) -> Any:
        if self._pool is None:
            raise StoreError(f"the gateway store {self.url} is not open")
        return self._pool

    @contextlib.asynccontextmanager
    async def _failures(self, doing: str) -> AsyncIterator[None]:
        """asyncpg's and the network's errors as StoreError naming the store (without its
        password) and what was being done."""
        try:
            yield
        except _ERRORS as exc:
            raise StoreError(
                f"the PostgreSQL gateway store {self.url} failed while {doing}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    async def _transact(self, doing: str, work: Callable[[Any], Awaitable[T]]) -> T:
        """Run `work(connection)` in one transaction; a deadlock PostgreSQL broke (the
        other side went on) is tried again."""
        for attempt in range(1, _DEADLOCK_RETRIES + 1):
            try:
                async with (
                    self._failures(doing),
                    self._connected().acquire() as conn,
                    conn.transaction(),
                ):
                    return await work(conn)
            except StoreError as exc:
                retry = isinstance(exc.__cause__, asyncpg.DeadlockDetectedError)
                if not retry or attempt == _DEADLOCK_RETRIES:
                    raise
                log.info("%s; trying again", exc)
        raise AssertionError("unreachable")  # the loop returns or raises


async def _unpark(conn: Any, task: Task, outbox: str | None, at: str) -> None:
    """Write `task` with its parked envelope gone and `outbox` (if any) to send."""
    await conn.execute(
        _UNPARK_TASK, *rows.mutable_values(task), task.deadline_at, outbox, rows.micros(at), task.id
    )


async def _version(conn: Any) -> int | None:
    exists = await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
    if not exists:
        return None
    found: int | None = await conn.fetchval("SELECT max(version) FROM schema_version")
    return found


def _event(row: Any) -> Event:
    return Event(
        seq=row["seq"],
        task_id=row["task_id"],
        tenant=row["tenant"],
        kind=row["kind"],
        data=rows.load_json(row["data"]),
        terminal=row["terminal"],
    )


def channel_for(schema_name: str) -> str:
    """The NOTIFY channel of the store in `schema_name`: stores in two schemas of one
    database must not hear each other. Channel names are at most 63 bytes."""
    channel = f"asya_gateway.{schema_name}"
    if len(channel.encode()) > 63:
        channel = "asya_gateway." + hashlib.sha256(schema_name.encode()).hexdigest()[:32]
    return channel


def pack_seqs(seqs: Sequence[int]) -> list[str]:
    """Ascending seqs as NOTIFY payloads: runs written "a-b", others "n", comma-separated,
    each payload under PostgreSQL's size limit."""
    parts: list[str] = []
    index = 0
    while index < len(seqs):
        end = index
        while end + 1 < len(seqs) and seqs[end + 1] == seqs[end] + 1:
            end += 1
        parts.append(str(seqs[index]) if end == index else f"{seqs[index]}-{seqs[end]}")
        index = end + 1
    payloads: list[str] = []
    current = ""
    for part in parts:
        if current and len(current) + 1 + len(part) > _PAYLOAD_MAX:
            payloads.append(current)
            current = ""
        current = f"{current},{part}" if current else part
    if current:
        payloads.append(current)
    return payloads


def unpack_seqs(payload: str) -> list[int]:
    """The seqs of a `pack_seqs` payload; a malformed one (not ours) gives none."""
    seqs: list[int] = []
    try:
        for part in payload.split(","):
            first, _, last = part.partition("-")
            seqs.extend(range(int(first), int(last or first) + 1))
    except ValueError:
        log.warning("ignoring a notification that is not a list of event seqs: %.80r", payload)
        return []
    return seqs
