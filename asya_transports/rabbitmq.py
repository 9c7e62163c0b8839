"""The Transport protocol on RabbitMQ (AMQP 0-9-1, through aio-pika and aiormq).

Connections, channels and queue administration go through aio-pika; the per-message calls
(publish, consume, ack) go to aiormq, the protocol layer under it, because aio-pika adds an
object per message and waits for the socket to drain before releasing a channel.

This module is the only place that knows AMQP: queues, channels, publisher confirms and
redeliveries. It translates every aio-pika, aiormq and pamqp exception into the errors of
base.py, so none of them reaches the rest of the sidecar. It does not retry operations that
fail: it raises `TransportUnavailable` and lets the consume loop decide what to do.

Queues and messages. Actor queues are durable, of the type `queue_type` (`quorum` by
default, or `classic`), declared with `x-queue-type`. Messages are persistent. `send` goes
to the default exchange with `mandatory=True` on a channel with publisher confirms, so it
returns only once the broker has stored the message, and a message that no queue takes
comes back to us as QueueNotFound rather than being dropped without a word.

Delivery count. Quorum queues put `x-delivery-count` on every delivery after the first, so
`delivery_count` is that value + 1, or 1 without it. Classic queues only say whether a
message was delivered before: 1 when it was not, None (unknown) when it was.

Delays. RabbitMQ has no per-message delay without a plugin. Per-message TTLs in one shared
delay queue do not work either: the broker only expires messages at the head of a queue, so
a short delay would wait behind a long one. Instead every (target queue, delay) pair gets
its own classic delay queue, `<target>.delay-<ms>ms`, whose queue-level `x-message-ttl` is
the delay; expired messages are dead-lettered through the default exchange to the target.
Every message in such a queue has the same TTL, so they expire in order. To keep the
number of delay queues small, delays are rounded to two significant digits (2.0 s, 1.2 s,
45 s, 3,600 s ...), so a message may become visible up to 5% earlier or later than asked.
A delay queue deletes itself (`x-expires`) one minute after it was last declared; we
declare it before every delayed send, which renews that lease for longer than any message
in it waits. We check that the target exists before a delayed send, because a message
dead-lettered to a missing queue is dropped. The target can still be deleted while a
message waits; that message is then lost along with the queue it was meant for.

Reconnects. We supervise connections ourselves instead of using aio-pika's robust
connection, which re-declares queues with their original arguments (recreating a queue an
operator deleted), retries at a fixed interval without jitter, and makes a send wait for
the reconnect instead of failing. Here a receiver that loses its channel or connection
reconnects with capped exponential backoff and full jitter (a pause drawn uniformly from
[0, min(reconnect_max, reconnect_initial * 2**n)) before the n-th retry), checks that its
queue still exists without declaring it, and consumes again. Deliveries handed out before
the loss are stale: the broker hands those messages out again, and settling a stale
delivery does nothing. A `send` while the broker is down tries one reconnect, bounded by
CONNECT_TIMEOUT_S, and raises TransportUnavailable if that fails.

Publishing (with the admin calls: declare, delete, depth) and consuming use two separate
connections, because RabbitMQ blocks a connection that publishes during a resource alarm,
and a consumer on it could then no longer ack the messages that would end the alarm.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping, Set
from typing import Any, Final, TypeVar
from urllib.parse import parse_qs, urlsplit

import aio_pika
import aio_pika.abc
import aiormq
import aiormq.abc
import pamqp.commands
import pamqp.exceptions
from aiormq.exceptions import (
    AMQPConnectionError,
    AMQPError,
    ChannelAccessRefused,
    ChannelClosed,
    ChannelLockedResource,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
    DeliveryError,
    PublishError,
)

from asya_transports import receiving
from asya_transports.base import (
    ClosesOnExit,
    InvalidQueueName,
    MessageTooLarge,
    QueueNotFound,
    Receiver,
    TransportError,
    TransportUnavailable,
    Unsupported,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

QUEUE_TYPES: Final = ("quorum", "classic")
DEFAULT_URL: Final = "amqp://guest:guest@127.0.0.1:5672/"
# How long a send (or a receiver's attempt) waits for a new connection before giving up.
CONNECT_TIMEOUT_S: Final = 5.0
# Bound on one exchange with the broker (open a channel, declare, a publisher confirm...):
# generous, since a quorum queue confirms only after a majority of nodes wrote to disk.
OPERATION_TIMEOUT_S: Final = 30.0
# An idle delay queue disappears this long after its last declaration.
DELAY_QUEUE_GRACE_MS: Final = 60_000
# RabbitMQ keeps TTL and expiry timers in unsigned 32-bit milliseconds (about 49.7 days).
MAX_TIMER_MS: Final = 2**32 - 1
# The longest delay whose rounded bucket, plus the grace, still fits RabbitMQ's timer
# (about 48.6 days).
MAX_DELAY_SECONDS: Final = 4_200_000.0
# AMQP queue names (and routing keys) are short strings: at most 255 bytes.
MAX_NAME_BYTES: Final = 255
# AMQP delivery mode 2: the broker writes the message to disk.
PERSISTENT: Final = 2

# Everything the AMQP stack raises: aiormq's errors (aio-pika re-exports them), pamqp's
# framing errors, socket errors and timeouts (OSError), and the RuntimeErrors aio-pika uses
# for a channel or connection in the wrong state (ChannelInvalidStateError among them).
_SDK_ERRORS: Final = (AMQPError, pamqp.exceptions.PAMQPException, OSError, RuntimeError)


# --- Pure rules -------------------------------------------------------------------------------


def check_queue_name(queue: str) -> None:
    size = len(queue.encode())
    if not 0 < size <= MAX_NAME_BYTES:
        raise InvalidQueueName(
            f"queue name {queue!r} has {size} bytes; RabbitMQ needs 1 to {MAX_NAME_BYTES}"
        )


def delay_bucket_ms(delay: float) -> int:
    """`delay` seconds in milliseconds, rounded to two significant digits (at least 1)."""
    if not math.isfinite(delay):
        raise Unsupported(f"a delay must be a finite number of seconds, got {delay}")
    ms = delay * 1000.0
    if ms < 1.0:
        return 1
    step = int(10 ** max(0, math.floor(math.log10(ms)) - 1))
    return max(1, math.floor(ms / step + 0.5) * step)


def delay_queue_name(target: str, bucket_ms: int) -> str:
    return f"{target}.delay-{bucket_ms}ms"


def delay_queue_arguments(target: str, bucket_ms: int) -> dict[str, Any]:
    """Arguments of the classic queue that holds messages for `target` for `bucket_ms`."""
    if bucket_ms + DELAY_QUEUE_GRACE_MS > MAX_TIMER_MS:
        longest = (MAX_TIMER_MS - DELAY_QUEUE_GRACE_MS) / 1000.0
        raise Unsupported(
            f"a delay of {bucket_ms / 1000.0:g} s is longer than RabbitMQ can hold a message "
            f"(at most {longest:g} s, about 49 days)"
        )
    return {
        "x-queue-type": "classic",
        "x-message-ttl": bucket_ms,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": target,
        "x-expires": bucket_ms + DELAY_QUEUE_GRACE_MS,
    }


def delivery_count(headers: Mapping[str, Any] | None, *, redelivered: bool) -> int | None:
    """Deliveries of a message so far, counting this one; None when the broker does not say.

    Quorum queues count in `x-delivery-count` (absent on the first delivery); classic queues
    only flag a redelivery, without saying how many there were.
    """
    count = (headers or {}).get("x-delivery-count")
    if isinstance(count, int) and not isinstance(count, bool):
        return count + 1
    return None if redelivered else 1


def ack_plan(unsettled: Iterable[int], ready: Set[int]) -> tuple[int | None, list[int]]:
    """How to ack the tags in `ready`: (a tag to ack with multiple=True, or None; the rest).

    `unsettled` lists the channel's delivered and unsettled tags in delivery order (they
    only grow). One ack with multiple=True settles every unsettled tag up to it, so it may
    cover only a run at the start of `unsettled` whose tags are all ready; it pays off from
    two tags on. Everything else in `ready` is acked one by one.
    """
    run: list[int] = []
    for tag in unsettled:
        if tag not in ready:
            break
        run.append(tag)
    if len(run) < 2:
        return None, sorted(ready)
    covered = set(run)
    return run[-1], sorted(tag for tag in ready if tag not in covered)


def queue_type_from_env(environ: Mapping[str, str]) -> str:
    value = environ.get("ASYA_RABBITMQ_QUEUE_TYPE") or "quorum"
    if value not in QUEUE_TYPES:
        raise ValueError(
            f"ASYA_RABBITMQ_QUEUE_TYPE={value!r} is not a queue type Asya supports; "
            f"use 'quorum' (the default) or 'classic'"
        )
    return value


def translate(exc: BaseException, *, queue: str, doing: str) -> TransportError:
    """The base.py error for an exception of the AMQP stack raised while `doing` `queue`."""
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, PublishError):
        return QueueNotFound(queue, f"the broker returned the message as unroutable ({detail})")
    if isinstance(exc, DeliveryError):
        return TransportUnavailable(
            f"the broker refused to store a message for queue {queue!r} ({detail}); "
            f"it was not stored, try again later"
        )
    if isinstance(exc, ChannelNotFoundEntity):
        return QueueNotFound(queue, f"cannot {doing} it ({detail})")
    if isinstance(exc, ChannelPreconditionFailed | ChannelAccessRefused | ChannelLockedResource):
        return TransportError(f"cannot {doing} queue {queue!r}: {detail}")
    if isinstance(exc, TimeoutError):
        return TransportUnavailable(
            f"RabbitMQ did not answer in time while trying to {doing} queue {queue!r}"
        )
    if isinstance(exc, AMQPConnectionError | ChannelClosed | OSError | RuntimeError):
        return TransportUnavailable(
            f"lost the connection to RabbitMQ while trying to {doing} queue {queue!r} "
            f"({detail}); try again later"
        )
    return TransportError(f"cannot {doing} queue {queue!r}: {detail}")


@contextlib.contextmanager
def _edge(queue: str, doing: str) -> Iterator[None]:
    """Translate what the AMQP stack raises inside the block into a base.py error."""
    try:
        yield
    except asyncio.CancelledError as exc:
        # aiormq cancels the futures of a channel that closes under us; letting that escape
        # would make the caller believe it was cancelled itself.
        if receiving.cancelled_by_caller():
            raise
        raise TransportUnavailable(
            f"the channel closed while trying to {doing} queue {queue!r}; try again later"
        ) from exc
    except _SDK_ERRORS as exc:
        raise translate(exc, queue=queue, doing=doing) from exc


# --- Connections and channels -----------------------------------------------------------------


def _where(url: str) -> str:
    """Host and port of an AMQP URL, for messages: never the credentials."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 5672}"


