"""The receiving machinery every broker shares: an inbox, prefetch slots, a supervised loop.

A broker module implements only what its SDK does differently:

    BaseReceiver        the inbox that `__anext__` waits on, its end marker, closing, and the
                        supervised loop that backs off after a failure (RabbitMQ subclasses
                        it directly: the broker pushes deliveries and enforces prefetch)
    └── PollingReceiver the loop for brokers we ask for messages (SQS, Pub/Sub, the local
                        file): it counts prefetch slots and fetches no more than are free
    PolledDelivery      the settle-once bookkeeping of a delivery from a PollingReceiver

What a subclass overrides: `_run` (one round of the loop; PollingReceiver provides it) or,
under PollingReceiver, `_fetch` (one SDK call) and `_accept` (turn what came into
deliveries, holding back messages that came early); and `_give_back` (return deliveries that
will not be handed out). Nothing here imports an SDK or knows a broker's quirks.

Semantics every receiver shares (the contract suite in tests/transports checks them):
- the loop starts with the first `__anext__`, so a receiver nobody reads takes nothing;
- `__anext__` can be cancelled without losing a message: deliveries wait in the inbox;
- a failure the loop cannot get past (a missing queue, a bug) is handed to the next
  `__anext__` once; the call after that starts the loop again (the queue may exist by then);
- a broker that cannot be reached is retried with capped exponential backoff and full
  jitter, and closing cuts a backoff pause short;
- a fetch cannot be taken back (a long poll or pull may still bring messages after its
  caller gave up, and a fetch from SQLite is a write that completes on its thread): a fetch
  in flight when the receiver closes finishes in the background and gives back what it
  brings;
- `aclose` gives back every delivery fetched and not handed out; deliveries already handed
  out can still be settled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Coroutine, MutableSet
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from asya_transports.base import QueueNotFound, TransportError, TransportUnavailable

log = logging.getLogger(__name__)

D = TypeVar("D")
B = TypeVar("B")


def backoff_delay(attempt: int, *, initial: float, cap: float, rand: float) -> float:
    """Pause before retry number `attempt` (0-based): capped exponential, full jitter.

    `rand` is a number drawn uniformly from [0, 1). The exponent stops long past any cap, so
    a broker that stays away for days cannot overflow it.
    """
    return rand * min(cap, initial * 2.0 ** min(attempt, 62))


@dataclass(frozen=True)
class Backoff:
    """How a receiver waits between failed attempts: `initial` seconds, doubling up to `cap`."""

    initial: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int, *, rand: float) -> float:
        return backoff_delay(attempt, initial=self.initial, cap=self.cap, rand=rand)


def cancelled_by_caller() -> bool:
    """Whether the running task is being cancelled, as opposed to an awaited future that an
    SDK cancelled under us (aiormq cancels the futures of a channel that closes, for one)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class BaseReceiver(Generic[D]):
    """An open subscription to one queue (implements base.Receiver) whose loop fills an inbox.

    `receivers` is the transport's set of open receivers: a receiver is in it from creation
    until it is closed, so closing the transport can close it.
    """

    def __init__(self, queue: str, *, backoff: Backoff, receivers: MutableSet[Any]) -> None:
        self.queue = queue
        self._backoff = backoff
        self._receivers = receivers
        receivers.add(self)
        # None is the end marker and stays in place for every later waiter; a TransportError
        # is handed to the next __anext__ once.
        self._inbox: asyncio.Queue[D | TransportError | None] = asyncio.Queue()
        self._closed = False
        self._closing = asyncio.Event()  # cuts a backoff pause short
        self._task: asyncio.Task[None] | None = None
        self._failures = 0  # failed rounds in a row, for the backoff
        # Why the loop is backing off, while it is (the sidecar's /healthz shows it).
        self.trouble: str | None = None
        self._orphans: set[asyncio.Task[None]] = set()  # fetches abandoned on close

    def __aiter__(self) -> BaseReceiver[D]:
        return self

    async def __anext__(self) -> D:
        while True:
            if self._closed:
                raise StopAsyncIteration
            if self._inbox.empty():
                # Only with nothing left to hand out: after a failure was reported, a new loop
                # must not fill an inbox that a caller who gave up on this receiver never reads.
                self._start()
            item = await self._inbox.get()
            if item is None:
                self._inbox.put_nowait(None)
                raise StopAsyncIteration
            if isinstance(item, TransportError):
                raise item
            if self._hand_out(item):
                return item

    async def aclose(self) -> None:
        """Stop receiving; give back what was fetched and not handed out."""
        if self._closed:
            return
        await self._stop()
        await self._give_back(self._leftovers())

    async def close_within(self, grace: float) -> None:
        """Close, and give fetches still in flight `grace` seconds to come back (with what
        they bring given back); then abort them. For the transport's own close, which
        releases the connections those fetches use."""
        await self.aclose()
        if self._orphans and grace > 0:
            await asyncio.wait(self._orphans, timeout=grace)
        for orphan in list(self._orphans):
            orphan.cancel()
        await asyncio.gather(*self._orphans, return_exceptions=True)

    # --- for subclasses ---------------------------------------------------------------------

    async def _run(self) -> None:
        """One round of the loop: raise TransportError to back off, QueueNotFound to stop and
        report; return to go round again. Call `_recovered` once the broker answered."""
        raise NotImplementedError

    async def _give_back(self, deliveries: list[D]) -> None:
        """Return deliveries that will not be handed out to their queue, at once."""
        raise NotImplementedError

    def _hand_out(self, delivery: D) -> bool:
        """Whether a delivery taken from the inbox is still worth handing out (a subclass
        drops stale ones here, settling them as needed)."""
        return True

    def _recovered(self) -> None:
        self._failures = 0
        self.trouble = None

    async def _stop(self) -> None:
        """Mark closed and stop the loop; the receiver stays known to its transport while
        fetches it abandoned are still out."""
        self._closed = True
        self._closing.set()
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            # wait(), not `await task`: the loop's CancelledError is its own, while one raised
            # in this caller must still reach it.
            await asyncio.wait([task])
        if not self._orphans:
            self._receivers.discard(self)

    def _leftovers(self) -> list[D]:
        """Empty the inbox of deliveries not handed out, and leave the end marker."""
        leftovers: list[D] = []
        while not self._inbox.empty():
            item = self._inbox.get_nowait()
            if item is not None and not isinstance(item, TransportError):
                leftovers.append(item)
        self._inbox.put_nowait(None)
        return leftovers

    async def _deliver(self, deliveries: list[D]) -> None:
        """Put deliveries in the inbox, or straight back on the queue once closed."""
        if self._closed:
            await self._give_back(deliveries)
            return
        for delivery in deliveries:
            self._inbox.put_nowait(delivery)

    # --- the loop ---------------------------------------------------------------------------

    def _start(self) -> None:
        if self._closed or (self._task is not None and not self._task.done()):
            return
        self._task = asyncio.create_task(self._supervise(), name=f"receive {self.queue}")

    async def _supervise(self) -> None:
        try:
            while not self._closed:
                try:
                    await self._run()
                except QueueNotFound as exc:
                    self._inbox.put_nowait(exc)
                    return
                except TransportError as exc:
                    self.trouble = str(exc)
                    pause = self._backoff.delay(self._failures, rand=random.random())
                    self._failures += 1
                    log.warning(
                        "cannot receive from %r, retrying in %.1f s: %s", self.queue, pause, exc
                    )
                    await self._pause(pause)
        except Exception as exc:  # a bug, not the broker: surface it, do not loop on it
            log.exception("receiver of %r failed", self.queue)
            failure = TransportError(f"receiver of {self.queue!r} failed: {exc!r}")
            failure.__cause__ = exc
            self._inbox.put_nowait(failure)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._closing.wait()

    def _orphan_done(self, orphan: asyncio.Task[None]) -> None:
        self._orphans.discard(orphan)
        if self._closed and not self._orphans:
            self._receivers.discard(self)


