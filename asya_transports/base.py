"""The protocols through which every Asya process sees a broker, and the errors they raise.

Two protocols, as small as they can be, so that each caller depends only on what it uses:

    Transport   the data path: receive (deliveries you settle), send. The sidecar's view.
    Admin       queue administration: ensure_queue, delete_queue, queue_depth. The view of
                the operator, the CLI and the bench (and of a sidecar that creates its own
                queue in development).
    Broker      both: what every broker module (local.py, rabbitmq.py, sqs.py, pubsub.py)
                implements and `asya_transports.create` returns.

Each broker module imports only its own SDK and translates that SDK's exceptions into the
ones below, so nothing outside it ever sees aio-pika, botocore or Google exceptions.

Errors (what the caller does next):

    TransportError            base class
    ├── TransportUnavailable  the broker cannot be reached now; retry later, nothing is lost
    ├── QueueNotFound         the named queue does not exist (for a send: nobody consumes it)
    ├── InvalidQueueName      the name cannot name a queue on this broker (too long, a
    │                         character it refuses); retrying cannot help. Also an
    │                         asya_shared.names.InvalidName, like the names Asya refuses itself
    ├── MessageTooLarge       the body exceeds what this broker accepts
    └── Unsupported           this broker cannot do what was asked (for example a delay longer
                              than it allows); the message says what it can do
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from asya_shared import names


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


class InvalidQueueName(TransportError, names.InvalidName):
    """The broker would refuse this queue name; it is never truncated (two could collide)."""


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
    subscription or losing a message. A failure the receiver cannot get past by itself
    (QueueNotFound, a bug) is raised by the next `__anext__`; the call after that tries
    again. `aclose` stops receiving: messages fetched but not yet handed out go back to the
    queue; deliveries already handed out can still be settled. (receiving.py holds the
    machinery every broker shares to do this.)

    `trouble` says why it is retrying the broker right now (None while receiving works);
    the sidecar's /healthz reports it.
    """

    trouble: str | None

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
class Connection(Protocol):
    """What both halves share: a name, and `async with` to open and close."""

    name: str

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def close(self) -> None:
        """Release connections. Unsettled deliveries return to their queues."""


@runtime_checkable
class Transport(Connection, Protocol):
    """The data path to one broker. Use as `async with transport:`; safe for concurrent use."""

    # Largest body `send` accepts; larger ones raise MessageTooLarge before any I/O.
    max_message_bytes: int
    # How long a delivery stays invisible before the broker hands it out again, unless
    # extended; None when deliveries are held for as long as the connection lives (RabbitMQ).
    lease_seconds: float | None

    @property
    def max_delay_seconds(self) -> float:
        """The longest `delay` that `send` accepts; a longer one raises Unsupported."""
        ...

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
        queue does not exist, InvalidQueueName, MessageTooLarge, TransportUnavailable, or
        Unsupported.
        """


@runtime_checkable
class Admin(Connection, Protocol):
    """Queue administration on one broker. Use as `async with admin:`."""

    async def ensure_queue(self, queue: str) -> None:
        """Create `queue` (and its dead-letter queue, where the broker has one) if it does
        not exist; idempotent."""

    async def delete_queue(self, queue: str) -> None:
        """Delete `queue` and its messages; deleting a missing queue is not an error."""

    async def queue_depth(self, queue: str) -> int:
        """Messages waiting in `queue`, not counting those a consumer holds right now.

        Delayed messages count where the broker keeps them in the queue itself. Raises
        QueueNotFound for a missing queue, Unsupported where the broker cannot count.
        """
        ...


@runtime_checkable
class Broker(Transport, Admin, Protocol):
    """Both halves: what every broker module implements."""
