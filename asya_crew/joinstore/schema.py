"""The join store's tables, per dialect, and which migration steps a database still needs.

Version 1 is created with IF NOT EXISTS, so two processes opening a new database at once
both succeed; each step records its number in `asya_join_schema`, which is what a later
version reads to decide what to change.
"""

from __future__ import annotations

from asya_crew.joinstore.base import CURRENT_VERSION, JoinStoreError, StoreKind

__all__ = ["TABLES", "VERSION_TABLE", "pending"]

VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS asya_join_schema "
    "(version INTEGER PRIMARY KEY, applied_us BIGINT NOT NULL)"
)
# The tables a database must not already hold when it has no version row: they would be
# someone else's, with columns this store does not know.
TABLES = ("joins", "parts")

# `arrived` counts the join's part rows and changes under the join row's lock: counting up
# to 10,000 part rows on every add would make a big join quadratic.
_JOINS = """
CREATE TABLE IF NOT EXISTS joins (
    origin TEXT PRIMARY KEY,
    count INTEGER NOT NULL,
    deadline_us BIGINT NOT NULL,
    arrived INTEGER NOT NULL DEFAULT 0,
    opener TEXT,
    state TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'emitting', 'done')),
    owner TEXT,
    lease_until_us BIGINT,
    claims INTEGER NOT NULL DEFAULT 0,
    done_us BIGINT
)
"""
_PARTS = """
CREATE TABLE IF NOT EXISTS parts (
    origin TEXT NOT NULL,
    idx INTEGER NOT NULL,
    ok BOOLEAN NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (origin, idx)
)
"""
# The sweep asks for open joins past their deadline and emitting ones; purge for done ones.
_SWEEP_INDEX = "CREATE INDEX IF NOT EXISTS joins_sweep ON joins (state, deadline_us)"

_STEPS: dict[StoreKind, list[tuple[int, list[str]]]] = {
    # WITHOUT ROWID: parts are read and deleted by origin, which the primary key orders.
    "sqlite": [(1, [_JOINS, _PARTS.rstrip() + " WITHOUT ROWID", _SWEEP_INDEX])],
    "postgresql": [(1, [_JOINS, _PARTS, _SWEEP_INDEX])],
}


def pending(
    kind: StoreKind, version: int | None, *, foreign: list[str], url: str
) -> list[tuple[int, list[str]]]:
    """The steps a database at `version` (None: never migrated) still needs.

    `foreign`: which of TABLES exist; with no version row they belong to something else.
    """
    if version is None and foreign:
        raise JoinStoreError(
            f"the join store {url} already holds table(s) {', '.join(foreign)} that it did "
            "not create (no asya_join_schema row); give the join store a database (or "
            "PostgreSQL schema) of its own"
        )
    if version is not None and version > CURRENT_VERSION:
        raise JoinStoreError(
            f"the join store {url} has schema version {version}, newer than this x-join "
            f"knows ({CURRENT_VERSION}); run the newer asya version against it"
        )
    return [(number, steps) for number, steps in _STEPS[kind] if number > (version or 0)]