class PollingReceiver(BaseReceiver[D], Generic[D, B]):
    """The loop for brokers that are asked for messages: wait for a free prefetch slot, fetch
    at most that many, accept them, buffer what is due.

    A slot is taken by every delivery buffered or handed out and freed when it is settled
    (the delivery calls `slot_freed`). `_room` is set by a freed slot, by `wake`, and by
    closing; a subclass may nap on it between fetches (`_nap`).
    """

    def __init__(
        self, queue: str, *, prefetch: int, backoff: Backoff, receivers: MutableSet[Any]
    ) -> None:
        super().__init__(queue, backoff=backoff, receivers=receivers)
        self._prefetch = prefetch
        self._unsettled = 0
        self._room = asyncio.Event()

    def slot_freed(self) -> None:
        self._unsettled -= 1
        self._room.set()

    def wake(self) -> None:
        """Something may have arrived: end a nap between fetches now."""
        self._room.set()

    async def aclose(self) -> None:
        self._room.set()
        await super().aclose()

    # --- for subclasses ---------------------------------------------------------------------

    async def _fetch(self, count: int) -> B:
        """One call to the broker for at most `count` messages."""
        raise NotImplementedError

    async def _accept(self, batch: B) -> list[D]:
        """The deliveries to hand out from what `_fetch` brought; messages that came before
        their time are hidden again here and left out."""
        raise NotImplementedError

    async def _between_fetches(self, received: int) -> None:
        """After a fetch that brought `received` deliveries: pause here if the broker does
        not hold a request open until something comes."""

    async def _nap(self, seconds: float) -> None:
        """Sleep up to `seconds`, less if a slot is freed, `wake` is called or we close."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._room.wait()

    # --- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        # Cleared before looking, so a slot freed (or a wake-up) while we look is kept.
        self._room.clear()
        free = self._prefetch - self._unsettled
        if free <= 0:
            await self._room.wait()
            return
        ready = await self._unabortable(self._fetch_ready(free))
        self._recovered()
        self._unsettled += len(ready)
        await self._deliver(ready)
        await self._between_fetches(len(ready))

    async def _fetch_ready(self, count: int) -> list[D]:
        return await self._accept(await self._fetch(count))

    async def _unabortable(self, fetch: Coroutine[Any, Any, list[D]]) -> list[D]:
        """Run `fetch` so that cancelling the caller does not abort it: what it brings after
        the caller gave up (the receiver is closing) goes back to the queue."""
        task = asyncio.ensure_future(fetch)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not cancelled_by_caller():
                # The SDK cancelled its own call (a connection that went away): a failure
                # of the broker, not a request to stop.
                raise TransportUnavailable(
                    f"a fetch from {self.queue!r} was cancelled by the broker's client"
                ) from None
            orphan = asyncio.create_task(self._give_back_later(task), name="return a fetch")
            self._orphans.add(orphan)
            orphan.add_done_callback(self._orphan_done)
            raise

    async def _give_back_later(self, fetch: asyncio.Future[list[D]]) -> None:
        try:
            deliveries = await fetch
        except TransportError:
            return  # it brought nothing
        except asyncio.CancelledError:
            return  # aborted when the transport closed: the broker keeps the messages
        except Exception:
            log.exception("a fetch from %r abandoned on close failed", self.queue)
            return
        # Giving them back settles them, and each settle frees a slot: take the slots first.
        self._unsettled += len(deliveries)
        await self._give_back(deliveries)


class PolledDelivery:
    """A delivery of a PollingReceiver: settled once, then a no-op (implements base.Delivery).

    Subclasses say how the broker removes (`_delete`) or returns (`_return`) the message,
    and may extend its lease. Settling marks it first, so a settle that fails is not tried
    again by the transport's close: the message then comes back when its lease runs out.
    """

    def __init__(
        self,
        receiver: PollingReceiver[Any, Any],
        *,
        body: bytes,
        delivery_count: int | None,
        held: MutableSet[Any],
    ) -> None:
        self.queue = receiver.queue
        self.settled = False
        self._receiver = receiver
        self._body = body
        self._count = delivery_count
        # The transport's unsettled deliveries, which its close gives back: in it from
        # creation until settled.
        self._held = held
        held.add(self)

    @property
    def body(self) -> bytes:
        return self._body

    @property
    def delivery_count(self) -> int | None:
        return self._count

    async def ack(self) -> None:
        if self.mark_settled():
            await self._delete()

    async def nack(self) -> None:
        if self.mark_settled():
            await self._return()

    async def extend(self, seconds: float) -> None:
        raise NotImplementedError

    def mark_settled(self) -> bool:
        """Settle without telling the broker; False if it was settled already."""
        if self.settled:
            return False
        self.settled = True
        self._held.discard(self)
        self._receiver.slot_freed()
        return True

    async def _delete(self) -> None:
        raise NotImplementedError

    async def _return(self) -> None:
        raise NotImplementedError
