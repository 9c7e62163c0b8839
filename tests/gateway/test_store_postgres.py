"""The PostgreSQL store: the shared contract on a schema of its own per test (in the run's
database), then what only this store has (LISTEN/NOTIFY across replicas, a listener that
reconnects, refusing a database that holds someone else's tables)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from asya_gateway.store import open_store
from asya_gateway.store.base import Store, StoreError
from asya_gateway.store.postgres import PostgresStore, channel_for, pack_seqs, unpack_seqs
from asya_gateway.store.schema import CURRENT_VERSION
from asya_gateway.store.sqlite import SQLiteStore
from tests.gateway.builders import lifecycle, make_task
from tests.gateway.store_contract import (
    ACTORS,
    MakeStore,
    RawSQL,
    StoreContract,
    events_until,
    succeeded_report,
)
from tests.support.postgres import drop_schema, fresh_schema
from tests.support.services import free_port
from tests.support.waiting import eventually


@pytest.fixture
async def schema_url(postgres_url: str) -> AsyncIterator[str]:
    schema, url = await fresh_schema(postgres_url)
    yield url
    await drop_schema(postgres_url, schema)


@pytest.fixture
async def make_store(schema_url: str) -> AsyncIterator[MakeStore]:
    opened: list[Store] = []

    async def make() -> Store:
        store = open_store(schema_url)
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
def raw_sql(schema_url: str) -> RawSQL:
    async def run(sql: str) -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(schema_url)
        try:
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()

    return run


@pytest.fixture
def unreachable_url() -> str:
    return f"postgresql://asya:s3cret@127.0.0.1:{free_port()}/gateway"


class TestPostgresStore(StoreContract):
    dialect = "postgresql"


async def test_the_error_of_an_unreachable_server_names_it_without_the_password(
    unreachable_url: str,
) -> None:
    store = open_store(unreachable_url)

    with pytest.raises(StoreError) as raised:
        await store.open()

    port = unreachable_url.rsplit(":", 1)[1].split("/")[0]
    assert f"postgresql://asya:***@127.0.0.1:{port}/gateway" in str(raised.value)
    assert "s3cret" not in str(raised.value)


async def test_a_missing_database_is_named(postgres_url: str) -> None:
    store = open_store(postgres_url.rsplit("/", 1)[0] + "/asya_no_such_database")

    with pytest.raises(StoreError, match="asya_no_such_database"):
        await store.open()


async def test_a_schema_holding_someone_elses_tables_is_refused(
    schema_url: str, raw_sql: RawSQL
) -> None:
    await raw_sql("CREATE TABLE tasks (title text)")
    store = open_store(schema_url)

    with pytest.raises(StoreError, match="of its own"):
        await store.open()


async def test_replicas_starting_together_create_the_schema_once(
    schema_url: str, raw_sql: RawSQL
) -> None:
    stores = [PostgresStore(schema_url) for _ in range(3)]
    try:
        await asyncio.gather(*(store.open() for store in stores))
        assert await raw_sql("SELECT count(*) FROM schema_version") == [(CURRENT_VERSION,)]
    finally:
        for store in stores:
            await store.close()


async def test_the_listener_reconnects_and_catches_up(
    make_store: MakeStore, schema_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer, reader = await make_store(), await make_store()
    assert isinstance(reader, PostgresStore)
    events = reader.watch()
    first, second = make_task(), make_task()
    await writer.create(first)
    await events_until(events, lambda seen: any(e.task_id == first.id for e in seen))
    # Hold the reader's reconnect until the writes below are done, so what it delivers
    # afterwards can only come from its catch-up read, not from notifications.
    reconnect = asyncio.Event()
    listen = reader._listen

    async def held_listen() -> None:
        await reconnect.wait()
        await listen()

    monkeypatch.setattr(reader, "_listen", held_listen)

    # Kill the reader's listening connection, as a database failover or a proxy would.
    listener_pid = reader._listener.get_server_pid()
    admin = await asyncpg.connect(schema_url)
    try:
        await admin.fetchval("SELECT pg_terminate_backend($1)", listener_pid)
    finally:
        await admin.close()
    await eventually(lambda: reader._listener is None, what="the reader to notice the loss")
    await writer.create(second)
    written = await writer.apply(lifecycle(second.id, ACTORS))
    reconnect.set()

    seen = await events_until(events, lambda seen: any(e.terminal for e in seen))
    assert [e for e in seen if e.task_id == second.id][1:] == written
    assert reader._listener.get_server_pid() != listener_pid
    after = await writer.apply([succeeded_report(first.id)])  # heard live again
    assert await events_until(events, lambda seen: len(seen) == 1) == after


async def test_stores_in_two_schemas_do_not_hear_each_other(
    postgres_url: str, make_store: MakeStore
) -> None:
    schema, other_url = await fresh_schema(postgres_url)
    other = PostgresStore(other_url)
    await other.open()
    try:
        mine = await make_store()
        events = mine.watch()
        await other.create(make_task("same-id-elsewhere"))
        task = make_task()
        await mine.create(task)

        (seen,) = await events_until(events, lambda seen: len(seen) >= 1)
        assert seen.task_id == task.id
    finally:
        await other.close()
        await drop_schema(postgres_url, schema)


async def test_a_big_batch_reaches_watchers_of_another_replica(make_store: MakeStore) -> None:
    """More events than one NOTIFY payload holds (and seqs that are not one run)."""
    writer, reader = await make_store(), await make_store()
    events = reader.watch()
    tasks = [make_task() for _ in range(40)]
    for task in tasks:
        await writer.create(task)
    reports = [each for task in tasks for each in lifecycle(task.id, ACTORS)]

    written = await writer.apply(reports)

    want = {event.seq for event in written}
    seen = await events_until(events, lambda seen: want <= {event.seq for event in seen})
    assert [e for e in seen if e.seq in want] == written


def test_seqs_pack_into_payloads_under_the_notify_limit() -> None:
    seqs = [*range(1, 101), 105, 107, *range(200, 300), *range(10**12, 10**12 + 5)]
    assert pack_seqs(seqs) == [
        f"1-100,105,107,200-299,{10**12}-{10**12 + 4}",
    ]
    assert unpack_seqs(pack_seqs(seqs)[0]) == seqs

    scattered = list(range(10**9, 10**9 + 6000, 2))  # no runs: many payloads
    payloads = pack_seqs(scattered)
    assert len(payloads) > 1
    assert all(len(payload.encode()) < 8000 for payload in payloads)
    assert [seq for payload in payloads for seq in unpack_seqs(payload)] == scattered
    assert pack_seqs([]) == []
    assert unpack_seqs("not,seqs") == []


def test_channels_are_per_schema_and_fit_postgres_names() -> None:
    assert channel_for("public") == "asya_gateway.public"
    assert channel_for("a") != channel_for("b")
    long = channel_for("s" * 63)
    assert len(long.encode()) <= 63
    assert long != channel_for("s" * 62 + "t")


def test_the_postgres_and_sqlite_stores_are_chosen_by_scheme() -> None:
    assert isinstance(open_store("postgresql://u:p@h/db"), PostgresStore)
    assert isinstance(open_store("postgres://u@h/db"), PostgresStore)
    assert isinstance(open_store("sqlite:///x.db"), SQLiteStore)