def _connection_name(url: str, role: str) -> str:
    # Shown by `rabbitmqctl list_connections client_properties` and the management UI; a
    # `name` in the URL (`...?name=orders-sidecar`) replaces the "asya" prefix.
    names = parse_qs(urlsplit(url).query).get("name")
    return f"{names[0] if names else 'asya'} {role}"


def _is_open(connection: aio_pika.abc.AbstractConnection) -> bool:
    return not connection.is_closed and connection.connected.is_set()


async def _open_channel(
    connection: aio_pika.abc.AbstractConnection, *, confirms: bool
) -> aio_pika.abc.AbstractChannel:
    # on_return_raises makes a mandatory message that no queue takes fail its publish with
    # PublishError, instead of counting as confirmed.
    channel = connection.channel(publisher_confirms=confirms, on_return_raises=confirms)
    async with asyncio.timeout(OPERATION_TIMEOUT_S):
        await channel.initialize()
    return channel


async def _close_quietly(
    closable: aio_pika.abc.AbstractChannel | aio_pika.abc.AbstractConnection,
) -> None:
    # Closing is cleanup: if the broker is gone the channel or connection is gone too, and
    # the broker returns its unsettled messages to their queues either way.
    with contextlib.suppress(*_SDK_ERRORS):
        async with asyncio.timeout(OPERATION_TIMEOUT_S):
            await closable.close()


