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
import random
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple, Self, TypeVar

from asya_shared import env
from asya_shared.durations import positive_duration_from_env
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
# After the database failed (locked past the busy timeout, disk error): capped, jittered.
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0

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


def lease_seconds_from_env(environ: Mapping[str, str]) -> float:
    """ASYA_LOCAL_LEASE_SECONDS as seconds (`30`, `2.5`, `90s`, `5m`); it must be positive."""
    return positive_duration_from_env(
        environ,
        env.LOCAL_LEASE_SECONDS,
        DEFAULT_LEASE_SECONDS,
        maximum=math.inf,
        limit="a lease is a positive number of seconds, for example 30",
    )


def next_idle_delay(delay: float) -> float:
    """The pause after another empty poll: doubled, up to IDLE_MAX_S."""
    return min(delay * 2, IDLE_MAX_S)


def retry_delay(failures: int, jitter: float) -> float:
    """The pause after `failures` failed polls in a row; `jitter` in [0, 1) spreads processes."""
    # The exponent stops long past the cap: a database locked for hours must not overflow it.
    capped = min(RETRY_FIRST_S * 2.0 ** min(failures - 1, 16), RETRY_MAX_S)
    return capped * (0.5 + jitter / 2)


def _translate(exc: Exception, path: Path) -> TransportError:
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


# --- The asyncio shell ------------------------------------------------------------------------


