"""Where the gateway keeps its tasks: `open_store(url)` picks the store a URL names.

    sqlite:///relative/file.db, sqlite:////absolute/file.db    SQLiteStore (sqlite.py)
    postgresql://user:password@host:5432/database              PostgresStore (postgres.py)

Both implement the `Store` protocol (base.py). The store comes back closed: `await
store.open()` connects and creates or migrates its schema.
"""

from __future__ import annotations

from asya_gateway.store.base import Store, StoreError
from asya_gateway.store.rows import InvalidCursor
from asya_gateway.store.urls import UnknownStoreURL, redact, sqlite_url

__all__ = [
    "InvalidCursor",
    "Store",
    "StoreError",
    "UnknownStoreURL",
    "open_store",
    "redact",
    "sqlite_url",
]


def open_store(url: str) -> Store:
    """The store `url` names, not yet opened; UnknownStoreURL (a StoreError) for a URL that
    names none, saying what to write instead."""
    from asya_gateway.store import urls

    scheme = urls.scheme_of(url)
    if scheme == "sqlite":
        from asya_gateway.store.sqlite import SQLiteStore

        return SQLiteStore(urls.sqlite_path(url))
    if scheme in urls.POSTGRES_SCHEMES:
        # Imported here: the SQLite store (asya dev) does not load the PostgreSQL driver.
        from asya_gateway.store.postgres import PostgresStore

        return PostgresStore(url)
    raise urls.unknown_scheme(url)
