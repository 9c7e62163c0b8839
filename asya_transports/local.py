"""The embedded transport: durable queues in one SQLite file, for `asya dev` and tests.

Several OS processes (one sidecar per actor) share `<state_dir>/queues.sqlite3`. A message is
a row. Receiving leases rows inside a write transaction: it hides them until `visible_at` and
stamps each with a fresh random token. Two processes therefore never take the same row at once.
A consumer that dies without settling only delays its messages until their leases expire.
Settling is guarded by the token, so a stale handle (its lease expired and someone else took
the message) changes nothing.

What this module must not do:
- let a sqlite3 exception escape: they become the errors of base.py, chained;
- call sqlite3 on the event loop: every call runs on the transport's own thread, which alone
  owns the connection;
- compare monotonic clocks between processes: `visible_at` is wall-clock `time.time()`, the
  only clock that processes share.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple, Self, TypeVar

from asya_shared import env
from asya_shared.durations import positive_duration_from_env
from asya_transports import receiving
from asya_transports.base import (
    ClosesOnExit,
    MessageTooLarge,
    QueueNotFound,
    Receiver,
    TransportError,
    TransportUnavailable,
)

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

DB_FILENAME = "queues.sqlite3"
DEFAULT_STATE_DIR = ".asya"
DEFAULT_LEASE_SECONDS = 30.0
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024  # SQLite's own BLOB limit is 1e9 bytes

# How long a statement waits for another process's write lock. Write transactions here last
# milliseconds, so waiting 10 s means the lock holder is stuck, not merely busy.
BUSY_TIMEOUT_S = 10.0

# Polling an empty queue: start at 2 ms so a message from another process is picked up fast
# under load; back off to 100 ms so an idle consumer costs about 10 cheap queries a second.
IDLE_FIRST_S = 0.002
IDLE_MAX_S = 0.1
# After the database failed (locked past the busy timeout, disk error): from 0.1 s up to 5 s.
RETRY_BACKOFF = receiving.Backoff(initial=0.1, cap=5.0)
# How long `close` lets a fetch in flight finish so its rows can be given back at once.
ORPHAN_GRACE_S = 2.0

# Each entry moves the schema up one version (PRAGMA user_version). Append; never edit one
# that has shipped, since state dirs written by older versions replay only the newer steps.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE queues (name TEXT PRIMARY KEY, created_at REAL NOT NULL)",
        # AUTOINCREMENT: ids are never reused, so delivery order follows send order and a
        # (id, lease) handle can never name a later message.
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            queue TEXT NOT NULL,
            body BLOB NOT NULL,
            visible_at REAL NOT NULL,
            receive_count INTEGER NOT NULL DEFAULT 0,
            lease TEXT,
            enqueued_at REAL NOT NULL
        )""",
        "CREATE INDEX messages_by_visibility ON messages (queue, visible_at)",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)


# --- Pure rules -------------------------------------------------------------------------------


def next_idle_delay(delay: float) -> float:
    """The pause after another empty poll: doubled, up to IDLE_MAX_S."""
    return min(delay * 2, IDLE_MAX_S)


def lease_from_env(environ: Mapping[str, str]) -> float:
    """ASYA_LOCAL_LEASE_SECONDS as seconds (`30`, `2.5`, `90s`, `5m`); it must be positive."""
    return positive_duration_from_env(
        environ,
        env.LOCAL_LEASE_SECONDS,
        DEFAULT_LEASE_SECONDS,
        maximum=math.inf,
        limit="a lease is a positive number of seconds, for example 30",
    )


def translate(exc: Exception, *, path: Path) -> TransportError:
    """The base.py error for a sqlite3 or OS error raised while using the file at `path`."""
    code = getattr(exc, "sqlite_errorname", "")
    if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return TransportUnavailable(
            f"the local queue database {path} stayed locked for more than {BUSY_TIMEOUT_S:g} s: "
            f"another process holds its write lock; retry later ({exc})"
        )
    if isinstance(exc, sqlite3.OperationalError | OSError):
        return TransportUnavailable(f"the local queue database {path} cannot be used now: {exc}")
    return TransportError(
        f"the local queue database {path} failed: {exc}. If the file is damaged, stop every "
        "process that uses it and remove it (its messages are lost)"
    )


