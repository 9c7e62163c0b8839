"""The PostgreSQL join store: what several x-join replicas share in a cluster (asyncpg).

Every call is one or two statements outside any explicit transaction (each commits on its
own), and they stay correct across replicas because every change to a join happens under
its row lock:

- add_part locks the join row (SELECT ... FOR UPDATE), stores the part if the join is not
  done and bumps `arrived`, all in one statement. Two adders of one join take turns, so the
  last one always sees every part (nobody misses that the join became complete), and a part
  can never slip in after finish (finish takes the same lock before it deletes).
- claims are UPDATEs whose WHERE holds the claim rule: two claimers queue on the row lock
  and the second re-checks the rule on the row the first left (emitting, leased), so it
  gets nothing. The sweep skips rows others hold (FOR UPDATE SKIP LOCKED). The parts are
  read in a second statement, after the claim committed, so they include every part that
  `arrived` counted.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg

from asya_crew.joinstore import schema
from asya_crew.joinstore.base import (
    CURRENT_VERSION,
    Arrival,
    Claimed,
    JoinStoreError,
    Part,
    check_add,
    lease_until,
    redact,
)

__all__ = ["PostgresJoinStore"]

CONNECT_TIMEOUT_S = 10.0
COMMAND_TIMEOUT_S = 30.0
# x-join holds a connection for one statement at a time; a few cover a replica's prefetch.
POOL_SIZE = 4
# A concurrent first write of the same join makes the creating INSERT find the row; the
# next try then finds it too. More tries than that mean something else is wrong.
_TRIES = 3
_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)

_ADD_PART = """
WITH j AS (
    SELECT state, count, arrived, opener IS NOT NULL AS has_opener
    FROM joins WHERE origin = $1 FOR UPDATE
), p AS (
    INSERT INTO parts (origin, idx, ok, data)
    SELECT $1, $2, $3, $4 FROM j WHERE j.state <> 'done' AND $2 < j.count
    ON CONFLICT (origin, idx) DO NOTHING
    RETURNING idx
), u AS (
    UPDATE joins SET arrived = joins.arrived + 1 FROM p WHERE joins.origin = $1
    RETURNING joins.arrived
)
SELECT j.state, j.count, j.has_opener, coalesce((SELECT arrived FROM u), j.arrived) AS arrived
FROM j
"""
_CREATE_WITH_PART = """
WITH j AS (
    INSERT INTO joins (origin, count, deadline_us, arrived) VALUES ($1, $2, $3, 1)
    ON CONFLICT (origin) DO NOTHING
    RETURNING origin
), p AS (
    INSERT INTO parts (origin, idx, ok, data) SELECT origin, $4, $5, $6 FROM j
    ON CONFLICT (origin, idx) DO NOTHING
)
SELECT count(*) FROM j
"""
# The UPDATE sets the opener if the join is open and has none; when it changes nothing the
# row is read as it is (a duplicate opener, or a late one for a done join).
_ADD_OPENER = """
WITH u AS (
    UPDATE joins SET opener = $2
    WHERE origin = $1 AND opener IS NULL AND state <> 'done'
    RETURNING state, count, arrived
)
SELECT state, count, arrived, true AS has_opener FROM u
UNION ALL
SELECT state, count, arrived, opener IS NOT NULL FROM joins
WHERE origin = $1 AND NOT EXISTS (SELECT 1 FROM u)
"""
_CREATE_WITH_OPENER = """
INSERT INTO joins (origin, count, deadline_us, opener) VALUES ($1, $2, $3, $4)
ON CONFLICT (origin) DO NOTHING
RETURNING origin
"""
_CLAIMED_COLUMNS = "origin, count, deadline_us, opener, claims"
_CLAIM_COMPLETE = f"""
UPDATE joins SET state = 'emitting', owner = $2, lease_until_us = $4, claims = claims + 1
WHERE origin = $1 AND (
    (state = 'open' AND opener IS NOT NULL AND arrived >= count)
    OR (state = 'emitting' AND lease_until_us <= $3))
