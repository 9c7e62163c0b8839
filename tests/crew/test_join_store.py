"""The join store contract, run on both backends: SQLite (a file in tmp_path) and PostgreSQL
(a database of each test's own on 127.0.0.1:5432, dropped afterwards).

Concurrency is real: "two processes" are two store instances, each with its own connection
pool (PostgreSQL) or its own worker thread and connection on one file (SQLite).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from asya_crew.joinstore import (
    FORMS,
    Arrival,
    Claimed,
    JoinStore,
    JoinStoreError,
    Part,
    open_join_store,
)
from asya_crew.joinstore.postgres import PostgresJoinStore
from asya_crew.joinstore.sqlite import SQLiteJoinStore
from tests.support.postgres import ADMIN_URL
from tests.support.services import free_port

MakeStore = Callable[[], Awaitable[JoinStore]]

S = 1_000_000  # microseconds per second
T0 = 1_800_000_000 * S  # an arbitrary "now"
LEASE_S = 30.0


def ok(value: int | str) -> Part:
    return Part(ok=True, data=f'{{"v": "{value}"}}')


async def _admin(statement: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL, timeout=30)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'joins.db'}"
    url: str = request.getfixturevalue("own_database")
    return url


@pytest.fixture
async def make_store(store_url: str) -> AsyncIterator[MakeStore]:
    """Opens another store on the same database (another "process"); all closed at the end."""
    opened: list[JoinStore] = []

    async def make() -> JoinStore:
        store = open_join_store(store_url)
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
async def store(make_store: MakeStore) -> JoinStore:
    return await make_store()


async def fill(
    store: JoinStore,
    origin: str,
    count: int,
    *,
    deadline_us: int = T0 + 600 * S,
    opener: bool = True,
    skip: tuple[int, ...] = (),
) -> Arrival | None:
    """Store the opener (if asked) and every part except `skip`; the last Arrival."""
    last = None
    if opener:
        last = await store.add_opener(
            origin, count=count, deadline_us=deadline_us, envelope=f'{{"id": "{origin}"}}'
        )
    for index in range(count):
        if index not in skip:
            last = await store.add_part(
                origin, count=count, deadline_us=deadline_us, index=index, part=ok(index)
            )
    return last


# -- adding ------------------------------------------------------------------------------


async def test_arrivals_count_distinct_parts_and_the_opener(store: JoinStore) -> None:
    first = await store.add_part("o1", count=3, deadline_us=T0, index=1, part=ok(1))
    assert first == Arrival(done=False, arrived=1, count=3, has_opener=False)
    opened = await store.add_opener("o1", count=3, deadline_us=T0, envelope='{"id": "o1"}')
    assert opened == Arrival(done=False, arrived=1, count=3, has_opener=True)
    failed = Part(ok=False, data='{"reason": "Boom", "error": "x", "actor": "a"}')
    assert await store.add_part("o1", count=3, deadline_us=T0, index=0, part=failed) == Arrival(
        done=False, arrived=2, count=3, has_opener=True
    )
    assert await store.held() == (1, 2)


async def test_duplicate_parts_and_openers_change_nothing(store: JoinStore) -> None:
    await store.add_opener("o1", count=2, deadline_us=T0, envelope='{"first": 1}')
    await store.add_part("o1", count=2, deadline_us=T0, index=0, part=ok("first"))
    again = await store.add_part("o1", count=2, deadline_us=T0, index=0, part=ok("second"))
    assert again == Arrival(done=False, arrived=1, count=2, has_opener=True)
    await store.add_opener("o1", count=2, deadline_us=T0, envelope='{"second": 2}')
    await store.add_part("o1", count=2, deadline_us=T0, index=1, part=ok(1))
    claimed = await store.claim_complete("o1", owner="a", now_us=T0, lease_s=LEASE_S)
    assert claimed is not None
    assert claimed.opener == '{"first": 1}'
    assert claimed.parts == {0: ok("first"), 1: ok(1)}
    assert await store.held() == (1, 2)


async def test_the_first_count_and_deadline_win(store: JoinStore) -> None:
    await store.add_part("o1", count=3, deadline_us=T0, index=0, part=ok(0))
    bigger = await store.add_part("o1", count=5, deadline_us=T0 + S, index=4, part=ok(4))
    # Index 4 has no place in a join of 3: not stored.
    assert bigger == Arrival(done=False, arrived=1, count=3, has_opener=False)
    opened = await store.add_opener("o1", count=7, deadline_us=T0 + S, envelope="{}")
    assert opened.count == 3
    await store.add_part("o1", count=3, deadline_us=T0, index=1, part=ok(1))
    await store.add_part("o1", count=3, deadline_us=T0, index=2, part=ok(2))
    claimed = await store.claim_complete("o1", owner="a", now_us=T0, lease_s=LEASE_S)
    assert claimed is not None
    assert (claimed.count, claimed.deadline_us, sorted(claimed.parts)) == (3, T0, [0, 1, 2])


async def test_arguments_no_sidecar_sends_are_refused(store: JoinStore) -> None:
    with pytest.raises(ValueError, match=r"part index 3 is outside 0\.\.2"):
        await store.add_part("o1", count=3, deadline_us=T0, index=3, part=ok(3))
    with pytest.raises(ValueError, match="part index -1"):
        await store.add_part("o1", count=3, deadline_us=T0, index=-1, part=ok(3))
    with pytest.raises(ValueError, match="count must be 0 or more"):
        await store.add_opener("o1", count=-1, deadline_us=T0, envelope="{}")
    with pytest.raises(ValueError, match="empty origin"):
        await store.add_opener("", count=1, deadline_us=T0, envelope="{}")
    with pytest.raises(ValueError, match="lease"):
        await store.claim_complete("o1", owner="a", now_us=T0, lease_s=0)
    with pytest.raises(ValueError, match="limit"):
        await store.claim_expired(owner="a", now_us=T0, lease_s=LEASE_S, limit=0)
    assert await store.held() == (0, 0)


# -- claiming ----------------------------------------------------------------------------


async def test_a_join_is_claimed_only_with_its_opener_and_every_part(store: JoinStore) -> None:
    await fill(store, "o1", 3, opener=False)
    assert await store.claim_complete("o1", owner="a", now_us=T0, lease_s=LEASE_S) is None
    await store.add_opener("o1", count=3, deadline_us=T0 + 600 * S, envelope='{"id": "o1"}')
    await fill(store, "o2", 3, skip=(1,))
    assert await store.claim_complete("o2", owner="a", now_us=T0, lease_s=LEASE_S) is None
    assert await store.claim_complete("nobody", owner="a", now_us=T0, lease_s=LEASE_S) is None

    claimed = await store.claim_complete("o1", owner="a", now_us=T0, lease_s=LEASE_S)
    assert claimed == Claimed(
        origin="o1",
        count=3,
        deadline_us=T0 + 600 * S,
        opener='{"id": "o1"}',
        parts={0: ok(0), 1: ok(1), 2: ok(2)},
        claims=1,
    )
    assert list(claimed.parts) == [0, 1, 2]
    assert await store.claim_complete("o1", owner="b", now_us=T0, lease_s=LEASE_S) is None
    assert await store.claim_complete("o1", owner="a", now_us=T0, lease_s=LEASE_S) is None


async def test_a_join_of_no_parts_is_complete_with_its_opener(store: JoinStore) -> None:
    arrival = await store.add_opener("o0", count=0, deadline_us=T0, envelope="{}")
    assert arrival == Arrival(done=False, arrived=0, count=0, has_opener=True)
    claimed = await store.claim_complete("o0", owner="a", now_us=T0, lease_s=LEASE_S)
    assert claimed is not None
    assert claimed.parts == {}


async def test_a_lease_that_ran_out_can_be_claimed_again(store: JoinStore) -> None:
    await fill(store, "o1", 2)
    first = await store.claim_complete("o1", owner="a", now_us=T0, lease_s=LEASE_S)
    assert first is not None
    assert first.claims == 1
    almost = T0 + int(LEASE_S * S) - 1
    assert await store.claim_complete("o1", owner="b", now_us=almost, lease_s=LEASE_S) is None
    assert await store.claim_expired(owner="b", now_us=almost, lease_s=LEASE_S, limit=10) == []

    ran_out = T0 + int(LEASE_S * S)
    second = await store.claim_complete("o1", owner="b", now_us=ran_out, lease_s=LEASE_S)
    assert second is not None
    assert (second.claims, second.parts, second.opener) == (2, first.parts, first.opener)
    # The sweep finds it too once b's lease ran out as well.
    later = ran_out + int(LEASE_S * S)
    [third] = await store.claim_expired(owner="c", now_us=later, lease_s=LEASE_S, limit=10)
    assert (third.origin, third.claims) == ("o1", 3)


async def test_claim_expired_takes_the_longest_overdue_first_up_to_the_limit(
    store: JoinStore,
) -> None:
    now = T0 + 1000 * S
    await fill(store, "a", 2, deadline_us=T0 + 100 * S, skip=(1,))
    await fill(store, "b", 2, deadline_us=T0 + 300 * S, opener=False)
    await fill(store, "c", 2, deadline_us=T0 + 200 * S, skip=(0, 1))
    await fill(store, "not-yet", 2, deadline_us=now + S, skip=(1,))
    # Complete, claimed, and still leased at `now`: its owner is publishing it.
    await fill(store, "leased", 2, deadline_us=T0 + 50 * S)
    assert await store.claim_complete("leased", owner="x", now_us=now - S, lease_s=LEASE_S)
    # Claimed long ago by an owner that died: due since its lease ran out (T0 + 150 s).
    await fill(store, "orphaned", 2, deadline_us=now + 600 * S)
    assert await store.claim_complete("orphaned", owner="x", now_us=T0 + 120 * S, lease_s=30)

    first = await store.claim_expired(owner="s", now_us=now, lease_s=LEASE_S, limit=2)
    assert [claimed.origin for claimed in first] == ["a", "orphaned"]
    assert [claimed.claims for claimed in first] == [1, 2]
    assert first[0].parts == {0: ok(0)}
    assert first[0].opener == '{"id": "a"}'
    second = await store.claim_expired(owner="s", now_us=now, lease_s=LEASE_S, limit=2)
    assert [claimed.origin for claimed in second] == ["c", "b"]
    assert second[0].parts == {}
    assert second[1].opener is None
    assert second[1].parts == {0: ok(0), 1: ok(1)}
    assert await store.claim_expired(owner="s", now_us=now, lease_s=LEASE_S, limit=2) == []
    # A claimed join is no longer complete-claimable while leased.
    assert await store.claim_complete("b", owner="t", now_us=now, lease_s=LEASE_S) is None


async def test_two_stores_claim_each_join_exactly_once(make_store: MakeStore) -> None:
    one, two = await make_store(), await make_store()
    origins = [f"o{number}" for number in range(20)]
    for origin in origins:
        await fill(one, origin, 3)
    results = await asyncio.gather(
        *(
            store.claim_complete(origin, owner=name, now_us=T0, lease_s=LEASE_S)
            for origin in origins
            for name, store in (("one", one), ("two", two))
        )
    )
    winners = [claimed.origin for claimed in results if claimed is not None]
    assert sorted(winners) == sorted(origins)


async def test_two_stores_sweep_each_join_exactly_once(make_store: MakeStore) -> None:
    one, two = await make_store(), await make_store()
    origins = {f"o{number}" for number in range(30)}
    for origin in origins:
        await fill(one, origin, 2, deadline_us=T0, skip=(1,))
    taken: list[str] = []

    async def sweep(store: JoinStore, owner: str) -> None:
        while found := await store.claim_expired(owner=owner, now_us=T0, lease_s=60, limit=3):
            taken.extend(claimed.origin for claimed in found)

    await asyncio.gather(sweep(one, "one"), sweep(two, "two"))
    assert sorted(taken) == sorted(origins)


async def test_concurrent_adds_never_lose_the_moment_a_join_completes(
    make_store: MakeStore,
) -> None:
    """The opener and the parts stored at once by two processes: whichever stored last sees
    the join complete, so some caller always knows to claim it."""
    one, two = await make_store(), await make_store()
    count = 40
    for round_ in range(5):
        origin = f"o{round_}"

        async def add(store: JoinStore, indexes: range, origin: str = origin) -> list[Arrival]:
            return [
                await store.add_part(
                    origin, count=count, deadline_us=T0, index=index, part=ok(index)
                )
                for index in indexes
            ]

        async def open_(store: JoinStore, origin: str = origin) -> list[Arrival]:
            return [await store.add_opener(origin, count=count, deadline_us=T0, envelope="{}")]

        batches = await asyncio.gather(
            add(one, range(0, count, 2)),
            add(two, range(1, count, 2)),
            add(two, range(0, count, 3)),  # duplicates, racing the first writers
            open_(one if round_ % 2 else two),
        )
        arrivals = [arrival for batch in batches for arrival in batch]
        assert max(arrival.arrived for arrival in arrivals) == count
        assert any(arrival.arrived == count and arrival.has_opener for arrival in arrivals)
        claimed = await one.claim_complete(origin, owner="a", now_us=T0, lease_s=LEASE_S)
        assert claimed is not None
        assert list(claimed.parts) == list(range(count))


# -- ending ------------------------------------------------------------------------------


async def test_finish_leaves_a_tombstone_that_refuses_late_messages(store: JoinStore) -> None:
    await fill(store, "o1", 3)
    assert await store.claim_complete("o1", owner="a", now_us=T0, lease_s=LEASE_S)
    await store.finish("o1", now_us=T0 + S)
    assert await store.held() == (0, 0)

    late = await store.add_part("o1", count=3, deadline_us=T0, index=1, part=ok(1))
    assert late == Arrival(done=True, arrived=0, count=3, has_opener=False)
    assert (await store.add_opener("o1", count=3, deadline_us=T0, envelope="{}")).done
    assert await store.held() == (0, 0)
    assert await store.claim_complete("o1", owner="b", now_us=T0 + S, lease_s=LEASE_S) is None
    far = T0 + 10**6 * S
    assert await store.claim_expired(owner="b", now_us=far, lease_s=LEASE_S, limit=10) == []
    await store.finish("o1", now_us=T0 + 2 * S)  # again: nothing changes


async def test_cancel_ends_a_join_seen_or_not(store: JoinStore) -> None:
    await fill(store, "seen", 3, skip=(2,))
    await store.cancel("seen", now_us=T0)
    await store.cancel("unseen", now_us=T0)
    assert await store.held() == (0, 0)
    for origin in ("seen", "unseen"):
        late = await store.add_part(origin, count=3, deadline_us=T0, index=2, part=ok(2))
        assert late.done
    assert await store.held() == (0, 0)


async def test_finish_racing_adds_leaves_no_part_behind(make_store: MakeStore) -> None:
    one, two = await make_store(), await make_store()
    count = 200
    await one.add_opener("o1", count=count, deadline_us=T0, envelope="{}")
    started = asyncio.Event()

    async def add() -> None:
        for index in range(count):
            await one.add_part("o1", count=count, deadline_us=T0, index=index, part=ok(index))
            if index == 20:
                started.set()

    async def finish() -> None:
        await started.wait()
        await two.finish("o1", now_us=T0)

    await asyncio.gather(add(), finish())
    assert await one.held() == (0, 0)


async def test_purge_deletes_tombstones_ended_before_a_time(store: JoinStore) -> None:
    for origin, done_at in (("early", T0 + 100), ("late", T0 + 200)):
        await fill(store, origin, 1)
        await store.finish(origin, now_us=done_at)
    await fill(store, "open", 1)
    assert await store.purge(before_us=T0 + 100) == 0
    assert await store.purge(before_us=T0 + 150) == 1
    assert (await store.add_part("late", count=1, deadline_us=T0, index=0, part=ok(0))).done
    # Past its tombstone a late part starts a new join (tombstones must outlive redelivery).
    early = await store.add_part("early", count=1, deadline_us=T0, index=0, part=ok(0))
    assert early == Arrival(done=False, arrived=1, count=1, has_opener=False)
    assert await store.purge(before_us=T0 + 10**9) == 1
    assert await store.held() == (2, 2)  # "open" and the new "early"


# -- a big join --------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_join_of_ten_thousand_parts(store: JoinStore) -> None:
    count = 10_000
    started = time.perf_counter()
    last = await fill(store, "big", count)
    added = time.perf_counter()
    claimed = await store.claim_complete("big", owner="a", now_us=T0, lease_s=LEASE_S)
    claimed_at = time.perf_counter()
    assert last == Arrival(done=False, arrived=count, count=count, has_opener=True)
    assert claimed is not None
    assert list(claimed.parts) == list(range(count))
    assert claimed.parts[9_999] == ok(9_999)
    await store.finish("big", now_us=T0)
    assert await store.held() == (0, 0)
    print(
        f"\n{type(store).__name__}: {count} parts added in {added - started:.2f} s, "
        f"claimed in {claimed_at - added:.3f} s"
    )


# -- opening -----------------------------------------------------------------------------


async def test_reopening_keeps_what_was_stored(make_store: MakeStore) -> None:
    first = await make_store()
    await fill(first, "o1", 2, skip=(1,))
    await first.close()
    again = await make_store()
    assert await again.held() == (1, 1)


def test_urls_name_their_store(tmp_path: Path) -> None:
    absolute = open_join_store(f"sqlite://{tmp_path}/joins.db")
    assert isinstance(absolute, SQLiteJoinStore)
    assert str(absolute.path) == str(tmp_path / "joins.db")
    four_slashes = open_join_store(f"sqlite:///{tmp_path}/joins.db")
    assert isinstance(four_slashes, SQLiteJoinStore)
    assert str(four_slashes.path) == str(tmp_path / "joins.db")
    relative = open_join_store("sqlite://state/joins.db")
    assert isinstance(relative, SQLiteJoinStore)
    assert relative.path == Path("state/joins.db")
    for url in ("postgresql://u:p@db:5432/joins", "postgres://u:p@db/joins"):
        store = open_join_store(url)
        assert isinstance(store, PostgresJoinStore)
        assert store.url == url.replace(":p@", ":***@")


@pytest.mark.parametrize(
    "url",
    ["redis://u:s3cret@cache:6379", "joins.db", "sqlite:joins.db", "sqlite://", "file:///x"],
)
def test_an_unknown_url_names_the_accepted_forms(url: str) -> None:
    with pytest.raises(ValueError, match="accepted forms") as raised:
        open_join_store(url)
    assert FORMS in str(raised.value)
    assert "s3cret" not in str(raised.value)


@pytest.mark.parametrize("url", ["sqlite://:memory:", "sqlite://joins.db?mode=ro"])
def test_a_sqlite_url_must_name_a_shareable_file(url: str) -> None:
    with pytest.raises(ValueError, match="names no database file"):
        open_join_store(url)


async def test_an_unreachable_postgresql_is_a_join_store_error() -> None:
    url = f"postgresql://asya:s3cret@127.0.0.1:{free_port()}/joins"
    store = open_join_store(url)
    with pytest.raises(JoinStoreError, match="while connecting") as raised:
        await store.open()
    message = str(raised.value)
    assert "PostgreSQL join store postgresql://asya:***@127.0.0.1" in message
    assert "s3cret" not in message
    with pytest.raises(JoinStoreError, match="not open"):
        await store.held()


async def test_a_store_not_opened_says_so(tmp_path: Path) -> None:
    store = open_join_store(f"sqlite://{tmp_path}/joins.db")
    with pytest.raises(JoinStoreError, match=r"not open .*storing part 0 of join o1"):
        await store.add_part("o1", count=1, deadline_us=T0, index=0, part=ok(0))


async def test_a_database_holding_someone_elses_tables_is_refused(store_url: str) -> None:
    create = "CREATE TABLE joins (id INTEGER PRIMARY KEY)"
    if store_url.startswith("sqlite://"):
        with contextlib.closing(sqlite3.connect(store_url.removeprefix("sqlite://"))) as db:
            db.execute(create)
            db.commit()
    else:
        conn = await asyncpg.connect(store_url)
        try:
            await conn.execute(create)
        finally:
            await conn.close()
    store = open_join_store(store_url)
    with pytest.raises(JoinStoreError, match="joins that it did not create"):
        await store.open()


async def test_a_newer_schema_is_refused(make_store: MakeStore, store_url: str) -> None:
    await (await make_store()).close()
    insert = "INSERT INTO asya_join_schema (version, applied_us) VALUES (99, 0)"
    if store_url.startswith("sqlite://"):
        with contextlib.closing(sqlite3.connect(store_url.removeprefix("sqlite://"))) as db:
            db.execute(insert)
            db.commit()
    else:
        conn = await asyncpg.connect(store_url)
        try:
            await conn.execute(insert)
        finally:
            await conn.close()
    store = open_join_store(store_url)
    with pytest.raises(JoinStoreError, match="schema version 99, newer"):
        await store.open()