def _retrieve_result(task: asyncio.Task[Any]) -> None:
    # A connection attempt whose waiters all went away must not log "exception never
    # retrieved": its failure was already reported to whoever waited.
    if not task.cancelled():
        task.exception()


class _Link:
    """One AMQP connection, opened again on demand after it was lost.

    Concurrent callers share one connection attempt, so a hundred sends during an outage
    make one attempt and fail together, not one after another.
    """

    def __init__(self, url: str, *, role: str) -> None:
        self._url = url
        self._name = _connection_name(url, role)
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._attempt: asyncio.Task[aio_pika.abc.AbstractConnection] | None = None
        self._closed = False

    async def connection(self) -> aio_pika.abc.AbstractConnection:
        if self._closed:
            raise TransportError("the RabbitMQ transport is closed")
        current = self._connection
        if current is not None and _is_open(current):
            return current
        if self._attempt is None or self._attempt.done():
            self._attempt = asyncio.create_task(self._connect(), name=f"connect {self._name}")
            self._attempt.add_done_callback(_retrieve_result)
        # Shielded: one caller giving up must not abort the attempt others wait for.
        return await asyncio.shield(self._attempt)

    async def _connect(self) -> aio_pika.abc.AbstractConnection:
        stale, self._connection = self._connection, None
        if stale is not None:
            await _close_quietly(stale)
        try:
            connection = await aio_pika.connect(
                self._url,
                timeout=CONNECT_TIMEOUT_S,
                client_properties={"connection_name": self._name},
            )
        except _SDK_ERRORS as exc:
            raise TransportUnavailable(
                f"cannot connect to RabbitMQ at {_where(self._url)}: "
                f"{str(exc) or type(exc).__name__}"
            ) from exc
        if self._closed:
            await _close_quietly(connection)
            raise TransportError("the RabbitMQ transport is closed")
        self._connection = connection
        return connection

    async def close(self) -> None:
        self._closed = True
        if self._attempt is not None and not self._attempt.done():
            # Let it finish (bounded by CONNECT_TIMEOUT_S): it sees `_closed` and closes what
            # it opened, instead of leaving a connection behind.
            await asyncio.wait([self._attempt])
        connection, self._connection = self._connection, None
        if connection is not None:
            await _close_quietly(connection)


