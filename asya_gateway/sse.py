"""The event stream of one task (`GET /v1/tasks/<id>/events`), as Server-Sent Events.

    event: status            the first event: the whole task (the GET shape), so a client
    id: 17                   can render from it alone; `id` is the task's latest event
    data: {"id": ..., "status": "running", "actor": "b", "progress": 0.5, ...}

    event: status            then one per change: {"status", "actor", "progress"}
    id: 18
    data: {"status": "running", "actor": "c", "progress": 0.6667}

    event: fly               side events (FLY) as the handler yielded them; no id: they
    data: {"token": "Hel"}   are not replayed

    : keep-alive             a comment at least every KEEPALIVE_S seconds

The stream ends after the terminal status event. A client that reconnects with
`Last-Event-ID: <id>` gets the status events after that id instead of the snapshot (and,
if the task ended meanwhile, its terminal status), then the live stream.

No event is lost between the snapshot and the live stream: the subscription to
`store.watch()` is opened before the snapshot and the history are read, and duplicates are
dropped by `seq`. At every keep-alive the task's history is read again too, so a status
event the subscription did not deliver (another replica's, delayed) still arrives, later.
The stream also ends when the gateway stops (`stopping`), so a graceful shutdown does not
wait for clients that would listen forever.

`updates()` is the same stream as structured `Update`s, for the front doors that speak
another protocol (MCP, A2A, OpenAI); `frames()` is its SSE rendering.

Nothing is buffered without limit: a client that stops reading lets at most
`MAX_BACKLOG` updates pile up, then its stream ends (`overflowed`); an SSE client that
reconnects with Last-Event-ID gets the status events it missed (FLY events are not
replayed).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from asya_gateway.store.base import Event, Store
from asya_gateway.tasks import Task

__all__ = [
    "KEEPALIVE",
    "KEEPALIVE_S",
    "MAX_BACKLOG",
    "TaskStream",
    "Update",
    "format_event",
    "parse_last_event_id",
]

log = logging.getLogger("asya.gateway")

KEEPALIVE_S = 15.0
KEEPALIVE = b": keep-alive\n\n"
# Updates a stream holds for a reader that does not keep up; FLY tokens are the many.
MAX_BACKLOG = 1000
# Queued when the gateway stops, the store closes, or the reader fell too far behind (then
# instead of the backlog, and `overflowed` says so).
_STOP = object()


@dataclass(frozen=True)
class Update:
    """One thing a follower of a task learns. `kind` "status": `data` is the whole task
    (the GET shape) first, then `{"status", "actor", "progress"}` per change, with `seq`;
    any other kind is a side event (`fly`) as the handler yielded it, without `seq`."""

    kind: str
    data: Any
    seq: int | None = None
    terminal: bool = False


def format_event(kind: str, data: Any, event_id: int | None = None) -> bytes:
    """One SSE event. JSON is written compactly, so `data` is always a single line."""
    lines = [f"event: {kind}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append("data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def parse_last_event_id(header: str | None) -> int | None:
    """The seq a reconnecting client saw last; None for a fresh stream (or a foreign id)."""
    if header is None:
        return None
    text = header.strip()
    return int(text) if text.isdigit() else None


class TaskStream:
    """One client's stream of one task. `await open()` (raises TaskNotFound before any
    byte is sent, so the caller can answer 404), or `subscribe()` then `await load()` (or
    `start_from(task)` for a task created after subscribing); then
    iterate `frames()` or `updates()`; `close()` always."""

    def __init__(
        self,
        store: Store,
        task_id: str,
        tenant: str,
        *,
        last_event_id: int | None,
        keepalive: float = KEEPALIVE_S,
        stopping: asyncio.Event | None = None,
    ) -> None:
        self._store = store
        self._task_id = task_id
        self._tenant = tenant
        self._last_event_id = last_event_id
        self._keepalive = keepalive
        self._stopping = stopping
        self._queue: asyncio.Queue[Event | BaseException | object] = asyncio.Queue()
        self._helpers: list[asyncio.Task[None]] = []
        self._seen: set[int] = set()
        self._latest = 0  # the highest seq sent or known to be reflected in what was sent
        self._opening: list[Update] = []
        self._ended = False
        self._echo: tuple[str, str | None, float] | None = None  # see start_from
        # Set once its reader fell MAX_BACKLOG updates behind: the stream ends there.
        self.overflowed = False

    async def open(self) -> None:
        self.subscribe()
        await self.load()

    def subscribe(self) -> None:
        """Start receiving the task's new events; the task need not exist yet, so a caller
        that subscribes before it submits misses none of them (not even early FLY events)."""
        # Subscribed before the history is read (the store registers a watcher when watch()
        # returns), so whatever is recorded from now on reaches the pump.
        subscription = self._store.watch(self._task_id)
        self._helpers.append(
            asyncio.create_task(self._pump(subscription), name=f"sse {self._task_id}")
        )
        if self._stopping is not None:
            self._helpers.append(asyncio.create_task(self._stop_on(self._stopping)))

    def start_from(self, task: Task) -> None:
        """Open with `task`, just created after subscribe(): every event of it is still to
        come through the subscription, in order, so nothing needs reading."""
        self._snapshot(task, [])
        # The store records the new task's pending state as an event too: the opening says
        # that already.
        self._echo = (str(task.status), task.actor, task.progress)

    async def load(self) -> None:
        """Read the task and its history after subscribe(); TaskNotFound for none."""
        history = await self._store.events_since(
            self._task_id, self._tenant, self._last_event_id or 0
        )
        task = await self._store.get(self._task_id, self._tenant)
        if self._last_event_id is None:
            self._snapshot(task, history)
        else:
            self._replay(task, history)

    def _snapshot(self, task: Task, history: list[Event]) -> None:
        for event in history:
            self._mark(event.seq)
        self._opening.append(
            Update("status", task.to_json(), self._latest or None, terminal=task.terminal)
        )
        self._ended = task.terminal

    def _replay(self, task: Task, history: list[Event]) -> None:
        self._latest = self._last_event_id or 0
        for event in sorted(history, key=lambda item: item.seq):
            if event.kind != "status" or not self._mark(event.seq):
                continue
            self._opening.append(Update("status", event.data, event.seq, terminal=event.terminal))
            if event.terminal:
                self._ended = True
                return
        if task.terminal:
            # It ended before the id the client gave, or without a recorded event: say so,
            # so the client is not left waiting for a terminal status that already passed.
            self._opening.append(
                Update("status", task.to_json(), self._latest or None, terminal=True)
            )
            self._ended = True

    async def frames(self) -> AsyncIterator[bytes]:
        """The stream as SSE: one event per update, a comment at every keep-alive tick."""
        async for update in self.updates():
            if update is None:
                yield KEEPALIVE
            else:
                yield format_event(update.kind, update.data, update.seq)

    async def updates(self) -> AsyncIterator[Update | None]:
        """The opening update(s), then each change until the terminal status (or until the
        gateway stops, the store closes, or the reader fell behind: then it just ends).
        None every `keepalive` seconds without news, for transports that need a beat."""
        for update in self._opening:
            yield update
        while not self._ended:
            try:
                async with asyncio.timeout(self._keepalive):
                    item = await self._queue.get()
            except TimeoutError:
                yield None
                for event in await self._missed():
                    yield self._update(event)
                continue
            if item is _STOP:
                return
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, Event) and self._wanted(item):
                yield self._update(item)

    async def close(self) -> None:
        helpers, self._helpers = self._helpers, []
        for helper in helpers:
            helper.cancel()
        # return_exceptions: their own cancellation is expected; a cancellation of the
        # caller still propagates.
        await asyncio.gather(*helpers, return_exceptions=True)

    # ------------------------------------------------------------------------- internals

    def _wanted(self, event: Event) -> bool:
        if event.task_id != self._task_id or event.tenant != self._tenant:
            return False
        if event.kind == "status":
            if not self._mark(event.seq):
                return False
            echo, self._echo = self._echo, None
            state = (event.data.get("status"), event.data.get("actor"), event.data.get("progress"))
            return state != echo
        return True

    def _mark(self, seq: int) -> bool:
        """Record `seq` as sent; False if it already was."""
        if seq in self._seen:
            return False
        self._seen.add(seq)
        self._latest = max(self._latest, seq)
        return True

    def _update(self, event: Event) -> Update:
        if event.kind == "status":
            if event.terminal:
                self._ended = True
            return Update("status", event.data, event.seq, terminal=event.terminal)
        return Update(event.kind, event.data)

    async def _missed(self) -> list[Event]:
        """Status events the subscription did not deliver (see the module docstring)."""
        # Events up to the client's Last-Event-ID are the client's already.
        history = await self._store.events_since(
            self._task_id, self._tenant, self._last_event_id or 0
        )
        missed = [
            event
            for event in sorted(history, key=lambda item: item.seq)
            if event.kind == "status" and self._mark(event.seq)
        ]
        for index, event in enumerate(missed):
            if event.terminal:
                return missed[: index + 1]
        return missed

    async def _pump(self, subscription: AsyncIterator[Event]) -> None:
        try:
            async for event in subscription:
                if event.task_id != self._task_id:
                    continue
                if self._queue.qsize() >= MAX_BACKLOG:
                    # Dropped, not kept: what it has not read is of no use to it now.
                    while not self._queue.empty():
                        self._queue.get_nowait()
                    self._queue.put_nowait(_STOP)
                    self.overflowed = True
                    log.warning(
                        "a follower of task %s fell %d updates behind; its stream is closed",
                        self._task_id,
                        MAX_BACKLOG,
                    )
                    return
                self._queue.put_nowait(event)
            self._queue.put_nowait(_STOP)  # the store closed: nothing more will come
        except Exception as exc:  # the stream ends with the error; the client reconnects
            self._queue.put_nowait(exc)
        finally:
            closing = getattr(subscription, "aclose", None)
            if closing is not None:
                await closing()

    async def _stop_on(self, stopping: asyncio.Event) -> None:
        await stopping.wait()
        self._queue.put_nowait(_STOP)
