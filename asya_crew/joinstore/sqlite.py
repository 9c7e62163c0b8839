"""The SQLite join store, for `asya dev` and single-node installs.

The standard library's sqlite3 runs on ONE worker thread of the store's own (the connection
never changes threads and the event loop never waits on the disk). The file is in WAL mode
with a busy timeout, so two x-join processes on one file wait for each other instead of
failing. Every call that writes is one `BEGIN IMMEDIATE` transaction: it takes the file's
write lock before it reads the join it will change, so two processes can never both store
part 3, both take the last lease, or add a part to a join another one is finishing.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from asya_crew.joinstore import schema
from asya_crew.joinstore.base import (
    Arrival,
    Claimed,
    JoinStoreError,
    Part,
    check_add,
    lease_until,
)
from asya_shared import sqlite_files

__all__ = ["SQLiteJoinStore"]

T = TypeVar("T")

# Parameters per IN (...) list; SQLite allows 32766 per statement.
_CHUNK = 500
_DUE = "(state = 'open' AND deadline_us <= :now) OR (state = 'emitting' AND lease_until_us <= :now)"
_DUE_ORDER = "CASE state WHEN 'open' THEN deadline_us ELSE lease_until_us END, origin"


class SQLiteJoinStore:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.url = f"sqlite://{path}"
        self._db = sqlite_files.Worker(
            self.path,
            store=f"the join store {self.url}",
            error=JoinStoreError,
            path_setting="ASYA_JOIN_STORE",
            thread_name="asya-joinstore",
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        await self._db.open()
        try:
            await self._run("creating or migrating the schema", self._migrate)
        except BaseException:
            await self.close()  # no thread or open file left behind
            raise

    async def close(self) -> None:
        await self._db.close()

    # -- adding ----------------------------------------------------------------------------

    async def add_opener(
        self, origin: str, *, count: int, deadline_us: int, envelope: str
    ) -> Arrival:
        check_add(origin, count=count)

        def work(conn: sqlite3.Connection) -> Arrival:
            with sqlite_files.transaction(conn):
                row = _join_row(conn, origin)
                if row is None:
                    conn.execute(
                        "INSERT INTO joins (origin, count, deadline_us, opener) "
                        "VALUES (?, ?, ?, ?)",
                        (origin, count, deadline_us, envelope),
                    )
                    return Arrival(done=False, arrived=0, count=count, has_opener=True)
                if row["state"] == "done":
                    return _late(row)
                if row["opener"] is None:
                    conn.execute("UPDATE joins SET opener = ? WHERE origin = ?", (envelope, origin))
                return Arrival(
                    done=False, arrived=row["arrived"], count=row["count"], has_opener=True
                )

        return await self._run(f"storing the opener of join {origin}", work)

    async def add_part(
        self, origin: str, *, count: int, deadline_us: int, index: int, part: Part
    ) -> Arrival:
        check_add(origin, count=count, index=index)

        def work(conn: sqlite3.Connection) -> Arrival:
            with sqlite_files.transaction(conn):
                row = _join_row(conn, origin)
                if row is None:
                    conn.execute(
                        "INSERT INTO joins (origin, count, deadline_us) VALUES (?, ?, ?)",
                        (origin, count, deadline_us),
                    )
                    stored, arrived, has_opener = count, 0, False
                elif row["state"] == "done":
                    return _late(row)
                else:
                    stored, arrived = row["count"], row["arrived"]
                    has_opener = row["opener"] is not None
                # A part beyond the first writer's count has no place in the result.
                if index < stored:
                    added = conn.execute(
                        "INSERT INTO parts (origin, idx, ok, data) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (origin, idx) DO NOTHING",
                        (origin, index, part.ok, part.data),
                    ).rowcount
                    if added:
                        arrived += 1
                        conn.execute(
                            "UPDATE joins SET arrived = ? WHERE origin = ?", (arrived, origin)
                        )
                return Arrival(done=False, arrived=arrived, count=stored, has_opener=has_opener)

        return await self._run(f"storing part {index} of join {origin}", work)

    # -- claiming --------------------------------------------------------------------------

    async def claim_complete(
        self, origin: str, *, owner: str, now_us: int, lease_s: float
    ) -> Claimed | None:
        until = lease_until(now_us, lease_s)

        def work(conn: sqlite3.Connection) -> Claimed | None:
            with sqlite_files.transaction(conn):
                row = conn.execute(
                    "SELECT origin FROM joins WHERE origin = :origin AND ("
                    "(state = 'open' AND opener IS NOT NULL AND arrived >= count) OR "
                    "(state = 'emitting' AND lease_until_us <= :now))",
                    {"origin": origin, "now": now_us},
                ).fetchone()
                if row is None:
                    return None
                return _claim(conn, [origin], owner, until)[0]

        return await self._run(f"claiming the complete join {origin}", work)

    async def claim_expired(
        self, *, owner: str, now_us: int, lease_s: float, limit: int
    ) -> list[Claimed]:
        until = lease_until(now_us, lease_s)
        if limit < 1:
            raise ValueError(f"claim_expired needs a limit of at least 1, not {limit}")

        def work(conn: sqlite3.Connection) -> list[Claimed]:
            with sqlite_files.transaction(conn):
                found = conn.execute(
                    f"SELECT origin FROM joins WHERE {_DUE} ORDER BY {_DUE_ORDER} LIMIT :limit",
                    {"now": now_us, "limit": limit},
                ).fetchall()
                return _claim(conn, [row["origin"] for row in found], owner, until)

        return await self._run("claiming expired joins", work)

    # -- ending ----------------------------------------------------------------------------

    async def finish(self, origin: str, *, now_us: int) -> None:
        await self._run(f"finishing join {origin}", _end, origin, now_us)

    async def cancel(self, origin: str, *, now_us: int) -> None:
        await self._run(f"canceling join {origin}", _end, origin, now_us)

    async def purge(self, *, before_us: int) -> int:
        def work(conn: sqlite3.Connection) -> int:
            with sqlite_files.transaction(conn):
                gone = conn.execute(
                    "DELETE FROM joins WHERE state = 'done' AND done_us < ? RETURNING origin",
                    (before_us,),
                ).fetchall()
                # Done joins hold no parts; this only matters for a file an older or broken
                # writer left parts in.
                for chunk in _chunks([row["origin"] for row in gone]):
                    conn.execute(
                        f"DELETE FROM parts WHERE origin IN ({', '.join('?' * len(chunk))})",
                        chunk,
                    )
            return len(gone)

        return await self._run("purging ended joins", work)

    async def held(self) -> tuple[int, int]:
        def work(conn: sqlite3.Connection) -> tuple[int, int]:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM joins WHERE state <> 'done'), "
                "(SELECT count(*) FROM parts)"
            ).fetchone()
            return int(row[0]), int(row[1])

        return await self._run("counting held joins", work)

    # -- plumbing --------------------------------------------------------------------------

    def _migrate(self, conn: sqlite3.Connection) -> None:
        with sqlite_files.transaction(conn):
            conn.execute(schema.VERSION_TABLE)
            version: int | None = conn.execute(
                "SELECT max(version) FROM asya_join_schema"
            ).fetchone()[0]
            found = {
                row[0]
                for row in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                ).fetchall()
            }
            foreign = [name for name in schema.TABLES if name in found]
            for number, statements in schema.pending(
                "sqlite", version, foreign=foreign, url=self.url
            ):
                for statement in statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO asya_join_schema (version, applied_us) VALUES (?, ?)",
                    (number, time.time_ns() // 1000),
                )

    async def _run(self, doing: str, call: Callable[..., T], *args: Any) -> T:
        return await self._db.run(doing, call, *args)


def _join_row(conn: sqlite3.Connection, origin: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute(
        "SELECT state, count, arrived, opener FROM joins WHERE origin = ?", (origin,)
    ).fetchone()
    return row


def _late(row: sqlite3.Row) -> Arrival:
    return Arrival(done=True, arrived=0, count=row["count"], has_opener=False)


def _claim(
    conn: sqlite3.Connection, origins: Sequence[str], owner: str, until: int
) -> list[Claimed]:
    """Move `origins` (due, in this order, inside the caller's transaction) to emitting
    under `owner` until `until`, and read them with their parts."""
    claimed: list[Claimed] = []
    for chunk in _chunks(origins):
        marks = ", ".join("?" * len(chunk))
        conn.execute(
            "UPDATE joins SET state = 'emitting', owner = ?, lease_until_us = ?, "
            f"claims = claims + 1 WHERE origin IN ({marks})",
            (owner, until, *chunk),
        )
        joins = {
            row["origin"]: row
            for row in conn.execute(
                "SELECT origin, count, deadline_us, opener, claims FROM joins "
                f"WHERE origin IN ({marks})",
                chunk,
            )
        }
        parts: dict[str, dict[int, Part]] = {origin: {} for origin in chunk}
        for row in conn.execute(
            f"SELECT origin, idx, ok, data FROM parts WHERE origin IN ({marks})", chunk
        ):
            parts[row["origin"]][row["idx"]] = Part(ok=bool(row["ok"]), data=row["data"])
        for origin in chunk:
            row = joins[origin]
            claimed.append(
                Claimed(
                    origin=origin,
                    count=row["count"],
                    deadline_us=row["deadline_us"],
                    opener=row["opener"],
                    parts=dict(sorted(parts[origin].items())),
                    claims=row["claims"],
                )
            )
    return claimed


def _end(conn: sqlite3.Connection, origin: str, now_us: int) -> None:
    """Make `origin` a tombstone: no parts, no opener, state done (created if unseen, so
    its late parts are refused)."""
    with sqlite_files.transaction(conn):
        conn.execute(
            "INSERT INTO joins (origin, count, deadline_us, state, done_us) "
            "VALUES (?, 0, ?, 'done', ?) ON CONFLICT (origin) DO UPDATE SET state = 'done', "
            "arrived = 0, opener = NULL, owner = NULL, lease_until_us = NULL, "
            "done_us = coalesce(joins.done_us, excluded.done_us)",
            (origin, now_us, now_us),
        )
        conn.execute("DELETE FROM parts WHERE origin = ?", (origin,))


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]