# --- Statements, run on the transport's thread ------------------------------------------------


class _Leased(NamedTuple):
    id: int
    lease: str
    body: bytes
    delivery_count: int


@contextlib.contextmanager
def _write(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction that takes the write lock up front.

    A deferred transaction that reads first and writes later fails at once, without waiting,
    when another process committed in between (WAL cannot upgrade a stale snapshot).
    BEGIN IMMEDIATE waits for the lock under the busy timeout instead.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        # A failed COMMIT leaves the transaction open, and the next BEGIN would fail with it.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _open(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: no implicit transactions; `_write` states each one.
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            # WAL needs shared memory between processes; some network filesystems refuse it.
            raise TransportError(
                f"the local queue database {path} cannot use WAL mode (got {mode!r}); put "
                f"{env.STATE_DIR} on a local disk"
            )
        # In WAL mode, NORMAL syncs the log at checkpoints, not at every commit: a commit
        # survives the crash of any process, but a power loss or OS crash may roll back the
        # last transactions (never corrupt the file). Enough for development queues.
        conn.execute("PRAGMA synchronous=NORMAL")
        _migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    with _write(conn):
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise TransportError(
                f"the local queue database {path} has schema version {version}, newer than "
                f"this Asya understands ({SCHEMA_VERSION}); upgrade Asya or use another "
                f"{env.STATE_DIR}"
            )
        for statements in _MIGRATIONS[version:]:
            for statement in statements:
                conn.execute(statement)
        if version < SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION:d}")


def _queue_exists(conn: sqlite3.Connection, queue: str) -> bool:
    return conn.execute("SELECT 1 FROM queues WHERE name = ?", (queue,)).fetchone() is not None


def _ensure(conn: sqlite3.Connection, queue: str) -> None:
    with _write(conn):
        conn.execute(
            "INSERT OR IGNORE INTO queues (name, created_at) VALUES (?, ?)", (queue, time.time())
        )


def _delete(conn: sqlite3.Connection, queue: str) -> None:
    with _write(conn):
        conn.execute("DELETE FROM messages WHERE queue = ?", (queue,))
        conn.execute("DELETE FROM queues WHERE name = ?", (queue,))


def _depth(conn: sqlite3.Connection, queue: str) -> int:
    if not _queue_exists(conn, queue):
        raise QueueNotFound(queue)
    # Held = an unexpired lease. Delayed messages (no lease yet) and expired leases wait.
    row = conn.execute(
        "SELECT COUNT(*) FROM messages WHERE queue = ? AND (lease IS NULL OR visible_at <= ?)",
        (queue, time.time()),
    ).fetchone()
    return int(row[0])


def _insert(conn: sqlite3.Connection, queue: str, body: bytes, delay: float) -> None:
    with _write(conn):
        now = time.time()
        inserted = conn.execute(
            "INSERT INTO messages (queue, body, visible_at, enqueued_at) "
            "SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM queues WHERE name = ?)",
            (queue, body, now + delay, now, queue),
        ).rowcount
    if inserted == 0:
        raise QueueNotFound(queue, "create it first (ensure_queue), or check the name")


def _take(conn: sqlite3.Connection, queue: str, limit: int, lease_seconds: float) -> list[_Leased]:
    """Lease up to `limit` visible messages, longest visible first; QueueNotFound if the queue
    is gone."""
    with _write(conn):
        # The clock is read under the write lock, so leases are ordered like the lock grants.
        now = time.time()
        rows = conn.execute(
            "SELECT id, body, receive_count FROM messages "
            "WHERE queue = ? AND visible_at <= ? ORDER BY visible_at, id LIMIT ?",
            (queue, now, limit),
        ).fetchall()
        if not rows and not _queue_exists(conn, queue):
            raise QueueNotFound(queue, "nothing can be received from it; create it first")
        leased = [_Leased(row_id, secrets.token_hex(8), body, n + 1) for row_id, body, n in rows]
        conn.executemany(
            "UPDATE messages SET visible_at = ?, receive_count = ?, lease = ? WHERE id = ?",
            [(now + lease_seconds, m.delivery_count, m.lease, m.id) for m in leased],
        )
    return leased


