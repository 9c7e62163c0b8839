"""The join store: where x-join keeps each fan-in's opener and parts until it emits.

`open_join_store(url)` picks the backend (PostgreSQL in a cluster, SQLite under `asya dev`;
the URL is in ASYA_JOIN_STORE). It does not connect: `await store.open()` does. Backends
implement the protocol in base.py and raise JoinStoreError for anything the database did.
"""

from __future__ import annotations

from asya_crew.joinstore.base import (
    FORMS,
    Arrival,
    Claimed,
    JoinStore,
    JoinStoreError,
    Part,
)
from asya_crew.joinstore.base import parse_url as _parse_url

__all__ = [
    "FORMS",
    "Arrival",
    "Claimed",
    "JoinStore",
    "JoinStoreError",
    "Part",
    "open_join_store",
]


def open_join_store(url: str) -> JoinStore:
    """The store `url` names (see FORMS); ValueError for any other form."""
    kind, target = _parse_url(url)
    if kind == "postgresql":
        # Imported here: asyncpg is only needed where PostgreSQL is used.
        from asya_crew.joinstore.postgres import PostgresJoinStore

        return PostgresJoinStore(target)
    from asya_crew.joinstore.sqlite import SQLiteJoinStore

    return SQLiteJoinStore(target)