class _Subscription:
    """One consumer on one channel. A reconnect makes a new one; the deliveries of an old
    one are stale. The channel stays open until its handed-out deliveries are settled."""

    def __init__(self, channel: aio_pika.abc.AbstractChannel) -> None:
        self.channel = channel
        self.lost = asyncio.Event()
        self.held = 0  # handed out by __anext__ and not settled yet
        self._underlay: aiormq.abc.AbstractChannel | None = None
        self._consumer_tag: str | None = None
        self._retired = False
        # Delivered, not settled, in delivery order (a dict keeps it), and those of them
        # acked by the consumer but not sent yet: acks that arrive in the same turn of the
        # event loop go out together (see ack).
        self._unsettled: dict[int, None] = {}
        self._ready: set[int] = set()
        self._flushing = False
        channel.close_callbacks.add(self._on_closed)
        if channel.is_closed:  # closed before the callback was in place
            self.lost.set()

    @property
    def is_open(self) -> bool:
        return not self.channel.is_closed

    async def start(
        self,
        queue: str,
        on_message: Callable[[aiormq.abc.DeliveredMessage], Coroutine[Any, Any, None]],
    ) -> None:
        underlay = await self.channel.get_underlay_channel()
        # The broker cancels a consumer whose queue was deleted, without closing the channel.
        underlay.on_consumer_cancel_callbacks.add(self._on_cancelled)
        self._underlay = underlay
        # aiormq's consumer directly: aio-pika would build an IncomingMessage per delivery
        # (decoding every property) that we do not need.
        consume_ok = await underlay.basic_consume(queue, on_message)
        self._consumer_tag = consume_ok.consumer_tag

    async def stop_consuming(self) -> None:
        underlay, tag, self._consumer_tag = self._underlay, self._consumer_tag, None
        if underlay is None or tag is None or not self.is_open:
            return
        # If this fails the channel is failing too, and a closed channel has no consumer.
        with contextlib.suppress(*_SDK_ERRORS):
            async with asyncio.timeout(OPERATION_TIMEOUT_S):
                await underlay.basic_cancel(tag)

    async def settled(self) -> None:
        self.held -= 1
        if self._retired and self.held == 0:
            await _close_quietly(self.channel)

    async def retire(self) -> None:
        self._retired = True
        if self.held == 0 and self.is_open:
            await _close_quietly(self.channel)

    def delivered(self, tag: int) -> None:
        self._unsettled[tag] = None

    async def ack(self, tag: int) -> None:
        """Ack `tag`, together with the acks of other deliveries finished in this same turn.

        Deliveries finish in bursts (the broker confirms publishes in batches), so the first
        ack of a turn yields once, then sends what has gathered: one ack with multiple=True
        for a run of consecutive tags, single acks for the rest. Fewer frames for us and
        fewer settle commands for the broker. An ack cut short by cancellation or a dead
        channel only means a redelivery, never a loss.
        """
        self._ready.add(tag)
        if self._flushing:
            return  # the ack that is gathering will send this one
        self._flushing = True
        try:
            await asyncio.sleep(0)
        finally:
            self._flushing = False
            ready, self._ready = self._ready, set()
            await self._send_acks(ready)

    async def _send_acks(self, ready: set[int]) -> None:
        multiple, singles = ack_plan(self._unsettled, ready)
        for tag in ready:
            self._unsettled.pop(tag, None)
        if not self.is_open:
            return  # the broker has already put them back
        # wait=False: the frames are queued for the connection's writer, in order, and we do
        # not wait for the socket to drain; they still go out before a later channel.close.
        channel = self._underlay
        assert channel is not None  # deliveries come only after start()
        with contextlib.suppress(*_SDK_ERRORS):
            if multiple is not None:
                await channel.basic_ack(multiple, multiple=True, wait=False)
            for tag in singles:
                await channel.basic_ack(tag, wait=False)

    async def nack(self, tag: int) -> None:
        self._unsettled.pop(tag, None)
        if not self.is_open:
            return
        channel = self._underlay
        assert channel is not None
        with contextlib.suppress(*_SDK_ERRORS):
            await channel.basic_nack(tag, requeue=True, wait=False)

    def _on_closed(self, _sender: object, _exc: BaseException | None) -> None:
        self.lost.set()

    def _on_cancelled(self, _frame: object) -> None:
        self.lost.set()


