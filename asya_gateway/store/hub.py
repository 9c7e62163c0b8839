"""Fan-out of a store's new events to its watchers (`Store.watch()`), in one process.

Each watcher is a `Subscription` with its own queue, registered the moment `watch()`
returns: whatever the store publishes after that reaches it, so a caller that subscribes
first and then reads `events_since` misses nothing (it may see an event twice: skip seqs
already sent). A subscription nobody reads any more must not hold memory forever: the hub
keeps them weakly (an abandoned one disappears with its queue), and one that falls more than
`capacity` events behind is cut off with a StoreError telling its reader to catch up from
`events_since`.

A watcher of one task (`watch(task_id)`) is kept in that task's set, so publishing an event
costs one offer per watcher of its task plus one per watcher of everything, however many
streams follow other tasks.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Iterable, Sequence
from types import TracebackType

from asya_gateway.store.base import Event, StoreError

__all__ = ["DEFAULT_CAPACITY", "Hub", "Subscription"]

DEFAULT_CAPACITY = 10_000


class _End:
    """Queued after the last event: the store closed, or the reader fell behind."""

    def __init__(self, error: StoreError | None) -> None:
        self.error = error


class Subscription(AsyncIterator[Event]):
    """An async iterator of new events; `aclose()` (or `async with`) unsubscribes."""

    def __init__(self, hub: Hub, task_id: str | None = None) -> None:
        self._hub: Hub | None = hub
        self.task_id = task_id
        self._queue: asyncio.Queue[Event | _End] = asyncio.Queue()
        self._ended: _End | None = None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        if self._ended is None:
            item = await self._queue.get()
            if isinstance(item, Event):
                return item
            self._ended = item
            self._detach()
        if self._ended.error is not None:
            raise self._ended.error
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self._detach()
        self._ended = self._ended or _End(None)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _detach(self) -> None:
        if self._hub is not None:
            self._hub.unsubscribe(self)
            self._hub = None

    def _offer(self, events: Sequence[Event], capacity: int) -> bool:
        """Queue `events`; False (and cut off) when that would pass `capacity`."""
        if self._queue.qsize() + len(events) > capacity:
            while not self._queue.empty():  # what it has not read is of no use now
                self._queue.get_nowait()
            self._queue.put_nowait(
                _End(
                    StoreError(
                        f"this watcher fell more than {capacity} events behind and was cut "
                        "off: read what it missed with events_since and watch again"
                    )
                )
            )
            return False
        for event in events:
            self._queue.put_nowait(event)
        return True

    def _end(self) -> None:
        self._queue.put_nowait(_End(None))


class Hub:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._everything: weakref.WeakSet[Subscription] = weakref.WeakSet()
        self._by_task: dict[str, weakref.WeakSet[Subscription]] = {}
        self._closed = False

    @property
    def subscribers(self) -> int:
        return len(self._everything) + sum(len(group) for group in self._by_task.values())

    def subscribe(self, task_id: str | None = None) -> Subscription:
        """A watcher of every task's events, or only of `task_id`'s."""
        subscription = Subscription(self, task_id)
        if self._closed:
            subscription._end()
        elif task_id is None:
            self._everything.add(subscription)
        else:
            self._by_task.setdefault(task_id, weakref.WeakSet()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription.task_id is None:
            self._everything.discard(subscription)
            return
        group = self._by_task.get(subscription.task_id)
        if group is not None:
            group.discard(subscription)
            if not group:
                del self._by_task[subscription.task_id]

    def publish(self, events: Sequence[Event]) -> None:
        if not events:
            return
        self._deliver(self._everything, events)
        if not self._by_task:
            return
        of_task: dict[str, list[Event]] = {}
        for event in events:
            if event.task_id in self._by_task:
                of_task.setdefault(event.task_id, []).append(event)
        for task_id, mine in of_task.items():
            group = self._by_task[task_id]
            self._deliver(group, mine)
            if not group:  # its watchers were dropped unread (kept weakly)
                self._by_task.pop(task_id, None)

    def _deliver(self, watchers: Iterable[Subscription], events: Sequence[Event]) -> None:
        """Offer `events` to each of `watchers`; one that falls too far behind is cut off."""
        for subscription in list(watchers):
            if not subscription._offer(events, self.capacity):
                self.unsubscribe(subscription)

    def close(self) -> None:
        """End every subscription (their iterators stop) and refuse new ones."""
        self._closed = True
        for subscription in list(self._everything):
            subscription._end()
        for group in self._by_task.values():
            for subscription in list(group):
                subscription._end()
        self._everything.clear()
        self._by_task.clear()
