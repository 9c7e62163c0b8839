"""The behaviour every transport must show, written once.

Each broker's test module subclasses `TransportContract` and provides three fixtures:

- `make_transport`: an async factory `(**overrides) -> Broker` (already entered with
  `async with`; closed by the fixture after the test). Overrides accepted by every transport:
  `max_message_bytes` and `lease_seconds` (ignored by transports without leases).
- `queue`: a fresh, already ensured queue name, unique per test.
- `broker`: a BrokerControl that stops (as a crash would) and starts the broker the
  transports talk to, or None for the embedded transport, which has no broker process.

Subclasses set `HAS_LEASES`, `COUNTS_DELIVERIES`, `COUNTS_DEPTH` and `MAX_DELAY_S` to say
what the broker provides; a test that does not apply is skipped with that reason printed, and
what a transport cannot do it must refuse with a typed error, which the suite checks.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import pytest

from asya_transports import (
    Broker,
    Delivery,
    MessageTooLarge,
    QueueNotFound,
    Receiver,
    TransportError,
    TransportUnavailable,
    Unsupported,
)
from tests.support.waiting import eventually

MakeTransport = Callable[..., Awaitable[Broker]]
WAIT_S = 15.0  # generous deadline for anything that should happen "soon"
QUIET_S = 1.0  # how long we watch for something that must not happen


async def next_delivery(receiver: Receiver, timeout: float = WAIT_S) -> Delivery:
    return await asyncio.wait_for(receiver.__anext__(), timeout)


async def nothing_arrives(receiver: Receiver, within: float = QUIET_S) -> bool:
    try:
        delivery = await asyncio.wait_for(receiver.__anext__(), within)
    except TimeoutError:
        return True
    await delivery.nack()
    return False


class BrokerControl(Protocol):
    def stop(self) -> None: ...

    def start(self) -> None: ...


class TransportContract:
    HAS_LEASES = True
    COUNTS_DELIVERIES = True
    COUNTS_DEPTH = True  # False: queue_depth raises Unsupported (for an existing queue)
    MAX_DELAY_S: float | None = None  # longer delays must be refused with Unsupported

    async def assert_waiting(self, transport: Broker, queue: str, expected: int) -> None:
        """`expected` messages wait in `queue`: by its depth, or else by receiving them all."""
        if self.COUNTS_DEPTH:
            await eventually(
                lambda: _depth_is(transport, queue, expected), f"depth {expected}", timeout=WAIT_S
            )
            return
        receiver = transport.receive(queue, prefetch=max(expected, 1) + 1)
        taken = [await next_delivery(receiver) for _ in range(expected)]
        assert await nothing_arrives(receiver), f"more than {expected} message(s) waiting"
        for delivery in taken:
            await delivery.nack()
        await receiver.aclose()

    async def test_sent_bytes_arrive_unchanged(
        self, make_transport: MakeTransport, queue: str
    ) -> None:
        transport = await make_transport()
        body = b'{"id": "a", "text": "\xc3\xa9t\xc3\xa9 \xf0\x9f\x8c\x9e"}\x00\xff'

        await transport.send(queue, body)
        receiver = transport.receive(queue, prefetch=1)
        delivery = await next_delivery(receiver)

        assert delivery.body == body
        if self.COUNTS_DELIVERIES:
            assert delivery.delivery_count == 1
        await delivery.ack()
        await receiver.aclose()

    async def test_ack_removes_the_message(self, make_transport: MakeTransport, queue: str) -> None:
        transport = await make_transport()
        await transport.send(queue, b"one")
        receiver = transport.receive(queue, prefetch=1)

        delivery = await next_delivery(receiver)
        await delivery.ack()
        await delivery.ack()  # settling twice is harmless

        assert await nothing_arrives(receiver)
        await receiver.aclose()
        await self.assert_waiting(transport, queue, 0)

    async def test_nack_makes_the_message_available_again(
        self, make_transport: MakeTransport, queue: str
    ) -> None:
        transport = await make_transport()
        await transport.send(queue, b"again")
        receiver = transport.receive(queue, prefetch=1)

        first = await next_delivery(receiver)
        await first.nack()
        second = await next_delivery(receiver)

        assert second.body == b"again"
        if self.COUNTS_DELIVERIES:
            assert second.delivery_count == 2
        await second.ack()
        await receiver.aclose()

    async def test_unsettled_delivery_returns_when_the_consumer_goes_away(
        self, make_transport: MakeTransport, queue: str
    ) -> None:
        crashed = await make_transport(lease_seconds=1.0)
        await crashed.send(queue, b"survivor")
        receiver = crashed.receive(queue, prefetch=1)
        await next_delivery(receiver)  # taken, never settled
        await crashed.close()

        other = await make_transport(lease_seconds=1.0)
        again = await next_delivery(other.receive(queue, prefetch=1))

        assert again.body == b"survivor"
        await again.ack()

    async def test_prefetch_bounds_unsettled_deliveries(
        self, make_transport: MakeTransport, queue: str
    ) -> None:
        transport = await make_transport()
        for i in range(5):
            await transport.send(queue, f"m{i}".encode())
        receiver = transport.receive(queue, prefetch=2)

        held = [await next_delivery(receiver), await next_delivery(receiver)]
        assert await nothing_arrives(receiver)  # a third would exceed prefetch
        await held[0].ack()
        third = await next_delivery(receiver)

        received = {d.body for d in [*held, third]}
        assert len(received) == 3
        for delivery in (held[1], third):
            await delivery.ack()
        await receiver.aclose()

    async def test_delayed_send_stays_invisible_for_the_delay(
        self, make_transport: MakeTransport, queue: str
    ) -> None:
        transport = await make_transport()
        receiver = transport.receive(queue, prefetch=4)
        sent_at = time.monotonic()

        await transport.send(queue, b"later", delay=2.0)
        await transport.send(queue, b"now")

        first = await next_delivery(receiver)
        assert first.body == b"now"
        await first.ack()
        later = await next_delivery(receiver)
        assert later.body == b"later"
        # Lower bound only: the broker must not hand it out early. (0.1 s for clock rounding.)
        assert time.monotonic() - sent_at >= 1.9
        await later.ack()
        await receiver.aclose()

    async def test_lease_extension_keeps_a_long_call_invisible(
        self, make_transport: MakeTransport, queue: str
    ) -> None:
        if not self.HAS_LEASES:
            pytest.skip(
                "this broker has no leases: a delivery is held for as long as the "
                "connection lives, so there is nothing to extend"
            )
        transport = await make_transport(lease_seconds=1.0)
        await transport.send(queue, b"slow")
        delivery = await next_delivery(transport.receive(queue, prefetch=1))

        await delivery.extend(4.0)
        other = (await make_transport(lease_seconds=1.0)).receive(queue, prefetch=1)

        # Well past the 1 s lease, nobody else gets it.
        assert await nothing_arrives(other, within=2.0)
        await delivery.ack()
        assert await nothing_arrives(other, within=QUIET_S)
        await other.aclose()

    async def test_expired_lease_hands_the_message_to_another_consumer(
        self, make_transport: MakeTransport, queue: str
    ) -> None:
        if not self.HAS_LEASES:
            pytest.skip(
                "this broker has no leases; redelivery happens when the connection "
                "closes (see test_unsettled_delivery_returns_when_the_consumer_goes_away)"
            )
        transport = await make_transport(lease_seconds=1.0)
        await transport.send(queue, b"stuck")
        stuck = await next_delivery(transport.receive(queue, prefetch=1))

        other = (await make_transport(lease_seconds=1.0)).receive(queue, prefetch=1)
        again = await next_delivery(other)

        assert again.body == b"stuck"
        if self.COUNTS_DELIVERIES:
            assert again.delivery_count == 2
        await again.ack()
        await stuck.ack()  # the stale handle settles nothing and raises nothing
        await other.aclose()

    async def test_many_concurrent_sends_all_arrive(
        self, make_transport: MakeTransport, queue: str
    ) -> None:
        transport = await make_transport()
        bodies = {f"msg-{i}".encode() for i in range(200)}

        await asyncio.gather(*(transport.send(queue, body) for body in bodies))
        receiver = transport.receive(queue, prefetch=50)
        received: list[bytes] = []
        while len(received) < len(bodies):
            delivery = await next_delivery(receiver)
            received.append(delivery.body)
            await delivery.ack()

        assert sorted(received) == sorted(bodies)  # no duplicates, none missing; any order
        await receiver.aclose()

    async def test_one_megabyte_text_body(self, make_transport: MakeTransport, queue: str) -> None:
        transport = await make_transport()
        chunk = '{"text": "dès 日本 🌍", "n": 12345}, '.encode()
        body = (chunk * (1_000_000 // len(chunk) + 1))[:1_000_000]

        await transport.send(queue, body)
        delivery = await next_delivery(transport.receive(queue, prefetch=1))

        assert delivery.body == body
        await delivery.ack()

    async def test_half_megabyte_binary_body(
        self, make_transport: MakeTransport, queue: str
    ) -> None:
        transport = await make_transport()
        body = bytes(range(256)) * 2048

        await transport.send(queue, body)
        delivery = await next_delivery(transport.receive(queue, prefetch=1))

        assert delivery.body == body
        await delivery.ack()

    async def test_a_delay_the_broker_cannot_keep_is_refused(
        self, make_transport: MakeTransport, queue: str
    ) -> None:
        if self.MAX_DELAY_S is None:
            pytest.skip("this transport can delay a message by any amount")
        transport = await make_transport()

        with pytest.raises(Unsupported):
            await transport.send(queue, b"too late", delay=self.MAX_DELAY_S + 1)
        await self.assert_waiting(transport, queue, 0)

    async def test_the_advertised_longest_delay_is_accepted(
        self, make_transport: MakeTransport, queue: str
    ) -> None:
        # The sidecar shortens longer retry delays to this, so it must really be accepted.
        transport = await make_transport()
        longest = transport.max_delay_seconds
        if self.MAX_DELAY_S is None:
            assert longest == float("inf")
            longest = 10 * 365 * 86400.0
        else:
            assert 0 < longest <= self.MAX_DELAY_S

        await transport.send(queue, b"as late as it gets", delay=longest)

    async def test_the_transport_recovers_after_the_broker_comes_back(
        self, make_transport: MakeTransport, queue: str, broker: BrokerControl | None
    ) -> None:
        if broker is None:
            pytest.skip("the embedded transport has no broker process to lose")
        transport = await make_transport()
        receiver = transport.receive(queue, prefetch=1)
        await transport.send(queue, b"before")
        await (await next_delivery(receiver)).ack()

        await asyncio.to_thread(broker.stop)
        with pytest.raises(TransportUnavailable):
            await asyncio.wait_for(transport.send(queue, b"during"), 60)
        await asyncio.to_thread(broker.start)
        # A broker that keeps no state across restarts (moto, the emulator) lost the queue.
        await eventually(
            lambda: _ensured(transport, queue), "the broker to be reachable", timeout=WAIT_S
        )
        await transport.send(queue, b"after")

        assert await _receive_body(receiver, transport, queue) == b"after"

    async def test_body_over_the_limit_is_refused_before_sending(
        self, make_transport: MakeTransport, queue: str
    ) -> None:
        transport = await make_transport(max_message_bytes=1000)

        with pytest.raises(MessageTooLarge, match="1001 bytes"):
            await transport.send(queue, b"x" * 1001)
        await self.assert_waiting(transport, queue, 0)

    async def test_send_to_a_missing_queue_is_refused(self, make_transport: MakeTransport) -> None:
        transport = await make_transport()
        missing = f"asya-test-missing-{uuid.uuid4().hex[:8]}"

        with pytest.raises(QueueNotFound, match=missing):
            await transport.send(missing, b"lost?")

    async def test_ensure_is_idempotent_and_keeps_messages(
        self, make_transport: MakeTransport, queue: str
    ) -> None:
        transport = await make_transport()
        await transport.send(queue, b"kept")

        await transport.ensure_queue(queue)
        await transport.ensure_queue(queue)

        await self.assert_waiting(transport, queue, 1)

    async def test_depth_counts_messages_waiting(
        self, make_transport: MakeTransport, queue: str
    ) -> None:
        transport = await make_transport()
        if not self.COUNTS_DEPTH:
            with pytest.raises(Unsupported):
                await transport.queue_depth(queue)
            return
        for i in range(3):
            await transport.send(queue, str(i).encode())
        await eventually(lambda: _depth_is(transport, queue, 3), "depth 3", timeout=WAIT_S)

        receiver = transport.receive(queue, prefetch=1)
        delivery = await next_delivery(receiver)
        # The one held by a consumer is no longer waiting (KEDA's AMQP count agrees).
        await eventually(
            lambda: _depth_is(transport, queue, 2), "depth 2 while one is held", timeout=WAIT_S
        )
        await receiver.aclose()  # no consumer left to take it again
        await delivery.nack()
        await eventually(
            lambda: _depth_is(transport, queue, 3), "depth 3 after the nack", timeout=WAIT_S
        )

    async def test_delete_removes_queue_and_messages(
        self, make_transport: MakeTransport, queue: str
    ) -> None:
        transport = await make_transport()
        await transport.send(queue, b"doomed")

        await transport.delete_queue(queue)
        await transport.delete_queue(queue)  # deleting twice is fine

        with pytest.raises(QueueNotFound):
            await transport.send(queue, b"after")
        with pytest.raises(QueueNotFound):
            await transport.queue_depth(queue)

    async def test_receiving_from_a_missing_queue_raises_until_the_queue_exists(
        self, make_transport: MakeTransport
    ) -> None:
        transport = await make_transport()
        missing = f"asya-test-missing-{uuid.uuid4().hex[:8]}"
        receiver = transport.receive(missing, prefetch=1)

        with pytest.raises(QueueNotFound, match=missing):
            await next_delivery(receiver)
        with pytest.raises(QueueNotFound, match=missing):  # tried again, not a hang
            await next_delivery(receiver)
        await transport.ensure_queue(missing)
        await transport.send(missing, b"found")

        delivery = await next_delivery(receiver)  # the next call tries again
        assert delivery.body == b"found"
        await delivery.ack()
        await receiver.aclose()
        await transport.delete_queue(missing)

    async def test_a_cancelled_wait_keeps_the_subscription(
        self, make_transport: MakeTransport, queue: str
    ) -> None:
        transport = await make_transport()
        receiver = transport.receive(queue, prefetch=1)
        for _ in range(3):
            assert await nothing_arrives(receiver, within=0.2)

        await transport.send(queue, b"still here")
        delivery = await next_delivery(receiver)

        assert delivery.body == b"still here"
        if self.COUNTS_DELIVERIES:
            assert delivery.delivery_count == 1
        await delivery.ack()
        await receiver.aclose()

    async def test_waits_cancelled_at_any_moment_lose_no_message(
        self, make_transport: MakeTransport, queue: str
    ) -> None:
        transport = await make_transport()
        receiver = transport.receive(queue, prefetch=3)
        bodies = {f"c{i}".encode() for i in range(30)}
        received: list[bytes] = []

        sending = asyncio.gather(*(transport.send(queue, body) for body in bodies))
        deadline = time.monotonic() + WAIT_S
        while len(received) < len(bodies):
            assert time.monotonic() < deadline, f"only {len(received)} of {len(bodies)} arrived"
            try:
                delivery = await asyncio.wait_for(receiver.__anext__(), 0.001)
            except TimeoutError:
                continue
            received.append(delivery.body)
            await delivery.ack()
        await sending

        assert sorted(received) == sorted(bodies)
        await receiver.aclose()

    async def test_closed_receivers_fetches_in_flight_keep_no_message(
        self, make_transport: MakeTransport, queue: str
    ) -> None:
        # A long poll or a pull cannot be taken back: the broker may hand a message to one
        # whose receiver has closed, and that message would be back only after a whole
        # lease (30 s and more). Several closed receivers make that all but certain.
        transport = await make_transport()
        closed = [transport.receive(queue, prefetch=1) for _ in range(3)]
        for receiver in closed:
            assert await nothing_arrives(receiver, within=0.5)  # now waiting on the broker
            await receiver.aclose()

        await transport.send(queue, b"for the open one")
        fresh = transport.receive(queue, prefetch=1)
        delivery = await next_delivery(fresh)

        assert delivery.body == b"for the open one"
        await delivery.ack()
        await fresh.aclose()

    async def test_closing_a_receiver_returns_its_prefetched_messages(
        self, make_transport: MakeTransport, queue: str
    ) -> None:
        transport = await make_transport()
        for i in range(4):
            await transport.send(queue, f"p{i}".encode())
        receiver = transport.receive(queue, prefetch=4)
        taken = await next_delivery(receiver)
        await receiver.aclose()
        with pytest.raises(StopAsyncIteration):
            await receiver.__anext__()
        await taken.ack()  # still settle-able after the receiver closed

        fresh = transport.receive(queue, prefetch=4)
        rest = [await next_delivery(fresh) for _ in range(3)]

        assert {d.body for d in rest} | {taken.body} == {b"p0", b"p1", b"p2", b"p3"}
        for delivery in rest:
            await delivery.ack()
        await fresh.aclose()


async def _ensured(transport: Broker, queue: str) -> bool:
    try:
        await transport.ensure_queue(queue)
    except TransportUnavailable:
        return False
    return True


async def _receive_body(receiver: Receiver, transport: Broker, queue: str) -> bytes:
    """From the old receiver if it carried on, else from a new one if it reported a loss."""
    try:
        delivery = await next_delivery(receiver, timeout=60)
    except TransportError:
        # As the consumer does: close the failed receiver before subscribing again, so that
        # it cannot take the message into a buffer nobody reads.
        await receiver.aclose()
        receiver = transport.receive(queue, prefetch=1)
        delivery = await next_delivery(receiver, timeout=60)
    await delivery.ack()
    await receiver.aclose()
    return delivery.body


async def _depth_is(transport: Broker, queue: str, expected: int) -> bool:
    depth: Any = await transport.queue_depth(queue)
    return bool(depth == expected)