# --- Deliveries and receivers -----------------------------------------------------------------


class RabbitMQDelivery:
    """A message received from RabbitMQ (implements base.Delivery)."""

    def __init__(self, message: aiormq.abc.DeliveredMessage, subscription: _Subscription) -> None:
        self._message = message
        self._subscription = subscription
        self._count = delivery_count(
            message.header.properties.headers, redelivered=bool(message.redelivered)
        )
        self._settled = False
        self._tag = message.delivery_tag
        if self._tag is not None:  # only no_ack consumers get no tag; ours always acks
            subscription.delivered(self._tag)

    @property
    def body(self) -> bytes:
        return self._message.body

    @property
    def delivery_count(self) -> int | None:
        return self._count

    @property
    def is_stale(self) -> bool:
        """Its channel is gone, so the broker has already put the message back."""
        return not self._subscription.is_open

    async def ack(self) -> None:
        await self._settle(ack=True)

    async def nack(self) -> None:
        await self._settle(ack=False)

    async def extend(self, seconds: float) -> None:
        """No leases in RabbitMQ: a delivery is held for as long as its channel lives."""

    def handed_out(self) -> None:
        self._subscription.held += 1

    async def give_back(self) -> None:
        """Requeue a delivery that was fetched but never handed out."""
        self._settled = True
        await self._send_settlement(ack=False)

    async def _settle(self, *, ack: bool) -> None:
        if self._settled:
            return
        self._settled = True
        try:
            await self._send_settlement(ack=ack)
        finally:
            await self._subscription.settled()

    async def _send_settlement(self, *, ack: bool) -> None:
        # A stale delivery's channel is gone and the broker has put the message back, which
        # is all a settle could do; failing later means the same.
        if self.is_stale or self._tag is None:
            return
        if ack:
            await self._subscription.ack(self._tag)
        else:
            await self._subscription.nack(self._tag)


