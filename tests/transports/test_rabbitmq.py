"""The RabbitMQ transport against the real broker on 127.0.0.1:5672: the shared contract,
then what only RabbitMQ has (reconnects, queue types, delay queues, configuration).

The broker is shared with other test runs: connection-loss tests close only the connections
this test opened (found by their connection name), and the restart test keeps the outage
short and always starts the broker again.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aio_pika
import pytest

from asya_transports import (
    Broker,
    InvalidQueueName,
    QueueNotFound,
    TransportError,
    TransportUnavailable,
    Unsupported,
    rabbitmq,
)
from asya_transports.rabbitmq import RabbitMQTransport, ack_plan
from tests.support.waiting import eventually
from tests.transports.contract import (
    TransportContract,
    next_delivery,
)

MakeRabbit = Callable[..., Awaitable[RabbitMQTransport]]
RECOVERY_S = 90.0  # a broker restart plus the receiver's backoff (capped at 30 s)
OUTAGE_SEND_BOUND_S = 20.0  # a send during an outage must fail well before this


def unique(prefix: str = "asya-test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def make_transport(rabbitmq_url: str) -> AsyncIterator[MakeRabbit]:
    made: list[RabbitMQTransport] = []

    async def make(**overrides: Any) -> RabbitMQTransport:
        url = overrides.pop("url", rabbitmq_url)
        transport = RabbitMQTransport(url, **overrides)
        made.append(transport)
        return await transport.__aenter__()

    yield make
    for transport in made:
        await transport.close()


@pytest.fixture
async def queue(rabbitmq_url: str) -> AsyncIterator[str]:
    name = unique()
    async with RabbitMQTransport(rabbitmq_url) as admin:
        await admin.ensure_queue(name)
    yield name
    async with RabbitMQTransport(rabbitmq_url) as admin:
        await admin.delete_queue(name)


class RabbitMQBroker:
    """Stops and starts the broker application (the node stays up, so the port closes)."""

    def stop(self) -> None:
        subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        try:
            subprocess.run(
                ["rabbitmqctl", "start_app"], check=True, capture_output=True, timeout=120
            )
        finally:
            subprocess.run(
                ["rabbitmqctl", "await_startup"], check=False, capture_output=True, timeout=120
            )


@pytest.fixture
def broker() -> Iterator[RabbitMQBroker]:
    control = RabbitMQBroker()
    yield control
    # Whatever the test did, leave the broker running for everyone else.
    subprocess.run(["rabbitmqctl", "start_app"], check=False, capture_output=True, timeout=120)
    subprocess.run(["rabbitmqctl", "await_startup"], check=False, capture_output=True, timeout=120)


class TestRabbitMQContract(TransportContract):
    HAS_LEASES = False
    COUNTS_DELIVERIES = True  # quorum queues, the default, count in x-delivery-count
    MAX_DELAY_S = (rabbitmq.MAX_TIMER_MS - rabbitmq.DELAY_QUEUE_GRACE_MS) / 1000.0


# --- helpers -------------------------------------------------------------------------------


async def rabbitmqctl(*args: str, timeout: float = 120.0) -> str:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    if process.returncode != 0:
        raise AssertionError(f"rabbitmqctl {' '.join(args)} failed: {err.decode()}")
    return out.decode()


async def close_connections_named(prefix: str) -> int:
    """Close the broker connections whose name starts with `prefix`; return how many."""
    listing = await rabbitmqctl(
        "-q", "--no-table-headers", "list_connections", "pid", "client_properties"
    )
    pids = [
        line.split("\t", 1)[0]
        for line in listing.splitlines()
        if f'{{"connection_name","{prefix}' in line
    ]
    for pid in pids:
        await rabbitmqctl("close_connection", pid, "test: connection loss")
    return len(pids)


async def send_when_possible(transport: Broker, queue: str, body: bytes) -> None:
    """Send, retrying while the transport reports the broker unavailable."""
    deadline = time.monotonic() + RECOVERY_S
    while True:
        try:
            await transport.send(queue, body)
            return
        except TransportUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def broker_declares(rabbitmq_url: str, queue: str, arguments: dict[str, Any]) -> bool:
    """Whether `queue` exists with exactly these arguments: a declaration with different
    ones fails with PRECONDITION_FAILED, and a passive one tells whether it exists."""
    connection = await aio_pika.connect(rabbitmq_url)
    try:
        channel = await connection.channel()
        await channel.get_queue(queue, ensure=True)
        await channel.declare_queue(queue, durable=True, arguments=arguments)
        return True
    finally:
        await connection.close()


async def depth_is(transport: Broker, queue: str, expected: int) -> bool:
    return await transport.queue_depth(queue) == expected


# --- pure functions ------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "size"), [("", 0), ("q" * 256, 256), ("é" * 128, 256)])
def test_queue_names_rabbitmq_refuses_say_their_size_in_bytes(name: str, size: int) -> None:
    with pytest.raises(InvalidQueueName, match=rf"has {size} bytes; RabbitMQ needs 1 to 255"):
        rabbitmq.check_queue_name(name)


def test_a_255_byte_name_is_accepted() -> None:
    rabbitmq.check_queue_name("é" * 127 + "q")


@pytest.mark.parametrize(
    ("delay", "bucket_ms"),
    [
        (2.0, 2000),
        (1.234, 1200),
        (1.25, 1300),
        (0.0123, 12),
        (0.0004, 1),
        (9.96, 10000),
        (45.0, 45000),
        (3600.0, 3600000),
        (0.29, 290),
    ],
)
def test_delays_round_to_two_significant_digits(delay: float, bucket_ms: int) -> None:
    assert rabbitmq.delay_bucket_ms(delay) == bucket_ms
    assert abs(bucket_ms - delay * 1000) <= 0.05 * delay * 1000 or bucket_ms == 1


def test_delay_queue_arguments_dead_letter_to_the_target() -> None:
    assert rabbitmq.delay_queue_name("asya-ns-a", 1200) == "asya-ns-a.delay-1200ms"
    assert rabbitmq.delay_queue_arguments("asya-ns-a", 1200) == {
        "x-queue-type": "classic",
        "x-message-ttl": 1200,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "asya-ns-a",
        "x-expires": 61200,
    }
    with pytest.raises(Unsupported, match="49 days"):
        rabbitmq.delay_queue_arguments("asya-ns-a", 2**32)


@pytest.mark.parametrize(
    ("headers", "redelivered", "count"),
    [
        ({}, False, 1),  # first delivery, any queue type
        ({"x-delivery-count": 1}, True, 2),  # quorum, second delivery
        ({"x-delivery-count": 4}, True, 5),
        (None, True, None),  # classic redelivery: how many times is unknown
        ({"x-delivery-count": True}, True, None),  # not a count
    ],
)
def test_delivery_count(
    headers: dict[str, Any] | None, redelivered: bool, count: int | None
) -> None:
    assert rabbitmq.delivery_count(headers, redelivered=redelivered) == count


@pytest.mark.parametrize(
    ("unsettled", "ready", "multiple", "singles"),
    [
        ([1, 2, 3, 4], {1, 2, 3}, 3, []),  # a run from the oldest: one frame
        ([1, 2, 3, 4], {2, 3, 4}, None, [2, 3, 4]),  # 1 still running: none may cover it
        ([1, 2, 3, 4, 5], {1, 2, 4, 5}, 2, [4, 5]),
        ([7], {7}, None, [7]),  # one tag: a plain ack
        ([3, 5, 9], {3, 5, 9}, 9, []),  # gaps are tags already settled
        ([], set(), None, []),
    ],
)
def test_ack_plan_covers_only_a_run_of_ready_tags_from_the_oldest(
    unsettled: list[int], ready: set[int], multiple: int | None, singles: list[int]
) -> None:
    assert ack_plan(unsettled, ready) == (multiple, singles)


# --- configuration ---------------------------------------------------------------------------


def test_from_env_defaults() -> None:
    transport = RabbitMQTransport.from_env({})
    as_protocol: Broker = transport  # mypy checks the protocol here, isinstance below
    assert isinstance(as_protocol, Broker)
    assert transport.url == "amqp://guest:guest@127.0.0.1:5672/"
    assert transport.queue_type == "quorum"
    assert transport.name == "rabbitmq"
    assert transport.lease_seconds is None


def test_from_env_reads_url_and_queue_type() -> None:
    transport = RabbitMQTransport.from_env(
        {"ASYA_RABBITMQ_URL": "amqp://u:p@rabbit:5672/vh", "ASYA_RABBITMQ_QUEUE_TYPE": "classic"}
    )
    assert transport.url == "amqp://u:p@rabbit:5672/vh"
    assert transport.queue_type == "classic"


def test_from_env_refuses_an_unknown_queue_type() -> None:
    with pytest.raises(ValueError, match=r"ASYA_RABBITMQ_QUEUE_TYPE='stream'.*quorum.*classic"):
        RabbitMQTransport.from_env({"ASYA_RABBITMQ_QUEUE_TYPE": "stream"})


async def test_unreachable_broker_is_reported_at_start() -> None:
    transport = RabbitMQTransport("amqp://guest:guest@127.0.0.1:1/")
    with pytest.raises(TransportUnavailable, match=r"127\.0\.0\.1:1\b") as info:
        await transport.__aenter__()
    assert info.value.__cause__ is not None
    await transport.close()


# --- receiving -----------------------------------------------------------------------------


async def test_deleting_the_queue_under_a_receiver_raises_queue_not_found(
    make_transport: MakeRabbit, queue: str
) -> None:
    transport = await make_transport()
    receiver = transport.receive(queue, prefetch=1)
    await transport.send(queue, b"first")
    first = await next_delivery(receiver)
    await first.ack()

    await transport.delete_queue(queue)  # the broker cancels the consumer

    with pytest.raises(QueueNotFound, match=queue):
        await next_delivery(receiver)
    await receiver.aclose()


async def test_receiver_survives_closed_connections(
    make_transport: MakeRabbit, queue: str, rabbitmq_url: str
) -> None:
    name = unique("asya-test-conn")
    transport = await make_transport(url=f"{rabbitmq_url}?name={name}")
    receiver = transport.receive(queue, prefetch=1)
    await transport.send(queue, b"held")
    held = await next_delivery(receiver)  # handed out, never settled before the loss

    assert await close_connections_named(name) == 2  # publishing and consuming

    await send_when_possible(transport, queue, b"after")
    bodies = []
    for _ in range(2):
        delivery = await next_delivery(receiver, timeout=RECOVERY_S)
        bodies.append(delivery.body)
        await delivery.ack()
    await held.ack()  # stale: settles nothing and raises nothing

    assert sorted(bodies) == [b"after", b"held"]  # the unsettled one came back
    assert await transport.queue_depth(queue) == 0
    await receiver.aclose()


async def test_broker_restart(make_transport: MakeRabbit, queue: str) -> None:
    transport = await make_transport()
    receiver = transport.receive(queue, prefetch=1)
    await transport.send(queue, b"persisted")
    held = await next_delivery(receiver)

    try:
        await rabbitmqctl("stop_app")
        with pytest.raises(TransportUnavailable) as info:
            await asyncio.wait_for(transport.send(queue, b"during"), OUTAGE_SEND_BOUND_S)
        assert info.value.__cause__ is not None
    finally:
        await rabbitmqctl("start_app")
        await rabbitmqctl("await_startup")

    again = await next_delivery(receiver, timeout=RECOVERY_S)
    assert again.body == b"persisted"
    await held.ack()  # stale, from before the restart
    await again.ack()
    await send_when_possible(transport, queue, b"after")
    after = await next_delivery(receiver)
    assert after.body == b"after"
    await after.ack()
    await receiver.aclose()


# --- queue types ---------------------------------------------------------------------------


async def test_classic_queues_do_not_count_redeliveries(make_transport: MakeRabbit) -> None:
    transport = await make_transport(queue_type="classic")
    name = unique()
    await transport.ensure_queue(name)
    try:
        await transport.send(name, b"classic")
        receiver = transport.receive(name, prefetch=1)
        first = await next_delivery(receiver)
        assert first.delivery_count == 1
        await first.nack()
        second = await next_delivery(receiver)
        assert second.body == b"classic"
        assert second.delivery_count is None  # redelivered, but classic queues do not count
        await second.ack()
        await receiver.aclose()
    finally:
        await transport.delete_queue(name)


@pytest.mark.parametrize(("existing", "wanted"), [("quorum", "classic"), ("classic", "quorum")])
async def test_ensure_on_a_queue_of_the_other_type_explains_what_to_do(
    make_transport: MakeRabbit, existing: str, wanted: str
) -> None:
    owner = await make_transport(queue_type=existing)
    other = await make_transport(queue_type=wanted)
    name = unique()
    await owner.ensure_queue(name)
    try:
        with pytest.raises(TransportError, match=rf"{name}.*different type.*delete.*migrate"):
            await other.ensure_queue(name)
        # The channel the broker closed was replaced: the transport still works.
        await other.send(name, b"ok")
        assert await other.queue_depth(name) == 1
    finally:
        await owner.delete_queue(name)


# --- delays --------------------------------------------------------------------------------


async def test_delayed_message_waits_in_a_delay_queue(
    make_transport: MakeRabbit, queue: str, rabbitmq_url: str
) -> None:
    transport = await make_transport()
    receiver = transport.receive(queue, prefetch=1)
    delay_queue = f"{queue}.delay-1500ms"
    sent_at = time.monotonic()
    try:
        await transport.send(queue, b"later", delay=1.5)

        assert await broker_declares(
            rabbitmq_url, delay_queue, rabbitmq.delay_queue_arguments(queue, 1500)
        )
        delivery = await next_delivery(receiver)
        assert time.monotonic() - sent_at >= 1.4  # not before the delay (less clock slack)
        assert delivery.body == b"later"
        assert delivery.delivery_count == 1  # dead-lettering is not a delivery
        await delivery.ack()
    finally:
        await receiver.aclose()
        await transport.delete_queue(delay_queue)


async def test_shorter_delay_sent_later_arrives_first(
    make_transport: MakeRabbit, queue: str
) -> None:
    transport = await make_transport()
    receiver = transport.receive(queue, prefetch=2)
    try:
        await transport.send(queue, b"long", delay=3.0)
        await transport.send(queue, b"short", delay=1.0)

        first = await next_delivery(receiver)
        second = await next_delivery(receiver)

        assert [first.body, second.body] == [b"short", b"long"]
        await first.ack()
        await second.ack()
    finally:
        await receiver.aclose()
        for bucket in ("3000ms", "1000ms"):
            await transport.delete_queue(f"{queue}.delay-{bucket}")


async def test_delayed_send_to_a_missing_queue_is_refused(make_transport: MakeRabbit) -> None:
    transport = await make_transport()
    missing = unique("asya-test-missing")

    with pytest.raises(QueueNotFound, match=missing):
        await transport.send(missing, b"lost?", delay=1.0)
    with pytest.raises(QueueNotFound):  # and no delay queue was left behind
        await transport.queue_depth(f"{missing}.delay-1000ms")


@pytest.mark.parametrize("running", [0, 5, 9])
async def test_acks_sent_together_settle_those_and_only_those(
    make_transport: MakeRabbit, queue: str, running: int
) -> None:
    transport = await make_transport()
    for i in range(10):
        await transport.send(queue, f"m{i}".encode())
    receiver = transport.receive(queue, prefetch=10)
    taken = [await next_delivery(receiver) for _ in range(10)]
    assert [d.body for d in taken] == [f"m{i}".encode() for i in range(10)]

    # All but one finish in the same turn of the loop: their acks go out together (those
    # before `running` as one multiple ack) and must not settle the one still running.
    await asyncio.gather(*(d.ack() for i, d in enumerate(taken) if i != running))
    await receiver.aclose()
    await taken[running].nack()

    await eventually(lambda: depth_is(transport, queue, 1), "only the unacked one is back")
    again = transport.receive(queue, prefetch=10)
    back = await next_delivery(again)
    assert back.body == f"m{running}".encode()
    await back.ack()
    await again.aclose()
    await eventually(lambda: depth_is(transport, queue, 0), "empty once it is acked")


async def test_many_concurrent_sends_are_all_confirmed(
    make_transport: MakeRabbit, queue: str
) -> None:
    transport = await make_transport()

    await asyncio.gather(*(transport.send(queue, b"x") for _ in range(500)))

    assert await transport.queue_depth(queue) == 500
