"""The floor: a bare forwarder, the least any consumer must do to move a message from one
queue to another on the same broker. It consumes `--source`, publishes each body unchanged to
`--target`, then acks; at most `--prefetch` messages are in hand at once, as in the sidecar
(whose prefetch is its concurrency). It never parses a body.

    python -m bench.floor --transport rabbitmq|sqs|pubsub|local --source Q1 --target Q2
                          [--prefetch 16]

It runs as its own process, like a sidecar, so its CPU is measured the same way. It prints
`ready` once it is consuming, and on SIGTERM or SIGINT stops consuming, finishes what it holds
and prints `forwarded <n>`. Broker settings come from the same environment variables as
Asya's transports (ASYA_RABBITMQ_URL, ASYA_SQS_ENDPOINT + AWS_*, PUBSUB_EMULATOR_HOST +
ASYA_PUBSUB_PROJECT, ASYA_STATE_DIR), but the clients are the brokers' own SDKs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

READY = "ready"
T = TypeVar("T")

Forwarder = Callable[[str, str, int, asyncio.Event, Callable[[], None]], Awaitable[int]]


class InFlight:
    """The forwards in progress, so that stopping waits for them and no message is lost."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()
        self.done = 0
        self.failure: BaseException | None = None

    def __len__(self) -> int:
        return len(self.tasks)

    def start(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            return
        if task.exception() is not None:
            self.failure = self.failure or task.exception()
            return
        self.done += 1

    async def one_done(self) -> None:
        if self.tasks:
            await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)

    async def drain(self) -> None:
        if self.tasks:
            await asyncio.wait(self.tasks)
        if self.failure is not None:
            raise self.failure