def _ack(conn: sqlite3.Connection, handles: Iterable[tuple[int, str]]) -> None:
    with _write(conn):
        conn.executemany("DELETE FROM messages WHERE id = ? AND lease = ?", handles)


def _release(conn: sqlite3.Connection, handles: Iterable[tuple[int, str]]) -> None:
    """Make leased messages visible at once; a handle whose lease was taken over matches no row."""
    with _write(conn):
        now = time.time()
        conn.executemany(
            "UPDATE messages SET visible_at = ?, lease = NULL WHERE id = ? AND lease = ?",
            [(now, row_id, lease) for row_id, lease in handles],
        )


def _extend(conn: sqlite3.Connection, handle: tuple[int, str], seconds: float) -> None:
    with _write(conn):
        conn.execute(
            "UPDATE messages SET visible_at = ? WHERE id = ? AND lease = ?",
            (time.time() + seconds, *handle),
        )


# --- Deliveries and receivers -----------------------------------------------------------------


class LocalDelivery(receiving.PolledDelivery):
    """One leased message; its (id, lease) handle settles it only while the lease is ours."""

    def __init__(
        self, transport: LocalTransport, receiver: LocalReceiver, message: _Leased
    ) -> None:
        super().__init__(
            receiver,
            body=message.body,
            delivery_count=message.delivery_count,
            held=transport._held,
        )
        self.handle = (message.id, message.lease)
        self._transport = transport

    async def extend(self, seconds: float) -> None:
        if not (seconds >= 0 and math.isfinite(seconds)):
            raise ValueError(f"extend needs zero or a positive number of seconds, got {seconds!r}")
        if not self.settled:
            await self._transport._extend(self, seconds)

    async def _delete(self) -> None:
        await self._transport._ack(self)

    async def _return(self) -> None:
        await self._transport._release([self])


class LocalReceiver(receiving.PollingReceiver[LocalDelivery, list[_Leased]]):
    """Leases rows into the inbox (implements base.Receiver).

    SQLite cannot tell a waiting process that a row arrived, so an empty queue is polled:
    every IDLE_FIRST_S at first, backing off to IDLE_MAX_S. A send or a nack in this process
    wakes the receivers of that queue at once.
    """

    def __init__(self, transport: LocalTransport, queue: str, *, prefetch: int) -> None:
        super().__init__(
            queue, prefetch=prefetch, backoff=RETRY_BACKOFF, receivers=transport._receivers
        )
        self._transport = transport
        self._idle = IDLE_FIRST_S

    async def _fetch(self, count: int) -> list[_Leased]:
        return await self._transport._take(self.queue, count)

    async def _accept(self, batch: list[_Leased]) -> list[LocalDelivery]:
        return [LocalDelivery(self._transport, self, message) for message in batch]

    async def _give_back(self, deliveries: list[LocalDelivery]) -> None:
        await self._transport._release(deliveries)

    async def _between_fetches(self, received: int) -> None:
        if received:
            self._idle = IDLE_FIRST_S
            return
        await self._nap(self._idle)
        self._idle = next_idle_delay(self._idle)


# --- The transport ----------------------------------------------------------------------------


