"""The behaviour every gateway store must show, written once (as tests/transports/contract.py
is for brokers).

Each store's test module subclasses `StoreContract` and provides three fixtures:

- `make_store`: an async factory `() -> Store`, already opened, every call on the SAME
  database (two calls = two gateway replicas sharing it); the fixture closes them all after
  the test. The database is fresh for each test.
- `raw_sql`: an async `(sql) -> list of row tuples` on that database, behind the stores'
  backs (to set up what only another gateway version could have written).
- `dialect` (a class attribute): the store's SQL dialect, as asya_gateway/store/schema.py
  names it.
- `unreachable_url`: a URL of this kind of store that cannot be opened, with a password in
  it where the kind has passwords (the error must not show it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest

from asya_gateway.store import InvalidCursor, open_store, schema
from asya_gateway.store.base import (
    Event,
    Store,
    StoreError,
    TaskConflict,
    TaskNotFound,
    Unpublished,
)
from asya_gateway.store.schema import CURRENT_VERSION
from asya_gateway.tasks import Task, TaskStatus, advance, progress_of
from asya_shared import pauses, wire
from asya_shared.wire import error_details
from tests.gateway.builders import at, lifecycle, make_task, report, route_at, unique_id

MakeStore = Callable[[], Awaitable[Store]]
RawSQL = Callable[[str], Awaitable[list[tuple[Any, ...]]]]

WAIT_S = 30.0  # generous: only a failing test waits this long
ACTORS = ("a", "b", "c")


async def next_events(events: Any, count: int, timeout: float = WAIT_S) -> list[Event]:
    """The next `count` events of a watch() iterator."""

    async def take() -> list[Event]:
        return [await anext(events) for _ in range(count)]

    return await asyncio.wait_for(take(), timeout)


async def events_until(
    events: Any, done: Callable[[list[Event]], bool], timeout: float = WAIT_S
) -> list[Event]:
    """Events of a watch() iterator until `done(seen)` holds."""
    seen: list[Event] = []

    async def take() -> list[Event]:
        while not done(seen):
            seen.append(await anext(events))
        return seen

    try:
        return await asyncio.wait_for(take(), timeout)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s; saw {seen!r}") from None


def statuses(events: Sequence[Event]) -> list[str]:
    return [event.data["status"] for event in events if event.kind == "status"]


def failed_report(task_id: str, hop: int = 1, when: float = 50.0) -> wire.HopReport:
    return report(
        task_id,
        "failed",
        route_at(ACTORS, hop),
        when=when,
        reason="RuntimeError",
        error=error_details("RuntimeError", "boom", traceback="Traceback ..."),
    )


def succeeded_report(task_id: str, result: Any = "done", when: float = 60.0) -> wire.HopReport:
    return report(task_id, "succeeded", route_at(ACTORS, 3), when=when, result=result)


# A route with a pause in it: the task is paused at hop 1.
PAUSING = ("a", "x-pause", "b")
PAUSE = {
    "prompt": "Approve?",
    "fields": [
        {"name": "approved", "type": "boolean", "prompt": None, "payload_key": "/approved",
         "required": True},
    ],
    "paused_at": at(10),
    "expires_at": at(100),
}  # fmt: skip


def held_envelope(task: Task, *, actors: Sequence[str] = PAUSING) -> dict[str, Any]:
    """The envelope x-pause received for `task`, as it posts it to the gateway."""
    return {
        "id": task.id,
        "parent_id": None,
        "route": route_at(actors, 1),
        "headers": {pauses.PAUSE_HEADER: {"prompt": "Approve?"}, "trace": "t-1"},
        "status": {
            "phase": "pending",
            "actor": "x-pause",
            "attempt": 1,
            "max_attempts": 1,
            "created_at": at(0),
            "updated_at": at(9),
            "deadline_at": task.deadline_at,
            "reason": None,
            "error": None,
        },
        "payload": {"draft": "hello"},
    }


async def paused_task(
    store: Store, *, actors: Sequence[str] = PAUSING, deadline_at: str | None = at(300)
) -> Task:
    """A task created, received at its first actor, then parked at x-pause."""
    task = make_task(actors=actors, deadline_at=deadline_at)
    await store.create(task, envelope="{}")
    await store.apply([report(task.id, "received", route_at(actors, 0), when=2)])
    envelope = held_envelope(task, actors=actors)
    return await store.pause(
        task.id,
        envelope=json.dumps(envelope),
        route=envelope["route"],
        attempt=1,
        pause=dict(PAUSE),
    )


def decoded(item: Unpublished) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(item.envelope)
    return document


def in_order(task: Task, reports: Sequence[wire.HopReport]) -> Task:
    for each in reports:
        task = advance(task, each) or task
    return task


class StoreContract:
    dialect: schema.Dialect

    # -- open, schema, errors ----------------------------------------------------------------

    async def test_ping_answers_when_open(self, make_store: MakeStore) -> None:
        store = await make_store()
        await store.ping()

    async def test_reopening_a_current_database_changes_nothing(
        self, make_store: MakeStore, raw_sql: RawSQL
    ) -> None:
        first = await make_store()
        task = make_task()
        await first.create(task)
        await first.close()

        again = await make_store()

        assert await again.get(task.id, task.tenant) == task
        versions = await raw_sql("SELECT version FROM schema_version ORDER BY version")
        assert versions == [(v,) for v in range(1, CURRENT_VERSION + 1)]  # each applied once

    async def test_a_database_of_a_newer_gateway_is_refused(
        self, make_store: MakeStore, raw_sql: RawSQL
    ) -> None:
        await make_store()  # creates the schema
        newer = CURRENT_VERSION + 1
        await raw_sql(
            f"INSERT INTO schema_version (version, applied_at) VALUES ({newer}, '{at(0)}')"
        )

        with pytest.raises(StoreError, match=rf"(?s)version {newer}.*upgrade the gateway"):
            await make_store()

    async def test_a_version_1_database_is_migrated_keeping_its_tasks(
        self, make_store: MakeStore, raw_sql: RawSQL
    ) -> None:
        # What a gateway of schema version 1 left behind: its tables and one pending task.
        for statement in [schema.VERSION_TABLE[self.dialect], *schema.STEPS[self.dialect][0]]:
            await raw_sql(statement)
        await raw_sql(f"INSERT INTO schema_version (version, applied_at) VALUES (1, '{at(0)}')")
        await raw_sql(
            "INSERT INTO tasks (id, tenant, status, route, actor, progress, created_at, "
            "created_us, updated_at, updated_us, pos_hop, pos_attempt, pos_event, headers) "
            f"VALUES ('old', 'acme', 'pending', '{{\"prev\": [], \"curr\": \"a\", "
            f"\"next\": [\"b\"]}}', 'a', 0.0, '{at(0)}', 0, '{at(0)}', 0, 0, 0, 0, '{{}}')"
        )

        store = await make_store()

        old = await store.get("old", "acme")
        assert (old.status, old.route["next"]) == (TaskStatus.PENDING, ["b"])
        # Its envelope was published by the gateway that recorded it: nothing to send again.
        assert await store.claim_unpublished(at(1000), now=at(1000), limit=10) == []
        versions = await raw_sql("SELECT version FROM schema_version ORDER BY version")
        assert versions == [(v,) for v in range(1, CURRENT_VERSION + 1)]

    async def test_an_unreachable_store_says_where_without_the_password(
        self, unreachable_url: str
    ) -> None:
        store = open_store(unreachable_url)

        with pytest.raises(StoreError) as raised:
            await store.open()

        message = str(raised.value)
        assert "s3cret" not in message
        assert unreachable_url.split("://")[0] in message  # names the store it tried

    # -- create, get -------------------------------------------------------------------------

    async def test_an_envelope_waits_in_the_outbox_until_published(
        self, make_store: MakeStore
    ) -> None:
        store = await make_store()
        task = make_task(created=0.0)
        await store.create(task, envelope='{"id": "x", "payload": "ü"}')

        [claimed] = await store.claim_unpublished(at(10), now=at(100), limit=10)
        assert (claimed.task, claimed.envelope) == (task, '{"id": "x", "payload": "ü"}')
        # Claimed at 100: a sweep looking for envelopes older than 50 leaves it alone.
        assert await store.claim_unpublished(at(50), now=at(110), limit=10) == []
        [again] = await store.claim_unpublished(at(101), now=at(120), limit=10)
        assert again.task.id == task.id

        await store.published(task.id)

        assert await store.claim_unpublished(at(1000), now=at(1000), limit=10) == []
        assert await store.get(task.id, task.tenant) == task

    async def test_only_envelopes_old_enough_and_not_yet_seen_arriving_are_claimed(
        self, make_store: MakeStore
    ) -> None:
        store = await make_store()
        oldest, young, plain, moved = (make_task(created=c) for c in (0.0, 20.0, 0.0, 1.0))
        for task in (oldest, young, moved):
            await store.create(task, envelope=f'{{"id": "{task.id}"}}')
        await store.create(plain)  # created without an envelope: nothing to publish
        await store.apply([report(moved.id, "received", route_at(ACTORS, 0), when=2.0)])
        more = [make_task(created=5.0 + i / 10) for i in range(3)]
        for task in more:
            await store.create(task, envelope="{}")

        first = await store.claim_unpublished(at(10), now=at(30), limit=2)
        rest = await store.claim_unpublished(at(10), now=at(30), limit=10)

        assert [u.task.id for u in first] == [oldest.id, more[0].id]  # oldest first
        assert [u.task.id for u in rest] == [more[1].id, more[2].id]

    async def test_two_replicas_sweeping_at_once_claim_each_task_once(
        self, make_store: MakeStore
    ) -> None:
        one, two = await make_store(), await make_store()
        tasks = [make_task(created=i / 100) for i in range(40)]
        for task in tasks:
            await one.create(task, envelope="{}")

        claims = await asyncio.gather(
            *(store.claim_unpublished(at(10), now=at(60), limit=15) for store in (one, two, one))
        )

        ids = [u.task.id for claim in claims for u in claim]
        assert sorted(ids) == sorted(task.id for task in tasks)

    async def test_a_created_task_reads_back_with_every_field(self, make_store: MakeStore) -> None:
        store = await make_store()
        task = make_task(
            deadline_at=at(300),
            flow="summarize",
            headers={"trace": "abc", "lang": "fr"},
            created_at="2024-05-01T12:00:00.123456+02:00",
            updated_at="2024-05-01T12:00:00.123456+02:00",
        )

        stored, created = await store.create(task)

        assert created
        assert stored == task
        assert await store.get(task.id, "acme") == task

    async def test_creating_records_the_first_status_event(self, make_store: MakeStore) -> None:
        store = await make_store()
        task = make_task()

        await store.create(task)
        events = await store.events_since(task.id, task.tenant, 0)

        assert len(events) == 1
        assert events[0].kind == "status"
        assert events[0].data == {"status": "pending", "actor": "a", "progress": 0.0}
        assert events[0].task_id == task.id
        assert events[0].tenant == "acme"
        assert not events[0].terminal

    async def test_creating_an_existing_id_returns_the_task_as_it_is(
        self, make_store: MakeStore
    ) -> None:
        store = await make_store()
        task = make_task(headers={"try": "1"})
        await store.create(task)
        await store.apply([report(task.id, "received", route_at(ACTORS, 0), when=2)])
        moved = await store.get(task.id, task.tenant)

        again, created = await store.create(make_task(task.id, headers={"try": "2"}))

        assert not created
        assert again == moved
        assert len(await store.events_since(task.id, task.tenant, 0)) == 2  # no new pending

    async def test_an_id_another_tenant_holds_conflicts_without_showing_that_task(
        self, make_store: MakeStore
    ) -> None:
        store = await make_store()
        theirs = make_task(tenant="acme-secret-tenant", headers={"token": "acme-private"})
        await store.create(theirs)
        mine = make_task(theirs.id, tenant="globex")

        with pytest.raises(TaskConflict) as raised:
            await store.create(mine)

        assert "acme" not in str(raised.value)
        assert raised.value.task == mine  # the caller's own request, nothing of theirs
        with pytest.raises(TaskNotFound):
            await store.get(theirs.id, "globex")
        assert await store.get(theirs.id, theirs.tenant) == theirs

    async def test_an_unknown_id_or_another_tenants_task_is_not_found(
        self, make_store: MakeStore
    ) -> None:
        store = await make_store()
        task = make_task()
        await store.create(task)

        with pytest.raises(TaskNotFound):
            await store.get(unique_id(), "acme")
        with pytest.raises(TaskNotFound):
            await store.get(task.id, "globex")

    async def test_results_and_errors_keep_their_json(self, make_store: MakeStore) -> None:
        store = await make_store()
        result = {
            "text": 'été 🌞 "quoted" \\ back',
            "nested": [1, 2.5, None, True, {"k": []}],
            "big": 2**53,
        }
        ok, bad = make_task(), make_task()
        for task in (ok, bad):
            await store.create(task)

        await store.apply([succeeded_report(ok.id, result), failed_report(bad.id)])

        assert (await store.get(ok.id, "acme")).result == result
        failed = await store.get(bad.id, "acme")
        assert failed.error == error_details("RuntimeError", "boom", traceback="Traceback ...")
        assert failed.reason == "RuntimeError"

    async def test_a_null_character_in_a_result_does_not_fail_the_batch(
        self, make_store: MakeStore
    ) -> None:
        store = await make_store()
        odd, other = make_task(), make_task()
        for task in (odd, other):
            await store.create(task)

        await store.apply(
            [succeeded_report(odd.id, {"raw\x00key": "a\x00b"}), succeeded_report(other.id)]
        )

        # PostgreSQL's jsonb cannot hold U+0000: it may become U+FFFD, but nothing is lost.
        kept = (await store.get(odd.id, "acme")).result
        assert kept in ({"raw\x00key": "a\x00b"}, {"raw\ufffdkey": "a\ufffdb"})
        assert (await store.get(other.id, "acme")).status is TaskStatus.SUCCEEDED

    # -- apply -------------------------------------------------------------------------------

    async def test_reports_move_a_task_along_its_route(self, make_store: MakeStore) -> None:
        store = await make_store()
        task = make_task()
        await store.create(task)
        reports = lifecycle(task.id, ACTORS, result={"summary": "ok"})

        moved = []
        for each in reports[:-1]:
            moved.extend(await store.apply([each]))
        running = await store.get(task.id, "acme")
        (done,) = await store.apply([reports[-1]])

        assert running.status is TaskStatus.RUNNING
        assert running.actor == "x-sink"
        assert running.route == route_at(ACTORS, 3)
        assert set(statuses(moved)) == {"running"}
        assert [event.data["progress"] for event in moved] == sorted(
            event.data["progress"] for event in moved
        )
        assert done.data == {"status": "succeeded", "actor": "x-sink", "progress": 1.0}
        assert done.terminal
        final = await store.get(task.id, "acme")
        assert final == in_order(task, reports)
        assert final.result == {"summary": "ok"}
        assert final.updated_at == reports[-1]["at"]

    async def test_apply_returns_the_events_it_recorded_in_seq_order(
        self, make_store: MakeStore
    ) -> None:
        store = await make_store()
        task = make_task()
        await store.create(task)

        returned = await store.apply(lifecycle(task.id, ACTORS))
        recorded = await store.events_since(task.id, task.tenant, 0)

        assert returned == recorded[1:]  # after the pending event
        seqs = [event.seq for event in recorded]
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == len(seqs)
        assert [event.terminal for event in recorded] == [False] * (len(recorded) - 1) + [True]

    async def test_duplicate_stale_and_unknown_reports_change_nothing(
        self, make_store: MakeStore
    ) -> None:
        store = await make_store()
        task = make_task()
        await store.create(task)
        ahead = report(task.id, "processing", route_at(ACTORS, 1), when=5)
        await store.apply([ahead])
        before = await store.get(task.id, "acme")

        events = await store.apply(
            [
                ahead,  # again
                report(task.id, "processing", route_at(ACTORS, 0), when=6),  # older hop
                report(unique_id(), "processing", route_at(ACTORS, 2), when=6),  # not ours
                # A fan-out child of this task finishing: the parent goes on.
                report(
                    f"{task.id}-child",
                    "succeeded",
                    route_at(ACTORS, 3),
                    when=7,
                    parent_id=task.id,
                    result="part",
                ),
            ]
        )

        assert events == []
        assert await store.get(task.id, "acme") == before

    async def test_the_first_terminal_status_is_final(self, make_store: MakeStore) -> None:
        store = await make_store()
        task = make_task()
        await store.create(task)

        events = await store.apply([failed_report(task.id), succeeded_report(task.id)])
        events += await store.apply([succeeded_report(task.id, when=99)])

        assert statuses(events) == ["failed"]
        final = await store.get(task.id, "acme")
        assert final.status is TaskStatus.FAILED
        assert final.result is None
        assert final.progress == pytest.approx(progress_of(route_at(ACTORS, 1)))

    async def test_one_batch_moves_many_tasks_in_report_order(self, make_store: MakeStore) -> None:
        store = await make_store()
        tasks = [make_task(), make_task(), make_task()]
        for task in tasks:
            await store.create(task)
        lives = [lifecycle(task.id, ACTORS, result=n) for n, task in enumerate(tasks)]
        interleaved = [each for step in zip(*lives, strict=True) for each in step]

        events = await store.apply(interleaved)

        state = {task.id: task for task in tasks}
        moving = []
        for each in interleaved:
            after = advance(state[each["id"]], each)
            if after is not None:
                state[after.id] = after
                moving.append(each["id"])
        assert [event.task_id for event in events] == moving
        for n, task in enumerate(tasks):
            final = await store.get(task.id, "acme")
            assert final == in_order(task, lives[n])
            assert final.result == n
        per_task = [[event.task_id for event in events].count(task.id) for task in tasks]
        assert len(set(per_task)) == 1  # the same life moves each the same number of times

    async def test_fly_events_are_recorded_as_the_handler_yielded_them(
        self, make_store: MakeStore
    ) -> None:
        store = await make_store()
        task = make_task()
        await store.create(task)
        here = route_at(ACTORS, 0)
        tokens = [{"token": "Hel"}, {"token": "lo"}, "plain text", [1, {"k": None}], 7]

        recorded = await store.apply(
            [
                report(task.id, "processing", here, when=2),
                report(task.id, "fly", here, when=3, events=tokens[:2]),
                report(unique_id(), "fly", here, when=3, events=[{"token": "not ours"}]),
                report(task.id, "fly", here, when=4, events=tokens[2:]),
            ]
        )

        assert [event.kind for event in recorded] == ["status"] + ["fly"] * len(tokens)
        assert [event.data for event in recorded[1:]] == tokens
        assert not any(event.terminal for event in recorded)
        assert (await store.events_since(task.id, "acme", 0))[1:] == recorded
        assert (await store.get(task.id, "acme")).status is TaskStatus.RUNNING

    async def test_fly_events_after_the_end_are_dropped(self, make_store: MakeStore) -> None:
        store = await make_store()
        task = make_task()
        await store.create(task)
        await store.apply([succeeded_report(task.id)])

        late = await store.apply(
            [report(task.id, "fly", route_at(ACTORS, 2), when=99, events=[{"token": "x"}])]
        )

        assert late == []

    async def test_events_since_replays_status_and_fly_events_for_the_tenant_only(
        self, make_store: MakeStore
    ) -> None:
        store = await make_store()
        task = make_task()
        await store.create(task)
        here = route_at(ACTORS, 0)
        await store.apply([report(task.id, "processing", here, when=2)])
        mark = (await store.events_since(task.id, "acme", 0))[-1]

        later = await store.apply(
            [
                report(task.id, "fly", here, when=3, events=[{"token": "t"}]),
                report(task.id, "routed", route_at(ACTORS, 1), when=4),
            ]
        )

        assert await store.events_since(task.id, "acme", mark.seq) == later
        assert await store.events_since(task.id, "acme", later[-1].seq) == []
        assert await store.events_since(task.id, "globex", 0) == []
        assert await store.events_since(unique_id(), "acme", 0) == []

    # -- pause and resume -------------------------------------------------------------------

    async def test_a_pause_shows_the_task_paused_once(self, make_store: MakeStore) -> None:
        store = await make_store()
        task = await paused_task(store)

        assert (task.status, task.actor, task.pause) == (TaskStatus.PAUSED, "x-pause", PAUSE)
        assert task.position == (1, 1, 4)
        assert task.to_json()["pause"] == PAUSE
        assert await store.get(task.id, "acme") == task
        events = await store.events_since(task.id, "acme", 0)
        assert events[-1].data == {
            "status": "paused", "actor": "x-pause", "progress": 1 / 3, "pause": PAUSE
        }  # fmt: skip
        # The same pause again (x-pause redelivered), and x-pause's own earlier reports,
        # change nothing.
        again = await store.pause(
            task.id, envelope="{}", route=route_at(PAUSING, 1), attempt=1, pause=dict(PAUSE)
        )
        assert again == task
        assert await store.apply([report(task.id, "processing", route_at(PAUSING, 1))]) == []
        assert len(await store.events_since(task.id, "acme", 0)) == len(events)

    async def test_a_pause_of_an_unknown_or_ended_task_is_refused(
        self, make_store: MakeStore
    ) -> None:
        store = await make_store()
        with pytest.raises(TaskNotFound):
            await store.pause(
                unique_id(), envelope="{}", route=route_at(PAUSING, 1), attempt=1, pause=PAUSE
            )
        task = make_task(actors=PAUSING)
        await store.create(task)
        await store.cancel(task.id, "acme", at=at(5))
        with pytest.raises(TaskConflict, match="already canceled"):
            await store.pause(
                task.id, envelope="{}", route=route_at(PAUSING, 1), attempt=1, pause=PAUSE
            )

    async def test_a_resume_merges_the_input_and_continues_after_x_pause(
        self, make_store: MakeStore
    ) -> None:
        store = await make_store()
        task = await paused_task(store)

        resumed = await store.resume(task.id, "acme", {"approved": True}, at=at(40))

        after = resumed.task
        assert (after.status, after.actor, after.pause) == (TaskStatus.RUNNING, "b", None)
        assert after.route == {"prev": ["a", "x-pause"], "curr": "b", "next": []}
        assert after.position == (2, 0, 0)
        assert after.deadline_at == at(330)  # 30 s paused: the deadline moved 30 s
        assert "pause" not in after.to_json()
        envelope = decoded(resumed)
        assert envelope["route"] == after.route
        assert envelope["payload"] == {"draft": "hello", "approved": True}
        assert envelope["headers"] == {"trace": "t-1"}
        assert envelope["status"]["phase"] == "pending"
        assert envelope["status"]["deadline_at"] == at(330)
        assert await store.get(task.id, "acme") == after
        assert await store.outbox(task.id) == resumed
        # x-pause's late reports (its sidecar's, and the same pause again) change nothing.
        late = [report(task.id, "processing", route_at(PAUSING, 1), when=50)]
        assert await store.apply(late) == []
        await store.pause(
            task.id, envelope="{}", route=route_at(PAUSING, 1), attempt=1, pause=dict(PAUSE)
        )
        assert await store.get(task.id, "acme") == after
        with pytest.raises(TaskConflict, match="is running, not paused"):
            await store.resume(task.id, "acme", {"approved": True}, at=at(41))

    async def test_the_resumed_envelope_stays_in_the_outbox_until_published(
        self, make_store: MakeStore
    ) -> None:
        store = await make_store()
        task = await paused_task(store)
        resumed = await store.resume(task.id, "acme", {"approved": False}, at=at(40))

        # A sweep finds it though the task is running, not pending.
        [claimed] = await store.claim_unpublished(at(50), now=at(60), limit=10)
        assert (claimed.task.id, claimed.envelope) == (task.id, resumed.envelope)
        await store.published(task.id, "another envelope")  # not this one: kept
        assert await store.outbox(task.id) is not None
        # b's first report proves the continuation reached the broker.
        await store.apply([report(task.id, "received", route_at(PAUSING, 2), when=45)])
        assert await store.outbox(task.id) is None

    async def test_a_resume_at_the_end_of_the_route_finishes_at_x_sink(
        self, make_store: MakeStore
    ) -> None:
        store = await make_store()
        task = await paused_task(store, actors=("a", "x-pause"), deadline_at=None)

        resumed = await store.resume(task.id, "acme", {"approved": True}, at=at(40))

        envelope = decoded(resumed)
        assert envelope["route"] == {"prev": ["a", "x-pause"], "curr": "x-sink", "next": []}
        assert (envelope["status"]["phase"], envelope["status"]["actor"]) == (
            "succeeded", "x-pause"
        )  # fmt: skip
        assert envelope["status"]["deadline_at"] is None
        assert (resumed.task.status, resumed.task.actor) == (TaskStatus.RUNNING, "x-sink")

    async def test_input_that_does_not_fit_leaves_the_task_paused(
        self, make_store: MakeStore
    ) -> None:
        store = await make_store()
        task = await paused_task(store)

        with pytest.raises(pauses.InvalidInput, match=r"input\.approved is required") as raised:
            await store.resume(task.id, "acme", {}, at=at(40))
        assert raised.value.field == "input.approved"
        with pytest.raises(pauses.InvalidInput, match="must be a boolean"):
            await store.resume(task.id, "acme", {"approved": "yes"}, at=at(40))

        assert await store.get(task.id, "acme") == task
        assert await store.outbox(task.id) is None

    async def test_a_resume_of_a_task_not_paused_or_not_found_is_refused(
        self, make_store: MakeStore
    ) -> None:
        store = await make_store()
        task = make_task()
        await store.create(task)
        with pytest.raises(TaskConflict, match="is pending, not paused"):
            await store.resume(task.id, "acme", {}, at=at(5))
        await store.apply([report(task.id, "paused", route_at(ACTORS, 0), when=2)])
        with pytest.raises(TaskConflict, match="not by x-pause"):
            await store.resume(task.id, "acme", {}, at=at(5))
        paused = await paused_task(store)
        with pytest.raises(TaskNotFound):
            await store.resume(paused.id, "globex", {"approved": True}, at=at(5))
        with pytest.raises(TaskNotFound):
            await store.resume(unique_id(), "acme", {}, at=at(5))

    async def test_two_concurrent_resumes_on_two_replicas_give_one_continuation(
        self, make_store: MakeStore
    ) -> None:
        one, two = await make_store(), await make_store()
        tasks = [await paused_task(one) for _ in range(5)]

        async def resume(store: Store, task: Task, approved: bool) -> Unpublished | None:
            try:
                return await store.resume(task.id, "acme", {"approved": approved}, at=at(40))
            except TaskConflict:
                return None

        for task in tasks:
            results = await asyncio.gather(resume(one, task, True), resume(two, task, False))
            [won] = [result for result in results if result is not None]
            assert decoded(won)["payload"]["approved"] is (results[0] is not None)
            events = await two.events_since(task.id, "acme", 0)
            assert statuses(events).count("running") == 2  # received at a, then the resume

    async def test_an_expired_pause_fails_the_task_once_with_a_record_for_x_sink(
        self, make_store: MakeStore
    ) -> None:
        one, two = await make_store(), await make_store()
        task = await paused_task(one)
        waiting = await paused_task(one)
        await one.resume(waiting.id, "acme", {"approved": True}, at=at(20))

        assert await one.expire_pauses(now=at(99), limit=10) == []
        claims = await asyncio.gather(
            one.expire_pauses(now=at(100), limit=10), two.expire_pauses(now=at(100), limit=10)
        )

        [expired] = [item for claim in claims for item in claim]
        failed = expired.task
        assert (failed.id, failed.status, failed.reason) == (
            task.id, TaskStatus.FAILED, "PauseExpired"
        )  # fmt: skip
        assert failed.error is not None
        assert failed.error["type"] == "PauseExpired"
        assert "paused since " + at(10) in failed.error["message"]
        assert failed.pause is None
        record = decoded(expired)
        assert record["route"] == {"prev": ["a", "x-pause"], "curr": "x-sink", "next": ["b"]}
        assert (record["status"]["phase"], record["status"]["reason"]) == (
            "failed", "PauseExpired"
        )  # fmt: skip
        assert record["status"]["error"] == failed.error
        assert await one.get(task.id, "acme") == failed
        assert await one.outbox(task.id) == expired
        assert statuses(await one.events_since(task.id, "acme", 0))[-1] == "failed"
        assert await two.expire_pauses(now=at(1000), limit=10) == []
        with pytest.raises(TaskConflict):
            await one.resume(task.id, "acme", {"approved": True}, at=at(101))

    async def test_a_canceled_pause_sends_its_envelope_to_x_sink(
        self, make_store: MakeStore
    ) -> None:
        store = await make_store()
        task = await paused_task(store)

        canceled = await store.cancel(task.id, "acme", at=at(20))

        assert (canceled.status, canceled.pause) == (TaskStatus.CANCELED, None)
        record = await store.outbox(task.id)
        assert record is not None
        envelope = decoded(record)
        assert envelope["route"]["curr"] == "x-sink"
        assert (envelope["status"]["phase"], envelope["status"]["reason"]) == (
            "canceled", "Canceled"
        )  # fmt: skip
        assert envelope["payload"] == {"draft": "hello"}
        # Canceled: nothing expires, nothing resumes.
        assert await store.expire_pauses(now=at(1000), limit=10) == []
        with pytest.raises(TaskConflict, match="is canceled, not paused"):
            await store.resume(task.id, "acme", {"approved": True}, at=at(21))

    async def test_joining_reports_show_the_parts_arrived(self, make_store: MakeStore) -> None:
        store = await make_store()
        task = make_task(actors=("split", "work", "x-join", "combine"))
        await store.create(task)
        at_join: wire.Route = {"prev": ["split", "work"], "curr": "x-join", "next": ["combine"]}

        def joining(done: int, when: float) -> wire.HopReport:
            return report(
                task.id, "joining", at_join, when=when, progress={"done": done, "total": 4}
            )

        await store.apply([joining(1, 5), joining(3, 6), joining(2, 7)])  # 2 came late

        now = await store.get(task.id, "acme")
        assert (now.status, now.actor, now.join) == (
            TaskStatus.RUNNING, "x-join", {"done": 3, "total": 4}
        )  # fmt: skip
        assert now.position == (2, 1, 8)
        assert now.progress == pytest.approx(3 / 4)  # joined parts / N
        assert now.to_json()["join"] == {"done": 3, "total": 4}
        events = await store.events_since(task.id, "acme", 0)
        assert [event.data.get("join") for event in events] == [
            None, {"done": 1, "total": 4}, {"done": 3, "total": 4}
        ]  # fmt: skip
        # The joined envelope goes on: the counts are gone.
        at_combine: wire.Route = {
            "prev": ["split", "work", "x-join"], "curr": "combine", "next": []
        }  # fmt: skip
        await store.apply([report(task.id, "received", at_combine, when=8)])
        assert (await store.get(task.id, "acme")).join is None

    # -- cancel ------------------------------------------------------------------------------

    @pytest.mark.parametrize("reached", ["pending", "running", "paused"])
    async def test_cancel_ends_an_unfinished_task_once(
        self, make_store: MakeStore, reached: str
    ) -> None:
        store = await make_store()
        task = make_task()
        await store.create(task)
        if reached != "pending":
            event = "paused" if reached == "paused" else "processing"
            await store.apply([report(task.id, event, route_at(ACTORS, 1), when=2)])

        canceled = await store.cancel(task.id, "acme", at=at(10))
        again = await store.cancel(task.id, "acme", at=at(20))

        assert canceled.status is TaskStatus.CANCELED
        assert canceled.reason == "Canceled"
        assert canceled.updated_at == at(10)
        assert again == canceled  # idempotent: as it was, not canceled anew
        assert await store.get(task.id, "acme") == canceled
        events = await store.events_since(task.id, "acme", 0)
        assert statuses(events)[-1] == "canceled"
        assert statuses(events).count("canceled") == 1
        assert events[-1].terminal

    @pytest.mark.parametrize("ending", ["succeeded", "failed"])
    async def test_cancel_after_the_end_conflicts(self, make_store: MakeStore, ending: str) -> None:
        store = await make_store()
        task = make_task()
        await store.create(task)
        end = succeeded_report(task.id) if ending == "succeeded" else failed_report(task.id)
        await store.apply([end])

        with pytest.raises(TaskConflict, match=ending) as raised:
            await store.cancel(task.id, "acme", at=at(99))

        assert raised.value.task.status == ending
        assert (await store.get(task.id, "acme")).status == ending

    async def test_cancel_of_an_unknown_or_anothers_task_is_not_found(
        self, make_store: MakeStore
    ) -> None:
        store = await make_store()
        task = make_task()
        await store.create(task)

        with pytest.raises(TaskNotFound):
            await store.cancel(unique_id(), "acme", at=at(5))
        with pytest.raises(TaskNotFound):
            await store.cancel(task.id, "globex", at=at(5))

        assert await store.get(task.id, "acme") == task

    async def test_reports_after_a_cancel_change_nothing(self, make_store: MakeStore) -> None:
        store = await make_store()
        task = make_task()
        await store.create(task)
        canceled = await store.cancel(task.id, "acme", at=at(1))

        assert await store.apply(lifecycle(task.id, ACTORS)) == []
        assert await store.get(task.id, "acme") == canceled

    async def test_canceled_since_lists_each_cancel_once_after_the_cursor(
        self, make_store: MakeStore
    ) -> None:
        store = await make_store()
        first, second, by_report, finished = (make_task() for _ in range(4))
        for task in (first, second, by_report, finished):
            await store.create(task)
        _, start = await store.canceled_since(0)

        await store.cancel(first.id, "acme", at=at(1))
        await store.apply([succeeded_report(finished.id)])
        ids, cursor = await store.canceled_since(start)
        await store.cancel(second.id, "acme", at=at(2))
        await store.apply(
            [report(by_report.id, "canceled", route_at(ACTORS, 1), when=3, reason="Canceled")]
        )
        later, after = await store.canceled_since(cursor)

        assert ids == [first.id]
        assert later == [second.id, by_report.id]
        assert after > cursor > start
        assert await store.canceled_since(after) == ([], after)
        assert (await store.canceled_since(start))[0] == [first.id, second.id, by_report.id]

    # -- list --------------------------------------------------------------------------------

    async def test_list_pages_newest_first_through_ties(self, make_store: MakeStore) -> None:
        store = await make_store()
        # Three created at the same instant (one written with another offset), the rest
        # apart: the order within a tie is by id, descending, and pages never split it wrong.
        tied = [make_task(f"tie-{n}", created=50) for n in range(3)]
        tied.append(make_task("tie-offset", created_at="2024-05-01T02:00:50+02:00"))
        apart = [make_task(f"apart-{n}", created=n * 20) for n in range(5)]
        others = [make_task(tenant="globex", created=n) for n in range(3)]
        for task in [*tied, *apart, *others]:
            await store.create(task)
        expected = [
            "apart-4",  # 80 s
            "apart-3",  # 60 s
            "tie-offset",  # 50 s
            "tie-2",
            "tie-1",
            "tie-0",
            "apart-2",  # 40 s
            "apart-1",
            "apart-0",
        ]

        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            page = await store.list_tasks("acme", status=None, limit=2, cursor=cursor)
            seen.extend(task.id for task in page.tasks)
            pages += 1
            if page.next_cursor is None:
                break
            cursor = page.next_cursor

        assert seen == expected
        assert pages == 5
        whole = await store.list_tasks("acme", status=None, limit=500, cursor=None)
        assert [task.id for task in whole.tasks] == expected
        assert whole.next_cursor is None
        exact = await store.list_tasks("acme", status=None, limit=len(expected), cursor=None)
        assert exact.next_cursor is None  # no empty last page

    async def test_list_filters_by_status(self, make_store: MakeStore) -> None:
        store = await make_store()
        tasks = [make_task(created=n) for n in range(6)]
        for task in tasks:
            await store.create(task)
        await store.apply([succeeded_report(task.id) for task in tasks[::2]])

        page = await store.list_tasks("acme", status=TaskStatus.SUCCEEDED, limit=2, cursor=None)
        rest = await store.list_tasks(
            "acme", status=TaskStatus.SUCCEEDED, limit=2, cursor=page.next_cursor
        )
        pending = await store.list_tasks("acme", status=TaskStatus.PENDING, limit=50, cursor=None)

        assert [task.id for task in page.tasks + rest.tasks] == [
            task.id for task in reversed(tasks[::2])
        ]
        assert rest.next_cursor is None
        assert [task.id for task in pending.tasks] == [task.id for task in reversed(tasks[1::2])]
        assert all(task.status is TaskStatus.SUCCEEDED for task in page.tasks)

    async def test_list_shows_only_the_tenants_tasks(self, make_store: MakeStore) -> None:
        store = await make_store()
        mine, theirs = make_task(tenant="acme"), make_task(tenant="globex")
        for task in (mine, theirs):
            await store.create(task)

        page = await store.list_tasks("acme", status=None, limit=50, cursor=None)

        assert page.tasks == [mine]
        assert (await store.list_tasks("nobody", status=None, limit=50, cursor=None)).tasks == []

    @pytest.mark.parametrize("cursor", ["not-base64!", "bm90IGpzb24", "WyJhIiwxXQ", ""])
    async def test_a_cursor_it_did_not_hand_out_is_refused(
        self, make_store: MakeStore, cursor: str
    ) -> None:
        store = await make_store()

        with pytest.raises(InvalidCursor, match="next_cursor"):
            await store.list_tasks("acme", status=None, limit=5, cursor=cursor)

    # -- watch -------------------------------------------------------------------------------

    async def test_watch_delivers_new_events_in_order(self, make_store: MakeStore) -> None:
        store = await make_store()
        events = store.watch()
        task = make_task()

        await store.create(task)
        moved = await store.apply(lifecycle(task.id, ACTORS)[:4])
        other = make_task()
        await store.create(other)
        canceled = await store.cancel(other.id, "acme", at=at(9))

        seen = await next_events(events, 1 + len(moved) + 2)
        recorded = await store.events_since(task.id, "acme", 0)
        recorded += await store.events_since(other.id, "acme", 0)
        assert sorted(seen, key=lambda event: event.seq) == seen
        assert seen == sorted(recorded, key=lambda event: event.seq)
        assert seen[-1].data["status"] == canceled.status

    async def test_watch_sees_what_another_replica_writes(self, make_store: MakeStore) -> None:
        writer, reader = await make_store(), await make_store()
        events = reader.watch()
        task = make_task()

        await writer.create(task)
        written = await writer.apply(
            [
                report(task.id, "processing", route_at(ACTORS, 0), when=2),
                report(task.id, "fly", route_at(ACTORS, 0), when=3, events=[{"token": "x"}]),
                succeeded_report(task.id),
            ]
        )

        seen = await events_until(events, lambda seen: any(event.terminal for event in seen))
        assert [event for event in seen if event.task_id == task.id][1:] == written

    async def test_watching_then_replaying_misses_nothing(self, make_store: MakeStore) -> None:
        """What SSE does on (re)connect: subscribe, replay from the store, then follow the
        subscription. Events written meanwhile (by another replica) are all seen."""
        writer, reader = await make_store(), await make_store()
        task = make_task()
        await writer.create(task)
        life = lifecycle(task.id, ACTORS)

        async def write() -> None:
            for each in life:
                await writer.apply([each])

        writing = asyncio.create_task(write())
        events = reader.watch()
        replayed = await reader.events_since(task.id, "acme", 0)
        followed = await events_until(
            events,
            lambda seen: any(event.terminal for event in [*replayed, *seen]),
        )
        await writing

        got = {event.seq for event in [*replayed, *followed] if event.task_id == task.id}
        assert got == {event.seq for event in await writer.events_since(task.id, "acme", 0)}

    async def test_watch_ends_when_the_store_closes(self, make_store: MakeStore) -> None:
        store = await make_store()
        events = store.watch()

        await store.close()

        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(events), WAIT_S)

    # -- retention ---------------------------------------------------------------------------

    async def test_delete_finished_removes_old_ended_tasks_and_their_events(
        self, make_store: MakeStore
    ) -> None:
        store = await make_store()
        old_done, old_failed, old_canceled, old_running, new_done = (make_task() for _ in range(5))
        for task in (old_done, old_failed, old_canceled, old_running, new_done):
            await store.create(task)
        await store.apply(
            [
                succeeded_report(old_done.id, when=10),
                failed_report(old_failed.id, when=10),
                report(old_running.id, "processing", route_at(ACTORS, 1), when=10),
                succeeded_report(new_done.id, when=1000),
            ]
        )
        await store.cancel(old_canceled.id, "acme", at=at(10))

        deleted = await store.delete_finished(at(500))

        assert deleted == 3
        for gone in (old_done, old_failed, old_canceled):
            with pytest.raises(TaskNotFound):
                await store.get(gone.id, "acme")
            assert await store.events_since(gone.id, "acme", 0) == []
        assert (await store.get(old_running.id, "acme")).status is TaskStatus.RUNNING
        assert (await store.get(new_done.id, "acme")).status is TaskStatus.SUCCEEDED
        assert await store.delete_finished(at(500)) == 0

    async def test_seqs_are_not_reused_after_a_deletion(self, make_store: MakeStore) -> None:
        store = await make_store()
        task = make_task()
        await store.create(task)
        (last,) = await store.apply([succeeded_report(task.id, when=1)])
        await store.delete_finished(at(100))

        newer = make_task()
        await store.create(newer)

        (first,) = await store.events_since(newer.id, "acme", 0)
        assert first.seq > last.seq

    # -- two replicas at once ----------------------------------------------------------------

    async def test_concurrent_batches_on_two_replicas_lose_no_update(
        self, make_store: MakeStore
    ) -> None:
        replicas = [await make_store(), await make_store()]
        tasks = [make_task() for _ in range(12)]
        for task in tasks:
            await replicas[0].create(task)
        lives = {task.id: lifecycle(task.id, ACTORS, result=task.id) for task in tasks}
        shuffle = random.Random(14)
        # Every report once or twice, in any order, in batches of mixed tasks.
        arriving = [each for life in lives.values() for each in life]
        arriving += shuffle.sample(arriving, len(arriving) // 3)
        shuffle.shuffle(arriving)
        batches = [arriving[n : n + 5] for n in range(0, len(arriving), 5)]

        await asyncio.gather(*(replicas[n % 2].apply(batch) for n, batch in enumerate(batches)))

        for task in tasks:
            final = await replicas[1].get(task.id, "acme")
            assert final.to_json() == in_order(task, lives[task.id]).to_json()
            events = await replicas[0].events_since(task.id, "acme", 0)
            assert [event.terminal for event in events].count(True) == 1
            assert events[-1].data["status"] == "succeeded"

    async def test_racing_endings_on_two_replicas_give_one_terminal_status(
        self, make_store: MakeStore
    ) -> None:
        one, two = await make_store(), await make_store()
        tasks = [make_task() for _ in range(15)]
        for task in tasks:
            await one.create(task)

        async def cancel(store: Store, task: Task) -> None:
            with contextlib.suppress(TaskConflict):  # the other ending came first
                await store.cancel(task.id, "acme", at=at(70))

        await asyncio.gather(
            *(
                call
                for task in tasks
                for call in (
                    one.apply([succeeded_report(task.id)]),
                    two.apply([failed_report(task.id)]),
                    cancel(two if tasks.index(task) % 2 else one, task),
                )
            )
        )

        endings = set()
        for task in tasks:
            events = await two.events_since(task.id, "acme", 0)
            terminal = [event for event in events if event.terminal]
            assert len(terminal) == 1, events
            final = await one.get(task.id, "acme")
            assert final.status == terminal[0].data["status"]
            endings.add(final.status)
        assert endings <= {TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELED}

    async def test_concurrent_creates_of_one_id_make_one_task(self, make_store: MakeStore) -> None:
        one, two = await make_store(), await make_store()
        task_id = unique_id()

        results = await asyncio.gather(
            *(
                store.create(make_task(task_id, headers={"n": str(n)}))
                for n, store in enumerate([one, two, one, two])
            )
        )

        assert [created for _, created in results].count(True) == 1
        stored = [task for task, _ in results]
        assert all(task == stored[0] for task in stored)
        assert len(await one.events_since(task_id, "acme", 0)) == 1
