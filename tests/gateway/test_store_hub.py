"""The fan-out of new events to a store's watchers: in order, from the moment of watching,
and never holding memory for a watcher that stopped reading."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator

import pytest

from asya_gateway.store.base import Event, StoreError
from asya_gateway.store.hub import Hub


def events(*seqs: int) -> list[Event]:
    return [Event(seq, f"task-{seq}", "acme", "status", {"status": "running"}) for seq in seqs]


async def take(subscription: AsyncIterator[Event], count: int) -> list[Event]:
    return [await asyncio.wait_for(anext(subscription), 5) for _ in range(count)]


async def test_every_watcher_gets_what_was_published_after_it_subscribed() -> None:
    hub = Hub()
    early = hub.subscribe()
    hub.publish(events(1, 2))
    late = hub.subscribe()
    hub.publish(events(3))

    assert [event.seq for event in await take(early, 3)] == [1, 2, 3]
    assert [event.seq for event in await take(late, 1)] == [3]


async def test_closing_the_hub_ends_every_watcher_and_later_ones() -> None:
    hub = Hub()
    watching = hub.subscribe()
    hub.publish(events(1))

    hub.close()

    assert [event.seq for event in await take(watching, 1)] == [1]  # what came before
    with pytest.raises(StopAsyncIteration):
        await anext(watching)
    with pytest.raises(StopAsyncIteration):
        await anext(hub.subscribe())


async def test_a_watcher_that_falls_too_far_behind_is_cut_off_with_a_reason() -> None:
    hub = Hub(capacity=3)
    slow, fast = hub.subscribe(), hub.subscribe()

    hub.publish(events(1, 2))
    await take(fast, 2)
    hub.publish(events(3, 4))

    with pytest.raises(StoreError, match="events_since"):
        await anext(slow)
    with pytest.raises(StoreError):
        await anext(slow)  # stays ended
    assert hub.subscribers == 1
    assert [event.seq for event in await take(fast, 2)] == [3, 4]


async def test_closing_a_watcher_unsubscribes_it() -> None:
    hub = Hub()
    async with hub.subscribe() as watching:
        assert hub.subscribers == 1
        hub.publish(events(1))
        assert [event.seq for event in await take(watching, 1)] == [1]

    assert hub.subscribers == 0
    with pytest.raises(StopAsyncIteration):
        await anext(watching)


async def test_an_abandoned_watcher_is_forgotten() -> None:
    hub = Hub()
    watching = hub.subscribe()
    hub.publish(events(1))

    del watching
    gc.collect()

    assert hub.subscribers == 0


# -- watchers of one task ----------------------------------------------------------------


async def test_a_watcher_of_one_task_gets_only_that_tasks_events() -> None:
    hub = Hub()
    of_two, everything = hub.subscribe("task-2"), hub.subscribe()

    hub.publish(events(1, 2, 3))
    hub.publish(events(2))

    assert [event.seq for event in await take(everything, 4)] == [1, 2, 3, 2]
    assert [event.seq for event in await take(of_two, 2)] == [2, 2]
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(of_two), 0.05)


async def test_watchers_of_one_task_are_cut_off_and_closed_like_the_others() -> None:
    hub = Hub(capacity=1)
    slow = hub.subscribe("task-1")
    hub.publish(events(1))
    hub.publish(events(1))

    with pytest.raises(StoreError, match="events_since"):
        await anext(slow)
    assert hub.subscribers == 0

    later = hub.subscribe("task-1")
    hub.close()
    with pytest.raises(StopAsyncIteration):
        await anext(later)


async def test_an_abandoned_watcher_of_one_task_leaves_nothing_behind() -> None:
    hub = Hub()
    watching = hub.subscribe("task-1")
    assert hub.subscribers == 1

    del watching
    gc.collect()
    hub.publish(events(1))

    assert hub.subscribers == 0
    assert hub._by_task == {}
