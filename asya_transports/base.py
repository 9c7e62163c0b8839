"""The Transport protocol: the only view of a broker that the rest of the sidecar has.

One module per broker implements it (local.py, rabbitmq.py, ...), importing only its own SDK
and translating that SDK's exceptions into the ones below, so nothing outside a transport
module ever sees aio-pika, botocore or Google exceptions.

Errors (what the caller does next):

    TransportError            base class
    ├── TransportUnavailable  the broker cannot be reached now; retry later, nothing is lost
    ├── QueueNotFound         the named queue does not exist (for a send: nobody consumes it)
    ├── MessageTooLarge       the body exceeds what this broker accepts
    └── Unsupported           this broker cannot do what was asked (for example a delay longer
                              than it allows); the message says what it can do
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, runtime_checkable


class TransportError(Exception):
    """Base of every error a transport raises."""


class TransportUnavailable(TransportError):
    """The broker is unreachable or the connection dropped; the operation may be retried."""


class QueueNotFound(TransportError):
    """The queue does not exist."""

    def __init__(self, queue: str, detail: str = "") -> None:
        message = f"queue {queue!r} does not exist"
        super().__init__(f"{message}: {detail}" if detail else message)
        self.queue = queue


class MessageTooLarge(TransportError):
    """The message body is larger than the broker accepts."""

    def __init__(self, queue: str, size: int, limit: int) -> None:
        super().__init__(
            f"message of {size} bytes for queue {queue!r} exceeds this broker's limit "
            f"of {limit} bytes"
        )
        self.queue, self.size, self.limit = queue, size, limit


class Unsupported(TransportError):
    """The broker cannot do what was asked."""


@runtime_checkable
class Delivery(Protocol):
    """One received message and the handle to settle it.

    Exactly one of `ack` or `nack` settles a delivery; settling twice is a no-op. A delivery
    that is never settled comes back after the broker's visibility timeout or when the
    connection closes, so a crash never loses it.
    """

    @property
    def body(self) -> bytes: ...

    @property
    def delivery_count(self) -> int | None:
        """How many times the broker has delivered this message, counting this one (1 on the
        first delivery); None when the broker does not say."""
        ...

    async def ack(self) -> None:
        """Done: remove the message from the queue."""

    async def nack(self) -> None:
        """Not done: make the message available again at once (to any consumer)."""

    async def extend(self, seconds: float) -> None:
        """Still working: keep the message invisible to others for `seconds` from now.
        Brokers without leases (RabbitMQ) accept and ignore this."""


@runtime_checkable
class Receiver(Protocol):
    """An open subscription to one queue.

    `__anext__` may be cancelled (for example by `asyncio.wait_for`) without ending the
    subscription or losing a message. `aclose` stops receiving: messages fetched but not yet
    handed out go back to the queue; deliveries already handed out can still be settled.
    """

    def __aiter__(self) -> Receiver: ...

    async def __anext__(self) -> Delivery: ...

    async def aclose(self) -> None: ...


class ClosesOnExit:
    """`async with transport:` support shared by every transport: leaving the block closes it,
    whatever `close()` means for that broker."""

    async def close(self) -> None:
        raise NotImplementedError

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


@runtime_checkable
class Transport(Protocol):
    """A connection to one broker. Use as `async with transport:`; safe for concurrent use."""

    name: str
    # Largest body `send` accepts; larger ones raise MessageTooLarge before any I/O.
    max_message_bytes: int
    # How long a delivery stays invisible before the broker hands it out again, unless
    # extended; None when deliveries are held for as long as the connection lives (RabbitMQ).
    lease_seconds: float | None

    @property
    def max_delay_seconds(self) -> float:
        """The longest `delay` that `send` accepts; a longer one raises Unsupported."""
        ...

    async def __aenter__(self) -> Transport: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def close(self) -> None:
        """Release connections. Unsettled deliveries return to their queues."""

    def receive(self, queue: str, *, prefetch: int) -> Receiver:
        """Subscribe to `queue`; never more than `prefetch` deliveries unsettled at once.

        The receiver reconnects by itself after the broker goes away (capped, jittered
        backoff) and keeps yielding; deliveries handed out before the loss come back from the
        broker and settling them is a no-op.
        """
        ...

    async def send(self, queue: str, body: bytes, *, delay: float = 0.0) -> None:
        """Put `body` on `queue`; return only once the broker has confirmed it is stored.

        `delay` seconds (> 0) keeps it invisible for that long. Raises QueueNotFound if the
        queue does not exist, MessageTooLarge, TransportUnavailable, or Unsupported.
        """

    async def ensure_queue(self, queue: str) -> None:
        """Create `queue` if it does not exist (idempotent)."""

    async def delete_queue(self, queue: str) -> None:
        """Delete `queue` and its messages; deleting a missing queue is not an error."""

    async def queue_depth(self, queue: str) -> int:
        """Messages waiting in `queue`, not counting those a consumer holds right now.

        Delayed messages count where the broker keeps them in the queue itself. Raises
        QueueNotFound for a missing queue.
        """
        ...