async def until_stopped(stop: asyncio.Event, work: Awaitable[Any]) -> Any:
    """`work`'s result, or None if `stop` is set first (then `work` is cancelled)."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


async def pull_and_forward(
    stop: asyncio.Event,
    prefetch: int,
    inflight: InFlight,
    pull: Callable[[int], Awaitable[Iterable[T]]],
    forward: Callable[[T], Coroutine[Any, Any, None]],
) -> None:
    """For pull-based brokers: ask for at most the free prefetch slots, forward each message
    as its own task, until `stop`; then wait for the forwards in hand."""
    while not stop.is_set():
        free = prefetch - len(inflight)
        if free <= 0:
            await inflight.one_done()
            continue
        for message in await until_stopped(stop, pull(free)) or []:
            inflight.start(forward(message))
    await inflight.drain()


async def rabbitmq(
    source: str, target: str, prefetch: int, stop: asyncio.Event, ready: Callable[[], None]
) -> int:
    """Bare aio-pika: basic.qos = prefetch, persistent messages to the default exchange on a
    channel with publisher confirms (each publish returns once the broker stored it)."""
    import aio_pika
    from aio_pika.abc import AbstractIncomingMessage

    url = os.environ.get("ASYA_RABBITMQ_URL") or "amqp://guest:guest@127.0.0.1:5672/"
    connection = await aio_pika.connect(url)
    inflight = InFlight()
    async with connection:
        consume = await connection.channel()
        await consume.set_qos(prefetch_count=prefetch)
        publish = await connection.channel(publisher_confirms=True)
        queue = await consume.get_queue(source, ensure=True)

        async def forward(message: AbstractIncomingMessage) -> None:
            await publish.default_exchange.publish(
                aio_pika.Message(message.body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=target,
                mandatory=True,
            )
            await message.ack()

        async def on_message(message: AbstractIncomingMessage) -> None:
            inflight.start(forward(message))

        tag = await queue.consume(on_message)
        ready()
        await stop.wait()
        await queue.cancel(tag)
        await inflight.drain()
    return inflight.done


async def sqs(
    source: str, target: str, prefetch: int, stop: asyncio.Event, ready: Callable[[], None]
) -> int:
    """Bare aioboto3: long-poll ReceiveMessage for up to 10 (never more than the free prefetch
    slots), then SendMessage and DeleteMessage per message."""
    import aioboto3  # type: ignore[import-untyped]
    from aiobotocore.config import AioConfig  # type: ignore[import-untyped]

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    endpoint = os.environ.get("ASYA_SQS_ENDPOINT") or None
    # botocore's default pool is 10 connections, fewer than the forwards in flight; the
    # sidecar's transport uses 64.
    config = AioConfig(max_pool_connections=64)
    session = aioboto3.Session(region_name=region)
    inflight = InFlight()
    async with session.client("sqs", endpoint_url=endpoint, config=config) as client:
        source_url = (await client.get_queue_url(QueueName=source))["QueueUrl"]
        target_url = (await client.get_queue_url(QueueName=target))["QueueUrl"]

        async def forward(message: dict[str, Any]) -> None:
            await client.send_message(QueueUrl=target_url, MessageBody=message["Body"])
            await client.delete_message(QueueUrl=source_url, ReceiptHandle=message["ReceiptHandle"])

        async def pull(free: int) -> list[dict[str, Any]]:
            answer = await client.receive_message(
                QueueUrl=source_url, MaxNumberOfMessages=min(10, free), WaitTimeSeconds=20
            )
            messages: list[dict[str, Any]] = answer.get("Messages", [])
            return messages

        ready()
        await pull_and_forward(stop, prefetch, inflight, pull, forward)
    return inflight.done


async def pubsub(
    source: str, target: str, prefetch: int, stop: asyncio.Event, ready: Callable[[], None]
) -> int:
    """Bare gcloud-aio-pubsub: SubscriberClient.pull for up to the free prefetch slots, then
    PublisherClient.publish and SubscriberClient.acknowledge per message."""
    import aiohttp
    from gcloud.aio.pubsub import (
        PublisherClient,
        PubsubMessage,
        SubscriberClient,
        SubscriberMessage,
    )

    host = os.environ.get("PUBSUB_EMULATOR_HOST")
    project = os.environ.get("ASYA_PUBSUB_PROJECT") or os.environ.get("GOOGLE_CLOUD_PROJECT")
    if not host or not project:
        raise SystemExit("the pubsub floor needs PUBSUB_EMULATOR_HOST and ASYA_PUBSUB_PROJECT")
    root = f"http://{host}/v1"
    inflight = InFlight()
    async with aiohttp.ClientSession() as session:
        # The ignores: gcloud-aio's annotations name the `requests` Session of its sync twin.
        publisher = PublisherClient(session=session, api_root=root, api_is_dev=True)  # type: ignore[arg-type]
        subscriber = SubscriberClient(session=session, api_root=root, api_is_dev=True)  # type: ignore[arg-type]
        subscription = SubscriberClient.subscription_path(project, source)
        topic = PublisherClient.topic_path(project, target)

        async def forward(message: SubscriberMessage) -> None:
            await publisher.publish(topic, [PubsubMessage(message.data or b"")])
            await subscriber.acknowledge(subscription, [message.ack_id])

        async def pull(free: int) -> list[SubscriberMessage]:
            return await subscriber.pull(subscription, free, timeout=120)

        ready()
        await pull_and_forward(stop, prefetch, inflight, pull, forward)
    return inflight.done


async def local(
    source: str, target: str, prefetch: int, stop: asyncio.Event, ready: Callable[[], None]
) -> int:
    """The embedded transport's own receive/send/ack: there is no third-party client for its
    SQLite file, so the floor uses the same calls as the sidecar, minus everything else the
    sidecar does (no JSON, no runtime call, no routing)."""
    from asya_transports.base import Delivery
    from asya_transports.local import LocalTransport

    inflight = InFlight()
    async with LocalTransport.from_env(os.environ) as transport:
        receiver = transport.receive(source, prefetch=prefetch)

        async def forward(delivery: Delivery) -> None:
            await transport.send(target, delivery.body)
            await delivery.ack()

        async def pump() -> None:
            async for delivery in receiver:
                inflight.start(forward(delivery))

        pumping = asyncio.create_task(pump())
        ready()
        await until_stopped(stop, pumping)
        await receiver.aclose()
        await inflight.drain()
    return inflight.done


FORWARDERS: dict[str, Forwarder] = {
    "rabbitmq": rabbitmq,
    "sqs": sqs,
    "pubsub": pubsub,
    "local": local,
}


async def run(transport: str, source: str, target: str, prefetch: int) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    def announce() -> None:
        print(READY, flush=True)

    return await FORWARDERS[transport](source, target, prefetch, stop, announce)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--transport", required=True, choices=sorted(FORWARDERS))
    parser.add_argument("--source", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--prefetch", type=int, default=16)
    args = parser.parse_args(argv)
    forwarded = asyncio.run(run(args.transport, args.source, args.target, args.prefetch))
    print(f"forwarded {forwarded}", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