RETURNING {_CLAIMED_COLUMNS}
"""
_DUE = "(state = 'open' AND deadline_us <= $2) OR (state = 'emitting' AND lease_until_us <= $2)"
_CLAIM_EXPIRED = f"""
WITH due AS (
    SELECT origin, CASE state WHEN 'open' THEN deadline_us ELSE lease_until_us END AS due_us
    FROM joins WHERE {_DUE}
    ORDER BY due_us, origin LIMIT $4
    FOR UPDATE SKIP LOCKED
)
UPDATE joins j SET state = 'emitting', owner = $1, lease_until_us = $3, claims = j.claims + 1
FROM due WHERE j.origin = due.origin
RETURNING j.origin, j.count, j.deadline_us, j.opener, j.claims, due.due_us
"""
_PARTS = "SELECT origin, idx, ok, data FROM parts WHERE origin = ANY($1::text[]) ORDER BY idx"
# Under the row lock: adders that stored a part committed before it, later ones see done.
_END = """
INSERT INTO joins (origin, count, deadline_us, state, done_us) VALUES ($1, 0, $2, 'done', $2)
ON CONFLICT (origin) DO UPDATE SET state = 'done', arrived = 0, opener = NULL, owner = NULL,
    lease_until_us = NULL, done_us = coalesce(joins.done_us, excluded.done_us)
