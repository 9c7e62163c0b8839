"""Opening a SQLite file the way every Asya store does: WAL, a busy timeout, autocommit.

The gateway's task store and x-join's store keep their data in SQLite under `asya dev` and
on a single node; both need the same connection settings, and neither may import the other.
Callers translate the errors into their own, naming their store and the setting to change.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = ["BUSY_TIMEOUT_S", "NoWal", "connect"]

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