class RabbitMQReceiver(receiving.BaseReceiver[RabbitMQDelivery]):
    """A subscription to one queue that survives reconnects (implements base.Receiver).

    The broker pushes deliveries (no more than `prefetch` unsettled, by basic.qos) and the
    consumer's callback puts them in the inbox. Each round of the loop subscribes and waits
    until the channel or the consumer is lost; a lost subscription's deliveries are stale.
    """

    def __init__(self, transport: RabbitMQTransport, queue: str, *, prefetch: int) -> None:
        super().__init__(queue, backoff=transport._backoff, receivers=transport._receivers)
        self._transport = transport
        self._prefetch = prefetch
        self._subscription: _Subscription | None = None

    async def aclose(self) -> None:
        if self._closed:
            return
        await self._stop()
        subscription = self._subscription
        # Cancel the consumer before giving back, or the broker would hand what we give back
        # straight to this consumer again.
        if subscription is not None:
            await subscription.stop_consuming()
        await self._give_back(self._leftovers())
        if subscription is not None:
            await subscription.retire()

    async def close_within(self, grace: float) -> None:
        """Stop the loop only: the transport closes the connection next, which returns every
        unsettled delivery to its queue."""
        if not self._closed:
            await self._stop()

    async def _run(self) -> None:
        subscription = await self._subscribe()
        self._recovered()
        await subscription.lost.wait()
        await subscription.retire()
        raise TransportUnavailable(f"lost the consumer of {self.queue!r}; reconnecting")

    async def _give_back(self, deliveries: list[RabbitMQDelivery]) -> None:
        for delivery in deliveries:
            await delivery.give_back()

    def _hand_out(self, delivery: RabbitMQDelivery) -> bool:
        if delivery.is_stale:
            return False
        delivery.handed_out()
        return True

    async def _subscribe(self) -> _Subscription:
        connection = await self._transport._consume_link.connection()
        with _edge(self.queue, "consume from"):
            subscription = _Subscription(await _open_channel(connection, confirms=False))
            self._subscription = subscription
            try:
                async with asyncio.timeout(OPERATION_TIMEOUT_S):
                    await subscription.channel.set_qos(prefetch_count=self._prefetch)
                    # Passive: never recreate a queue that was deleted on purpose.
                    await subscription.channel.get_queue(self.queue, ensure=True)

                    async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
                        await self._deliver([RabbitMQDelivery(message, subscription)])

                    await subscription.start(self.queue, on_message)
            except BaseException:
                await _close_quietly(subscription.channel)
                raise
        return subscription


# --- The transport ----------------------------------------------------------------------------