"""
_PURGE = """
WITH gone AS (
    DELETE FROM joins WHERE state = 'done' AND done_us < $1 RETURNING origin
), stray AS (
    DELETE FROM parts WHERE origin IN (SELECT origin FROM gone)
)
SELECT count(*) FROM gone
"""


class PostgresJoinStore:
    def __init__(self, url: str, *, pool_size: int = POOL_SIZE) -> None:
        self._dsn = url
        self.url = redact(url)
        self._pool_size = pool_size
        self._pool: Any = None  # asyncpg.Pool

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        async with self._failures("connecting"):
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=self._pool_size,
                timeout=CONNECT_TIMEOUT_S,
                command_timeout=COMMAND_TIMEOUT_S,
                reset=_keep_session,
            )
        try:
            await self._migrate()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await pool.close()
            except _ERRORS:
                pool.terminate()

    # -- adding ----------------------------------------------------------------------------

    async def add_opener(
        self, origin: str, *, count: int, deadline_us: int, envelope: str
    ) -> Arrival:
        check_add(origin, count=count)
        async with self._failures(f"storing the opener of join {origin}"):
            pool = self._connected()
            for _ in range(_TRIES):
                row = await pool.fetchrow(_ADD_OPENER, origin, envelope)
                if row is not None:
                    return _arrival(row)
                created = await pool.fetchval(
                    _CREATE_WITH_OPENER, origin, count, deadline_us, envelope
                )
                if created is not None:
                    return Arrival(done=False, arrived=0, count=count, has_opener=True)
        raise self._racing(origin)

    async def add_part(
        self, origin: str, *, count: int, deadline_us: int, index: int, part: Part
    ) -> Arrival:
        check_add(origin, count=count, index=index)
        async with self._failures(f"storing part {index} of join {origin}"):
            pool = self._connected()
            for _ in range(_TRIES):
                row = await pool.fetchrow(_ADD_PART, origin, index, part.ok, part.data)
                if row is not None:
                    return _arrival(row)
                created = await pool.fetchval(
                    _CREATE_WITH_PART, origin, count, deadline_us, index, part.ok, part.data
                )
                if created:
                    return Arrival(done=False, arrived=1, count=count, has_opener=False)
        raise self._racing(origin)

    # -- claiming --------------------------------------------------------------------------

    async def claim_complete(
        self, origin: str, *, owner: str, now_us: int, lease_s: float
    ) -> Claimed | None:
        until = lease_until(now_us, lease_s)
        async with self._failures(f"claiming the complete join {origin}"):
            pool = self._connected()
            row = await pool.fetchrow(_CLAIM_COMPLETE, origin, owner, now_us, until)
            if row is None:
                return None
            parts = await pool.fetch(_PARTS, [origin])
        return _claimed([row], parts)[0]

    async def claim_expired(
        self, *, owner: str, now_us: int, lease_s: float, limit: int
    ) -> list[Claimed]:
        until = lease_until(now_us, lease_s)
        if limit < 1:
            raise ValueError(f"claim_expired needs a limit of at least 1, not {limit}")
        async with self._failures("claiming expired joins"):
            pool = self._connected()
            found = await pool.fetch(_CLAIM_EXPIRED, owner, now_us, until, limit)
            if not found:
                return []
            # RETURNING comes in no particular order: the longest overdue goes first.
            found = sorted(found, key=lambda row: (row["due_us"], row["origin"]))
            parts = await pool.fetch(_PARTS, [row["origin"] for row in found])
        return _claimed(found, parts)

    # -- ending ----------------------------------------------------------------------------

    async def finish(self, origin: str, *, now_us: int) -> None:
        await self._end(f"finishing join {origin}", origin, now_us)

    async def cancel(self, origin: str, *, now_us: int) -> None:
        await self._end(f"canceling join {origin}", origin, now_us)

    async def purge(self, *, before_us: int) -> int:
        async with self._failures("purging ended joins"):
            gone: int = await self._connected().fetchval(_PURGE, before_us)
        return gone

    async def held(self) -> tuple[int, int]:
        async with self._failures("counting held joins"):
            row = await self._connected().fetchrow(
                "SELECT (SELECT count(*) FROM joins WHERE state <> 'done') AS joins, "
                "(SELECT count(*) FROM parts) AS parts"
            )
        return int(row["joins"]), int(row["parts"])

    # -- plumbing --------------------------------------------------------------------------

    async def _end(self, doing: str, origin: str, now_us: int) -> None:
        async with self._failures(doing):
            pool = self._connected()
            await pool.execute(_END, origin, now_us)
            # After the tombstone committed no part can be added, so this deletes them all;
            # if the process dies in between, purge deletes the rest with the tombstone.
            await pool.execute("DELETE FROM parts WHERE origin = $1", origin)

    async def _migrate(self) -> None:
        async with (
            self._failures("creating or migrating the schema"),
            self._pool.acquire() as conn,
        ):
            where = await conn.fetchval("SELECT current_schema()")
            if where is None:
                raise JoinStoreError(
                    f"the join store {self.url} has no schema to create its tables in: none "
                    "of its search_path exists; create one or fix search_path in the URL"
                )
            if await _version(conn) == CURRENT_VERSION:
                # Already current: open takes no lock and needs no right to create tables.
                return
            async with conn.transaction():
                # One replica migrates; the others wait here, then find it done.
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext($1))", f"asya_join.schema.{where}"
                )
                await conn.execute(schema.VERSION_TABLE)
                version = await _version(conn)
                found = await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = $1 "
                    "AND tablename = ANY($2::text[])",
                    where,
                    list(schema.TABLES),
                )
                foreign = sorted(row["tablename"] for row in found)
                for number, statements in schema.pending(
                    "postgresql", version, foreign=foreign, url=self.url
                ):
                    for statement in statements:
                        await conn.execute(statement)
                    await conn.execute(
                        "INSERT INTO asya_join_schema (version, applied_us) VALUES ($1, $2)",
                        number,
                        time.time_ns() // 1000,
                    )

    def _connected(self) -> Any:
        if self._pool is None:
            raise JoinStoreError(f"the join store {self.url} is not open; call open() first")
        return self._pool

    def _racing(self, origin: str) -> JoinStoreError:
        return JoinStoreError(
            f"the PostgreSQL join store {self.url} could neither find nor create join "
            f"{origin} in {_TRIES} tries (is something deleting its row?)"
        )

    @contextlib.asynccontextmanager
    async def _failures(self, doing: str) -> AsyncIterator[None]:
        """asyncpg's and the network's errors as JoinStoreError naming the store (without
        its password) and the operation."""
        try:
            yield
        except _ERRORS as exc:
            raise JoinStoreError(
                f"the PostgreSQL join store {self.url} failed while {doing}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc


async def _version(conn: Any) -> int | None:
    if not await conn.fetchval("SELECT to_regclass('asya_join_schema') IS NOT NULL"):
        return None
    found: int | None = await conn.fetchval("SELECT max(version) FROM asya_join_schema")
    return found


async def _keep_session(conn: Any) -> None:
    """The pool's reset: nothing to undo. These statements never LISTEN, SET, open cursors or
    take session locks (asyncpg still ends a transaction left open), and asyncpg's default
    reset would cost every call one more round trip."""


def _arrival(row: Any) -> Arrival:
    if row["state"] == "done":
        return Arrival(done=True, arrived=0, count=row["count"], has_opener=False)
    return Arrival(
        done=False, arrived=row["arrived"], count=row["count"], has_opener=row["has_opener"]
    )


def _claimed(joins: Sequence[Any], parts: Sequence[Any]) -> list[Claimed]:
    by_origin: dict[str, dict[int, Part]] = {row["origin"]: {} for row in joins}
    for row in parts:  # in index order
        by_origin[row["origin"]][row["idx"]] = Part(ok=row["ok"], data=row["data"])
    return [
        Claimed(
            origin=row["origin"],
            count=row["count"],
            deadline_us=row["deadline_us"],
            opener=row["opener"],
            parts=by_origin[row["origin"]],
            claims=row["claims"],
        )
        for row in joins
    ]
