"""SQLite files the way every Asya store uses them: WAL, a busy timeout, autocommit, one
worker thread per connection, IMMEDIATE transactions.

The gateway's task store and x-join's store keep their data in SQLite under `asya dev` and
on a single node; both need the same connection settings, and neither may import the other.
Callers translate the errors into their own, naming their store and the setting to change.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["BUSY_TIMEOUT_S", "NoWal", "Worker", "connect", "transaction"]

T = TypeVar("T")

# Long: a writer holds the lock for one change (a batch, a join's part), milliseconds; only a
# stuck process makes another wait this long.
BUSY_TIMEOUT_S = 30.0


class NoWal(Exception):
    """The file system cannot give SQLite its write-ahead log (a network mount, say)."""

    def __init__(self, mode: str) -> None:
        super().__init__(f"SQLite could not use WAL mode (got {mode!r})")
        self.mode = mode


def connect(path: Path, *, busy_timeout_s: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """A connection to `path` in WAL mode, autocommit (transactions are explicit), rows as
    sqlite3.Row, for the calling thread only. The directory is made if missing.

    Raises OSError (the directory), sqlite3.Error (the file is no database) or NoWal.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=True
    )
    try:
        conn.row_factory = sqlite3.Row
        mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        if mode.lower() != "wal":
            raise NoWal(mode)
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        # NORMAL is durable against a process crash in WAL mode; a power cut may lose the
        # last transactions. Every store built on this acknowledges work only after its
        # commit, so what is lost comes again (a redelivered message, a report re-sent).
        conn.execute("PRAGMA synchronous = NORMAL")
    except BaseException:
        conn.close()  # e.g. the file is not a database
        raise
    return conn


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any error. IMMEDIATE takes the write lock
    before the first read, so what a transaction reads cannot change before it writes."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class Worker:
    """One connection to a SQLite file, used from one thread of its own.

    sqlite3 blocks, so every call runs on that thread (`run`), off the event loop, one at a
    time. Errors come out as `error(message)`, the store's own exception type, naming
    `store` (say "the join store sqlite:///x.db") and what was being done.
    """

    def __init__(
        self,
        path: Path,
        *,
        store: str,
        error: Callable[[str], Exception],
        path_setting: str,
        thread_name: str,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
    ) -> None:
        self.path = path
        self.store = store
        self._error = error
        self._path_setting = path_setting  # what a person changes to move the file
        self._thread_name = thread_name
        self._busy_timeout_s = busy_timeout_s
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # touched on the worker thread only

    async def open(self) -> None:
        """Start the thread and connect; on failure nothing is left open."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._thread_name)
        try:
            await self._on_thread("opening the database", self._connect)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._executor is None:
            return
        with contextlib.suppress(Exception):
            await self._on_thread("closing the database", self._disconnect)
        self._executor.shutdown(wait=False)
        self._executor = None

    async def run(self, doing: str, call: Callable[..., T], *args: Any) -> T:
        """`call(connection, *args)` on the worker thread."""

        def connected() -> T:
            if self._conn is None:
                raise self._error(f"{self.store} is closed (while {doing})")
            return call(self._conn, *args)

        return await self._on_thread(doing, connected)

    async def _on_thread(self, doing: str, call: Callable[[], T]) -> T:
        if self._executor is None:
            raise self._error(f"{self.store} is not open (while {doing}); call open() first")

        def work() -> T:
            try:
                return call()
            except sqlite3.Error as exc:
                raise self._error(f"{self.store} failed while {doing}: {exc}") from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    def _connect(self) -> None:
        try:
            self._conn = connect(self.path, busy_timeout_s=self._busy_timeout_s)
        except OSError as exc:
            raise self._error(
                f"cannot create the directory of {self.store}: {exc}; give "
                f"{self._path_setting} a path this process may write"
            ) from exc
        except NoWal as exc:
            raise self._error(
                f"{self.store} cannot use SQLite's WAL mode (got {exc.mode!r}); put the file "
                "on a local file system"
            ) from None

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