class LocalTransport(ClosesOnExit):
    """Queues in `<state_dir>/queues.sqlite3`, shared by every process that opens the same dir."""

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
        self._receivers: set[_LocalReceiver] = set()
        self._held: set[_LocalDelivery] = set()  # leased by this instance, not yet settled

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> LocalTransport:
        state_dir = environ.get(env.STATE_DIR, "").strip() or DEFAULT_STATE_DIR
        return cls(state_dir, lease_seconds=lease_seconds_from_env(environ))

    async def __aenter__(self) -> Self:
        await self._call(lambda conn: None)  # open and migrate now, so errors surface here
        return self

    async def close(self) -> None:
        """Stop receivers, return unsettled deliveries to their queues, close the file."""
        if self._closing:
            return
        self._closing = True
        for receiver in list(self._receivers):
            await receiver.aclose()
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
        receiver = _LocalReceiver(self, queue, prefetch)
        self._receivers.add(receiver)
        return receiver

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

    async def _take(self, receiver: _LocalReceiver, limit: int) -> list[_LocalDelivery]:
        leased = await self._call(
            functools.partial(_take, queue=receiver.queue, limit=limit, lease_seconds=self._lease_s)
        )
        deliveries = [_LocalDelivery(self, receiver, message) for message in leased]
        self._held.update(deliveries)
        return deliveries

    async def _release(self, deliveries: list[_LocalDelivery]) -> None:
        """Return deliveries to their queues; on failure their leases expire instead."""
        for delivery in deliveries:
            delivery._mark_settled()
        if not deliveries:
            return
        try:
            await self._call(functools.partial(_release, handles=[d.handle for d in deliveries]))
        except TransportError as exc:
            # Nothing is lost: each lease runs out within lease_seconds and the message returns.
            _log.warning("could not return %d deliveries at once: %s", len(deliveries), exc)
        for queue in {d.queue for d in deliveries}:
            self._wake_receivers(queue)

    async def _settle(self, delivery: _LocalDelivery, *, ack: bool) -> None:
        if delivery.settled:
            return
        if ack:
            await self._call(functools.partial(_ack, handles=[delivery.handle]))
        else:
            await self._call(functools.partial(_release, handles=[delivery.handle]))
        delivery._mark_settled()
        if not ack:
            self._wake_receivers(delivery.queue)

    async def _extend(self, delivery: _LocalDelivery, seconds: float) -> None:
        if not (seconds >= 0 and math.isfinite(seconds)):
            raise ValueError(f"extend needs zero or a positive number of seconds, got {seconds!r}")
        if not delivery.settled:
            await self._call(functools.partial(_extend, handle=delivery.handle, seconds=seconds))

    def _forget(self, delivery: _LocalDelivery) -> None:
        self._held.discard(delivery)

    def _forget_receiver(self, receiver: _LocalReceiver) -> None:
        self._receivers.discard(receiver)

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
            raise _translate(exc, self.path) from exc

    def _disconnect(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error as exc:
                # Nothing is left to retry at shutdown: every commit is already in the WAL.
                _log.warning("closing the local queue database %s failed: %s", self.path, exc)
            self._conn = None


class _LocalDelivery:
    """One leased message; its (id, lease) handle settles it only while the lease is ours."""

    def __init__(
        self, transport: LocalTransport, receiver: _LocalReceiver, message: _Leased
    ) -> None:
        self._transport = transport
        self._receiver = receiver
        self._message = message
        self.settled = False

    @property
    def body(self) -> bytes:
        return self._message.body

    @property
    def delivery_count(self) -> int:
        return self._message.delivery_count

    @property
    def queue(self) -> str:
        return self._receiver.queue

    @property
    def handle(self) -> tuple[int, str]:
        return self._message.id, self._message.lease

    async def ack(self) -> None:
        await self._transport._settle(self, ack=True)

    async def nack(self) -> None:
        await self._transport._settle(self, ack=False)

    async def extend(self, seconds: float) -> None:
        await self._transport._extend(self, seconds)

    def _mark_settled(self) -> None:
        if not self.settled:
            self.settled = True
            self._transport._forget(self)
            self._receiver.slot_freed()


class _LocalReceiver:
    """A background task leases into a buffer; `__anext__` only waits on the buffer.

    Waiting on an asyncio.Queue can be cancelled without losing an item, which is what makes
    `__anext__` safe under `asyncio.wait_for`. The buffer ends with an exception or `None`
    (closed) that stays at its head, so every later `__anext__` sees the same end.
    """

    def __init__(self, transport: LocalTransport, queue: str, prefetch: int) -> None:
        self.queue = queue
        self._transport = transport
        self._prefetch = prefetch
        self._buffer: asyncio.Queue[_LocalDelivery | Exception | None] = asyncio.Queue()
        # Handed out or buffered, and not settled: what prefetch bounds.
        self._unsettled = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def __aiter__(self) -> _LocalReceiver:
        return self

    async def __anext__(self) -> _LocalDelivery:
        if self._task is None and not self._stopping:
            self._task = asyncio.create_task(self._fill(), name=f"asya-local-receive:{self.queue}")
        item = await self._buffer.get()
        if isinstance(item, _LocalDelivery):
            return item
        self._buffer.put_nowait(item)  # leave the end in place for the next caller
        if item is None:
            raise StopAsyncIteration
        raise item

    async def aclose(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            # The task ends at its next step; waiting (not cancelling) it means a lease in
            # flight lands in the buffer and is released below, instead of being stranded.
            await asyncio.wait([self._task])
        leftovers: list[_LocalDelivery] = []
        while not self._buffer.empty():
            item = self._buffer.get_nowait()
            if isinstance(item, _LocalDelivery):
                leftovers.append(item)
        self._buffer.put_nowait(None)
        self._transport._forget_receiver(self)
        await self._transport._release(leftovers)

    def wake(self) -> None:
        self._wake.set()

    def slot_freed(self) -> None:
        self._unsettled -= 1
        self._wake.set()

    async def _fill(self) -> None:
        idle, failures = IDLE_FIRST_S, 0
        try:
            while not self._stopping:
                # Cleared before looking, so a wake-up that comes while we look is kept.
                self._wake.clear()
                free = self._prefetch - self._unsettled
                if free <= 0:
                    await self._wake.wait()
                    continue
                try:
                    deliveries = await self._transport._take(self, free)
                except QueueNotFound as exc:
                    self._buffer.put_nowait(exc)
                    return
                except TransportUnavailable as exc:
                    failures += 1
                    pause = retry_delay(failures, random.random())
                    _log.warning(
                        "receiving from %r failed; retrying in %.2f s: %s", self.queue, pause, exc
                    )
                    await self._nap(pause)
                    continue
                failures = 0
                self._unsettled += len(deliveries)
                for delivery in deliveries:
                    self._buffer.put_nowait(delivery)
                if deliveries:
                    idle = IDLE_FIRST_S
                else:
                    await self._nap(idle)
                    idle = next_idle_delay(idle)
        except Exception as exc:  # a bug or a damaged file: end the subscription, loudly
            self._buffer.put_nowait(exc)

    async def _nap(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()