class RabbitMQTransport(ClosesOnExit):
    """A connection to one RabbitMQ broker (implements base.Transport)."""

    name = "rabbitmq"

    def __init__(
        self,
        url: str,
        *,
        queue_type: str = "quorum",
        max_message_bytes: int = 128 * 1024 * 1024,
        lease_seconds: float | None = None,
        reconnect_initial: float = 0.5,
        reconnect_max: float = 30.0,
    ) -> None:
        if queue_type not in QUEUE_TYPES:
            raise ValueError(f"queue_type {queue_type!r} is not one of {', '.join(QUEUE_TYPES)}")
        self.url = url
        self.queue_type = queue_type
        # 128 MiB is RabbitMQ's own default `max_message_size`.
        self.max_message_bytes = max_message_bytes
        # Accepted so every transport takes the same settings, and ignored: RabbitMQ holds a
        # delivery for as long as its channel lives.
        del lease_seconds
        self.lease_seconds: float | None = None
        self.max_delay_seconds = MAX_DELAY_SECONDS
        self._backoff = receiving.Backoff(initial=reconnect_initial, cap=reconnect_max)
        self._publish_link = _Link(url, role="publish")
        self._consume_link = _Link(url, role="consume")
        self._publisher: aio_pika.abc.AbstractChannel | None = None
        self._publisher_underlay: aiormq.Channel | None = None
        self._publisher_lock = asyncio.Lock()
        # Declares, deletes and depth reads share one channel, one at a time: a failing one
        # (404, 406) closes the channel and would fail the others with the wrong error.
        self._admin: aio_pika.abc.AbstractChannel | None = None
        self._admin_lock = asyncio.Lock()
        self._receivers: set[RabbitMQReceiver] = set()
        self._closed = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> RabbitMQTransport:
        """Configure from ASYA_RABBITMQ_URL and ASYA_RABBITMQ_QUEUE_TYPE (empty means unset)."""
        return cls(
            environ.get("ASYA_RABBITMQ_URL") or DEFAULT_URL,
            queue_type=queue_type_from_env(environ),
        )

    async def __aenter__(self) -> RabbitMQTransport:
        # Connect now, so that a wrong URL or a broker that is down shows at start-up.
        await self._publish_link.connection()
        return self

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for receiver in list(self._receivers):
            await receiver.close_within(0)
        # Closing the connections returns every unsettled delivery to its queue.
        await self._consume_link.close()
        await self._publish_link.close()

    def receive(self, queue: str, *, prefetch: int) -> Receiver:
        check_queue_name(queue)
        if not 0 < prefetch <= 65535:  # basic.qos takes a 16-bit count; 0 means unlimited
            raise ValueError(f"prefetch must be between 1 and 65535, got {prefetch}")
        if self._closed:
            raise TransportError("the RabbitMQ transport is closed")
        return RabbitMQReceiver(self, queue, prefetch=prefetch)

    async def send(self, queue: str, body: bytes, *, delay: float = 0.0) -> None:
        check_queue_name(queue)
        if len(body) > self.max_message_bytes:
            raise MessageTooLarge(queue, len(body), self.max_message_bytes)
        routing_key = queue
        if delay > 0:
            routing_key = await self._delay_queue(queue, delay)
        with _edge(routing_key, "send to"):
            channel = await self._publisher_channel()
            # Straight to aiormq: aio-pika's Message and Exchange layers only add objects
            # here. wait=False lets the channel's lock go as soon as the frames are queued,
            # rather than after the socket drained, so concurrent sends do not queue behind
            # each other's writes; the broker's confirm is still awaited, within `timeout`.
            # A fresh Properties each time, because aiormq writes a message id into it.
            await channel.basic_publish(
                body,
                routing_key=routing_key,
                properties=pamqp.commands.Basic.Properties(delivery_mode=PERSISTENT),
                mandatory=True,
                timeout=OPERATION_TIMEOUT_S,
                wait=False,
            )

    async def ensure_queue(self, queue: str) -> None:
        check_queue_name(queue)
        arguments: dict[str, Any] = {"x-queue-type": self.queue_type}
        with _edge(queue, "declare"):
            try:
                await self._on_admin_channel(
                    lambda channel: channel.declare_queue(queue, durable=True, arguments=arguments)
                )
            except ChannelPreconditionFailed as exc:
                raise TransportError(
                    f"queue {queue!r} already exists with a different type or arguments than "
                    f"this transport declares (durable, x-queue-type={self.queue_type!r}); "
                    f"RabbitMQ cannot change them in place: delete the queue, or migrate its "
                    f"messages to a new queue ({exc})"
                ) from exc

    async def delete_queue(self, queue: str) -> None:
        check_queue_name(queue)
        # RabbitMQ answers delete-ok for a missing queue, some older versions 404: either way
        # there is no such queue afterwards, which is what was asked.
        with _edge(queue, "delete"), contextlib.suppress(ChannelNotFoundEntity):
            await self._on_admin_channel(lambda channel: channel.queue_delete(queue))

    async def queue_depth(self, queue: str) -> int:
        check_queue_name(queue)
        with _edge(queue, "read the depth of"):
            declared = await self._on_admin_channel(
                lambda channel: channel.get_queue(queue, ensure=True)
            )
        # Ready messages only: those delivered and not yet settled are not counted.
        return declared.declaration_result.message_count or 0

    async def _delay_queue(self, target: str, delay: float) -> str:
        bucket_ms = delay_bucket_ms(delay)
        name = delay_queue_name(target, bucket_ms)
        arguments = delay_queue_arguments(target, bucket_ms)
        if len(name.encode()) > MAX_NAME_BYTES:
            raise Unsupported(
                f"delay queue name {name!r} would exceed {MAX_NAME_BYTES} bytes; "
                f"delayed sends need a queue name shorter than {target!r}"
            )
        with _edge(target, "send a delayed message to"):
            await self._on_admin_channel(lambda channel: channel.get_queue(target, ensure=True))
        with _edge(name, "declare the delay queue"):
            await self._on_admin_channel(
                lambda channel: channel.declare_queue(name, durable=True, arguments=arguments)
            )
        return name

    async def _publisher_channel(self) -> aiormq.Channel:
        publisher = self._publisher
        if publisher is not None and not publisher.is_closed and self._publisher_underlay:
            return self._publisher_underlay
        connection = await self._publish_link.connection()
        async with self._publisher_lock:
            if self._publisher is None or self._publisher.is_closed or not self._publisher_underlay:
                self._publisher_underlay = None
                self._publisher = await _open_channel(connection, confirms=True)
                underlay = await self._publisher.get_underlay_channel()
                # aio-pika hands out the concrete aiormq channel, whose basic_publish takes
                # `wait` (the abstract one does not declare it).
                assert isinstance(underlay, aiormq.Channel)
                self._publisher_underlay = underlay
            assert self._publisher_underlay is not None
            return self._publisher_underlay

    async def _on_admin_channel(
        self, call: Callable[[aio_pika.abc.AbstractChannel], Awaitable[T]]
    ) -> T:
        """Run `call` on the admin channel; the caller translates what it raises."""
        connection = await self._publish_link.connection()
        async with self._admin_lock:
            if self._admin is None or self._admin.is_closed:
                self._admin = await _open_channel(connection, confirms=False)
            async with asyncio.timeout(OPERATION_TIMEOUT_S):
                return await call(self._admin)
