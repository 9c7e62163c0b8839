"""The SQLite store: the shared contract on a file of its own per test, then what only this
store has (its file, WAL, URLs, polling between two processes' stores)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from asya_gateway.store import UnknownStoreURL, open_store, sqlite_url
from asya_gateway.store.base import Store, StoreError
from asya_gateway.store.sqlite import SQLiteStore
from asya_gateway.store.urls import redact, sqlite_path
from tests.gateway.builders import make_task
from tests.gateway.store_contract import MakeStore, RawSQL, StoreContract, next_events


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "gateway.db"  # the directory does not exist yet


@pytest.fixture
async def make_store(db_path: Path) -> AsyncIterator[MakeStore]:
    opened: list[Store] = []

    async def make() -> Store:
        store = open_store(sqlite_url(db_path))
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
def raw_sql(db_path: Path) -> RawSQL:
    async def run(sql: str) -> list[tuple[Any, ...]]:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(db_path, isolation_level=None)
        try:
            return [tuple(row) for row in conn.execute(sql).fetchall()]
        finally:
            conn.close()

    return run


@pytest.fixture
def unreachable_url(tmp_path: Path) -> str:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    return sqlite_url(blocker / "sub" / "gateway.db")


class TestSQLiteStore(StoreContract):
    dialect = "sqlite"


async def test_the_file_and_its_directory_are_created_in_wal_mode(
    make_store: MakeStore, db_path: Path
) -> None:
    await make_store()

    # mode=rw: fails if the store did not create the file.
    conn = sqlite3.connect(f"file:{db_path}?mode=rw", uri=True)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


async def test_a_file_of_something_else_is_refused(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE tasks (title TEXT)")
    conn.commit()
    conn.close()
    store = open_store(sqlite_url(db_path))

    with pytest.raises(StoreError, match="file of its own"):
        await store.open()
    await store.close()


@pytest.fixture
def not_a_database(db_path: Path) -> Path:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"this is not SQLite" * 100)
    return db_path


async def test_a_file_that_is_not_a_database_is_refused_naming_it(not_a_database: Path) -> None:
    db_path = not_a_database
    store = open_store(sqlite_url(db_path))

    with pytest.raises(StoreError, match=str(db_path)):
        await store.open()


async def test_a_store_that_is_not_open_says_so(db_path: Path) -> None:
    store = open_store(sqlite_url(db_path))

    with pytest.raises(StoreError, match="not open"):
        await store.get("t", "acme")


async def test_another_process_writes_are_seen_by_polling(db_path: Path) -> None:
    """Two stores on one file stand for two processes: the watcher's store learns of the
    other's writes only by reading the file (no notifications in SQLite)."""
    writer = SQLiteStore(db_path)
    reader = SQLiteStore(db_path, poll_interval=0.05)
    await writer.open()
    await reader.open()
    try:
        events = reader.watch()
        task = make_task()
        await writer.create(task)

        (seen,) = await next_events(events, 1)
        assert seen.task_id == task.id
        assert seen.data["status"] == "pending"
    finally:
        await reader.close()
        await writer.close()


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///gateway.db", Path("gateway.db")),
        ("sqlite:///state/gateway.db", Path("state/gateway.db")),
        ("sqlite:////var/lib/asya/gateway.db", Path("/var/lib/asya/gateway.db")),
        ("SQLITE:////tmp/x.db", Path("/tmp/x.db")),
    ],
)
def test_sqlite_urls_name_files_as_sqlalchemy_does(url: str, path: Path) -> None:
    assert sqlite_path(url) == path
    assert sqlite_path(sqlite_url(path)) == path


@pytest.mark.parametrize(
    "url",
    ["sqlite://", "sqlite:///", "sqlite:///:memory:", "sqlite:///x.db?mode=ro", "sqlite:x.db"],
)
def test_a_sqlite_url_without_a_file_is_refused(url: str) -> None:
    with pytest.raises(UnknownStoreURL, match=r"sqlite:////absolute/file\.db"):
        open_store(url)


@pytest.mark.parametrize(
    "url", ["mysql://root:s3cret@db/asya", "redis://localhost", "gateway.db", ""]
)
def test_an_unknown_store_url_is_refused_with_what_to_write(url: str) -> None:
    with pytest.raises(UnknownStoreURL) as raised:
        open_store(url)

    message = str(raised.value)
    assert "postgresql://" in message
    assert "ASYA_GATEWAY_STORE" in message
    assert "s3cret" not in message


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://asya:s3cret@db:5432/gw", "postgresql://asya:***@db:5432/gw"),
        (
            "postgresql://asya:p%40ss:w@db/gw?sslmode=require",
            "postgresql://asya:***@db/gw?sslmode=require",
        ),
        ("postgresql://asya@db/gw", "postgresql://asya@db/gw"),
        ("postgresql://:s3cret@[::1]:5432/gw", "postgresql://:***@[::1]:5432/gw"),
        ("sqlite:///gateway.db", "sqlite:///gateway.db"),
    ],
)
def test_redact_hides_only_the_password(url: str, shown: str) -> None:
    assert redact(url) == shown