class LocalTransport(ClosesOnExit):
    """Queues in `<state_dir>/queues.sqlite3`, shared by every process that opens the same dir
    (implements base.Broker)."""

    name = "local"

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        if not (lease_seconds > 0 and math.isfinite(lease_seconds)):
            raise ValueError(f"lease_seconds must be a positive number, got {lease_seconds!r}")
        if max_message_bytes < 1:
            raise ValueError(f"max_message_bytes must be positive, got {max_message_bytes!r}")
        self.path = Path(state_dir) / DB_FILENAME
        self.max_message_bytes = max_message_bytes
        # Typed as the protocol declares it (a mutable protocol attribute is invariant).
        self.lease_seconds: float | None = float(lease_seconds)
        self.max_delay_seconds = math.inf
        self._lease_s = float(lease_seconds)
        # One thread owns the connection: sqlite3 objects must stay on the thread that made
        # them, and one writer per process is all SQLite allows at once anyway.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asya-local")
        self._conn: sqlite3.Connection | None = None  # touched only on the executor thread
        self._closing = False
        self._shut = False
        self._receivers: set[LocalReceiver] = set()
        self._held: set[LocalDelivery] = set()  # leased by this instance, not yet settled

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> LocalTransport:
        """Configure from ASYA_STATE_DIR and ASYA_LOCAL_LEASE_SECONDS (empty means unset)."""
        state_dir = environ.get(env.STATE_DIR, "").strip() or DEFAULT_STATE_DIR
        return cls(state_dir, lease_seconds=lease_from_env(environ))

    async def __aenter__(self) -> Self:
        await self._call(lambda conn: None)  # open and migrate now, so errors surface here
        return self

    async def close(self) -> None:
        """Stop receivers, return unsettled deliveries to their queues, close the file."""
        if self._closing:
            return
        self._closing = True
        for receiver in list(self._receivers):
            await receiver.close_within(ORPHAN_GRACE_S)
        await self._release(list(self._held))
        self._shut = True
        # Straight to the thread, not through _call, which would open a file never opened.
        await asyncio.get_running_loop().run_in_executor(self._executor, self._disconnect)
        # The thread has just finished its last job and is idle, so it exits without a join.
        self._executor.shutdown(wait=False)

    def receive(self, queue: str, *, prefetch: int) -> Receiver:
        if self._closing:
            raise TransportUnavailable(f"the local transport on {self.path} is closed")
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch!r}")
        return LocalReceiver(self, queue, prefetch=prefetch)

    async def send(self, queue: str, body: bytes, *, delay: float = 0.0) -> None:
        if len(body) > self.max_message_bytes:
            raise MessageTooLarge(queue, len(body), self.max_message_bytes)
        if not (delay >= 0 and math.isfinite(delay)):
            raise ValueError(f"delay must be zero or a positive number of seconds, got {delay!r}")
        await self._call(functools.partial(_insert, queue=queue, body=body, delay=delay))
        self._wake_receivers(queue)

    async def ensure_queue(self, queue: str) -> None:
        await self._call(functools.partial(_ensure, queue=queue))

    async def delete_queue(self, queue: str) -> None:
        await self._call(functools.partial(_delete, queue=queue))

    async def queue_depth(self, queue: str) -> int:
        return await self._call(functools.partial(_depth, queue=queue))

    # Used by receivers and deliveries.

    async def _take(self, queue: str, limit: int) -> list[_Leased]:
        return await self._call(
            functools.partial(_take, queue=queue, limit=limit, lease_seconds=self._lease_s)
        )

    async def _ack(self, delivery: LocalDelivery) -> None:
        await self._call(functools.partial(_ack, handles=[delivery.handle]))

    async def _release(self, deliveries: list[LocalDelivery]) -> None:
        """Return deliveries to their queues; on failure their leases expire instead."""
        for delivery in deliveries:
            delivery.mark_settled()
        if not deliveries:
            return
        try:
            await self._call(functools.partial(_release, handles=[d.handle for d in deliveries]))
        except TransportError as exc:
            # Nothing is lost: each lease runs out within lease_seconds and the message returns.
            _log.warning("could not return %d deliveries at once: %s", len(deliveries), exc)
        for queue in {d.queue for d in deliveries}:
            self._wake_receivers(queue)

    async def _extend(self, delivery: LocalDelivery, seconds: float) -> None:
        await self._call(functools.partial(_extend, handle=delivery.handle, seconds=seconds))

    def _wake_receivers(self, queue: str) -> None:
        """Receivers in this process poll less when idle; spare them the wait for local news."""
        for receiver in self._receivers:
            if receiver.queue == queue:
                receiver.wake()

    async def _call(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        if self._shut:
            raise TransportUnavailable(f"the local transport on {self.path} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._on_thread, work)

    def _on_thread(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        try:
            if self._conn is None:
                self._conn = _open(self.path)
            return work(self._conn)
        except (sqlite3.Error, OSError) as exc:
            raise translate(exc, path=self.path) from exc

    def _disconnect(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error as exc:
                # Nothing is left to retry at shutdown: every commit is already in the WAL.
                _log.warning("closing the local queue database %s failed: %s", self.path, exc)
            self._conn = None
