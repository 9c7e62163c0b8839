"""The Pub/Sub transport against Google's emulator: the shared contract, then what only
Pub/Sub has (dead letters, delays by holding messages back, short leases, configuration).

The emulator is shared by the whole session; every test uses its own queue names, and the
restart test always leaves the emulator running.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from asya_transports import (
    Broker,
    InvalidQueueName,
    QueueNotFound,
    TransportError,
    TransportUnavailable,
    Unsupported,
    pubsub,
)
from asya_transports.pubsub import PubSubTransport
from tests.support.services import ServiceProcess, free_port, port_open
from tests.transports.contract import (
    TransportContract,
    next_delivery,
    nothing_arrives,
)

MakePubSub = Callable[..., Awaitable[PubSubTransport]]
PROJECT = "asya-test"


def unique(prefix: str = "asya-test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def rest(emulator: ServiceProcess, method: str, path: str) -> tuple[int, dict[str, Any]]:
    """Ask the emulator's REST API directly, as an operator would look at the project."""
    url = f"http://{emulator.host}/v1/projects/{PROJECT}/{path}"
    async with aiohttp.ClientSession() as session, session.request(method, url) as answer:
        return answer.status, await answer.json(content_type=None) or {}


@pytest.fixture
async def make_transport(pubsub_emulator: ServiceProcess) -> AsyncIterator[MakePubSub]:
    made: list[PubSubTransport] = []

    async def make(**overrides: Any) -> PubSubTransport:
        overrides.setdefault("project", PROJECT)
        overrides.setdefault("emulator_host", pubsub_emulator.host)
        transport = PubSubTransport(**overrides)
        made.append(transport)
        return await transport.__aenter__()

    yield make
    for transport in made:
        await transport.close()


@pytest.fixture
async def queue(pubsub_emulator: ServiceProcess) -> AsyncIterator[str]:
    name = unique()
    async with PubSubTransport(project=PROJECT, emulator_host=pubsub_emulator.host) as admin:
        await admin.ensure_queue(name)
    yield name
    async with PubSubTransport(project=PROJECT, emulator_host=pubsub_emulator.host) as admin:
        await admin.delete_queue(name)
    # The transport keeps dead letters on purpose; a test leaves none behind.
    await rest(pubsub_emulator, "DELETE", f"subscriptions/{name}-dlq")
    await rest(pubsub_emulator, "DELETE", f"topics/{name}-dlq")


@pytest.fixture
def broker(pubsub_emulator: ServiceProcess) -> Iterator[ServiceProcess]:
    yield pubsub_emulator
    # Whatever the test did, leave the emulator running for everyone else.
    if not port_open(pubsub_emulator.port):
        pubsub_emulator.start()


class TestPubSubContract(TransportContract):
    HAS_LEASES = True
    # The emulator reports deliveryAttempt on subscriptions with a dead-letter policy.
    COUNTS_DELIVERIES = True
    # The backlog is in Cloud Monitoring only, not in the Pub/Sub API.
    COUNTS_DEPTH = False
    MAX_DELAY_S = pubsub.max_delay_seconds(pubsub.DEFAULT_MAX_DELIVERY_ATTEMPTS)


# --- pure functions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("not_before", "now", "hold"),
    [
        (None, 1000.0, None),  # not delayed
        ("999.5", 1000.0, None),  # its time has come
        ("1000.0", 1000.0, None),
        ("1002.2", 1000.0, 3),  # rounded up: never handed out early
        ("1000.01", 1000.0, 1),  # at least 1 s, or it would be pulled again at once
        ("5000.0", 1000.0, 600),  # at most Pub/Sub's longest deadline; held again later
        ("soon", 1000.0, None),  # not ours to interpret: hand it out
        ("nan", 1000.0, None),
        ("inf", 1000.0, None),
    ],
)
def test_hold_seconds(not_before: str | None, now: float, hold: int | None) -> None:
    attributes = {} if not_before is None else {pubsub.NOT_BEFORE: not_before}
    assert pubsub.hold_seconds(attributes, now=now) == hold


def test_hold_seconds_without_attributes() -> None:
    assert pubsub.hold_seconds(None, now=0.0) is None


def test_delay_attributes_carry_the_time_not_before() -> None:
    assert pubsub.delay_attributes(0.0, now=1000.0) == {}
    assert pubsub.delay_attributes(2.5, now=1000.0) == {"asya-not-before": "1002.500"}
    hold = pubsub.hold_seconds(pubsub.delay_attributes(2.5, now=1000.0), now=1000.1)
    assert hold == 3


@pytest.mark.parametrize(
    ("attempts", "limit"),
    [(5, 1200.0), (10, 4200.0), (20, 10200.0), (100, 58200.0)],
)
def test_max_delay_leaves_three_attempts_after_the_holds(attempts: int, limit: float) -> None:
    assert pubsub.max_delay_seconds(attempts) == limit
    holds = math.ceil(limit / pubsub.MAX_ACK_DEADLINE_S)
    assert attempts - holds == pubsub.SPARE_ATTEMPTS


def test_check_delay() -> None:
    pubsub.check_delay(0.0, max_delivery_attempts=10)
    pubsub.check_delay(4200.0, max_delivery_attempts=10)
    with pytest.raises(Unsupported, match=r"4201 s.*at most 4200 s.*ASYA_PUBSUB_MAX_DELIVERY"):
        pubsub.check_delay(4201.0, max_delivery_attempts=10)
    with pytest.raises(Unsupported, match="58200 s"):  # names what the maximum would give
        pubsub.check_delay(math.inf, max_delivery_attempts=10)
    for bad in (-1.0, math.nan):
        with pytest.raises(ValueError, match="delay"):
            pubsub.check_delay(bad, max_delivery_attempts=10)


@pytest.mark.parametrize(
    ("attempt", "delayed", "count"),
    [
        (1, False, 1),
        (3, False, 3),
        (1, True, 1),  # a delayed message pulled after its time, first time
        (2, True, None),  # maybe held once: the count includes holds
        (None, False, None),  # a subscription without a dead-letter policy does not count
    ],
)
def test_delivery_count(attempt: int | None, delayed: bool, count: int | None) -> None:
    assert pubsub.delivery_count(attempt, delayed=delayed) == count


@pytest.mark.parametrize(
    ("seconds", "deadline", "subscription"),
    [(0.0, 0, 10), (0.2, 1, 10), (1.0, 1, 10), (10.0, 10, 10), (60.0, 60, 60), (700.0, 600, 600)],
)
def test_deadlines_are_whole_seconds_within_pubsubs_bounds(
    seconds: float, deadline: int, subscription: int
) -> None:
    assert pubsub.deadline_seconds(seconds) == deadline
    assert pubsub.subscription_ack_deadline(seconds) == subscription


def test_subscription_body() -> None:
    assert pubsub.subscription_body(
        dead_letter_topic="projects/p/topics/q-dlq",
        ack_deadline=60,
        max_delivery_attempts=10,
        retention="2678400s",
    ) == {
        "ackDeadlineSeconds": 60,
        "messageRetentionDuration": "2678400s",
        "expirationPolicy": {},
        "deadLetterPolicy": {
            "deadLetterTopic": "projects/p/topics/q-dlq",
            "maxDeliveryAttempts": 10,
        },
    }
    body = pubsub.subscription_body(
        dead_letter_topic=None, ack_deadline=10, max_delivery_attempts=5, retention="604800s"
    )
    assert "deadLetterPolicy" not in body


@pytest.mark.parametrize("name", ["abc", "asya-prod-infer", "A.b_c~d+e%f", "q" * 255])
def test_queue_names_pubsub_accepts(name: str) -> None:
    pubsub.check_queue_name(name)


@pytest.mark.parametrize("name", ["ab", "1abc", "-abc", "goog-queue", "a b c", "q" * 256, ""])
def test_queue_names_pubsub_refuses(name: str) -> None:
    with pytest.raises(InvalidQueueName, match="3 to 255"):
        pubsub.check_queue_name(name)


def test_emulator_api_root() -> None:
    assert pubsub.emulator_api_root("127.0.0.1:8085") == "http://127.0.0.1:8085/v1"
    assert pubsub.emulator_api_root("http://emulator:8085/") == "http://emulator:8085/v1"


def _response_error(status: int, body: str) -> aiohttp.ClientResponseError:
    url = URL("http://127.0.0.1:1/v1/projects/p/topics/q:publish")
    info = aiohttp.RequestInfo(url, "POST", CIMultiDictProxy(CIMultiDict()), url)
    return aiohttp.ClientResponseError(info, (), status=status, message=f"Reason: {body}")


@pytest.mark.parametrize(
    ("exc", "kind", "text"),
    [
        (
            _response_error(404, '{"error": {"code": 404, "message": "Topic not found"}}'),
            QueueNotFound,
            "'q' does not exist: cannot send to it (Topic not found)",
        ),
        (_response_error(503, '{"error": {"message": "busy"}}'), TransportUnavailable, "busy"),
        (_response_error(429, "{}"), TransportUnavailable, "429"),
        (_response_error(403, '{"error": {"message": "denied"}}'), TransportError, "IAM roles"),
        (_response_error(400, "not json"), TransportError, "answered 400"),
        (aiohttp.ClientConnectionError("refused"), TransportUnavailable, "cannot reach"),
        (ConnectionResetError("reset"), TransportUnavailable, "reset"),
        (TimeoutError(), TransportUnavailable, "did not answer in time"),
        (Exception("no token"), TransportError, "no token"),
    ],
)
def test_translate(exc: BaseException, kind: type[TransportError], text: str) -> None:
    error = pubsub.translate(exc, queue="q", doing="send to")
    assert type(error) is kind
    assert text in str(error)


# --- configuration ---------------------------------------------------------------------------


def test_from_env_defaults() -> None:
    transport = PubSubTransport.from_env({"GOOGLE_CLOUD_PROJECT": "proj"})
    as_protocol: Broker = transport  # mypy checks the protocol here, isinstance below
    assert isinstance(as_protocol, Broker)
    assert transport.name == "pubsub"
    assert transport.project == "proj"
    assert transport.emulator_host is None
    assert transport.lease_seconds == 60.0
    assert transport.max_message_bytes == 10_000_000
    assert transport.max_delivery_attempts == 10
    assert transport.max_delay_seconds == 4200.0


def test_from_env_reads_every_setting() -> None:
    transport = PubSubTransport.from_env(
        {
            "ASYA_PUBSUB_PROJECT": "ours",
            "GOOGLE_CLOUD_PROJECT": "not-this-one",
            "PUBSUB_EMULATOR_HOST": "127.0.0.1:8085",
            "ASYA_PUBSUB_ACK_DEADLINE": "90s",
            "ASYA_PUBSUB_MAX_DELIVERY_ATTEMPTS": "100",
        }
    )
    assert transport.project == "ours"
    assert transport.emulator_host == "127.0.0.1:8085"
    assert transport.lease_seconds == 90.0
    assert transport.max_delivery_attempts == 100
    assert transport.max_delay_seconds == 58200.0


def test_from_env_needs_a_project() -> None:
    with pytest.raises(ValueError, match=r"ASYA_PUBSUB_PROJECT.*GOOGLE_CLOUD_PROJECT"):
        PubSubTransport.from_env({"ASYA_PUBSUB_PROJECT": " "})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ASYA_PUBSUB_ACK_DEADLINE", "soon"),
        ("ASYA_PUBSUB_ACK_DEADLINE", "0"),
        ("ASYA_PUBSUB_ACK_DEADLINE", "601"),
        ("ASYA_PUBSUB_ACK_DEADLINE", "11m"),
        ("ASYA_PUBSUB_MAX_DELIVERY_ATTEMPTS", "4"),
        ("ASYA_PUBSUB_MAX_DELIVERY_ATTEMPTS", "101"),
        ("ASYA_PUBSUB_MAX_DELIVERY_ATTEMPTS", "ten"),
        ("ASYA_PUBSUB_MAX_DELIVERY_ATTEMPTS", "7.5"),
    ],
)
def test_from_env_refuses_invalid_values(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=rf"{name}={value!r}"):
        PubSubTransport.from_env({"ASYA_PUBSUB_PROJECT": "p", name: value})


@pytest.mark.parametrize(
    "overrides",
    [
        {"project": ""},
        {"lease_seconds": 0.0},
        {"lease_seconds": 601.0},
        {"lease_seconds": math.nan},
        {"max_message_bytes": 0},
        {"max_delivery_attempts": 4},
        {"max_delivery_attempts": 101},
    ],
)
def test_constructor_refuses_invalid_settings(overrides: dict[str, Any]) -> None:
    settings: dict[str, Any] = {"project": "p", **overrides}
    with pytest.raises(ValueError, match=next(iter(overrides))):
        PubSubTransport(**settings)


async def test_the_endpoint_comes_from_the_configuration_not_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # gcloud-aio would otherwise switch to an emulator named in os.environ on its own.
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:1")
    transport = PubSubTransport.from_env({"ASYA_PUBSUB_PROJECT": "p"})
    await transport._open_clients()
    try:
        publisher, subscriber = transport._publisher_client(), transport._subscriber_client()
        assert publisher._api_root == subscriber._api_root == "https://pubsub.googleapis.com/v1"
        assert not publisher._api_is_dev
    finally:
        await transport.close()


def test_short_lease_is_rounded_up_to_whole_seconds() -> None:
    transport = PubSubTransport(project="p", lease_seconds=0.4)
    assert transport.lease_seconds == 1.0


# --- refusals before any I/O -----------------------------------------------------------------


async def test_refusals_need_no_connection() -> None:
    transport = PubSubTransport(project="p", max_message_bytes=10)  # never entered

    with pytest.raises(Unsupported, match="at most 4200 s"):
        await transport.send("asya-q", b"x", delay=5000)
    with pytest.raises(Unsupported, match="empty"):
        await transport.send("asya-q", b"")
    with pytest.raises(TransportError, match="3 to 255"):
        await transport.send("q", b"x")
    with pytest.raises(TransportError, match="not open"):
        await transport.send("asya-q", b"x")


async def test_a_queue_whose_dead_letter_name_is_too_long_is_refused(
    make_transport: MakePubSub,
) -> None:
    transport = await make_transport()
    with pytest.raises(TransportError, match="-dlq"):
        await transport.ensure_queue("q" * 253)


# --- the endpoint going away -----------------------------------------------------------------


async def test_unreachable_endpoint_is_reported_at_start_and_on_send() -> None:
    host = f"127.0.0.1:{free_port()}"  # nothing listens there
    transport = PubSubTransport(project=PROJECT, emulator_host=host)
    try:
        with pytest.raises(TransportUnavailable, match=host) as entering:
            await transport.__aenter__()
        assert entering.value.__cause__ is not None

        with pytest.raises(TransportUnavailable, match="asya-q") as sending:
            await asyncio.wait_for(transport.send("asya-q", b"x"), pubsub.OPERATION_TIMEOUT_S)
        assert isinstance(sending.value.__cause__, aiohttp.ClientError)
    finally:
        await transport.close()


# --- ensure, delete, depth -------------------------------------------------------------------


async def test_ensure_creates_topic_subscription_and_dead_letters(
    queue: str, pubsub_emulator: ServiceProcess
) -> None:
    for kind in ("topics", "subscriptions"):
        for name in (queue, f"{queue}-dlq"):
            status, _ = await rest(pubsub_emulator, "GET", f"{kind}/{name}")
            assert status == 200, f"{kind}/{name} is missing"

    _, subscription = await rest(pubsub_emulator, "GET", f"subscriptions/{queue}")
    assert subscription["topic"] == f"projects/{PROJECT}/topics/{queue}"
    assert subscription["ackDeadlineSeconds"] == 60
    assert subscription["deadLetterPolicy"] == {
        "deadLetterTopic": f"projects/{PROJECT}/topics/{queue}-dlq",
        "maxDeliveryAttempts": 10,
    }
    # The emulator keeps messages for 7 days at most (Pub/Sub itself for 31).
    assert subscription["messageRetentionDuration"] == pubsub.EMULATOR_RETENTION
    assert subscription["expirationPolicy"] == {}  # never deleted for being idle
    _, dead_letters = await rest(pubsub_emulator, "GET", f"subscriptions/{queue}-dlq")
    assert dead_letters["topic"] == f"projects/{PROJECT}/topics/{queue}-dlq"
    assert dead_letters["expirationPolicy"] == {}
    assert "deadLetterPolicy" not in dead_letters


async def test_a_short_lease_makes_the_shortest_subscription_deadline(
    make_transport: MakePubSub, pubsub_emulator: ServiceProcess
) -> None:
    transport = await make_transport(lease_seconds=1.0, max_delivery_attempts=5)
    name = unique()
    await transport.ensure_queue(name)
    try:
        _, subscription = await rest(pubsub_emulator, "GET", f"subscriptions/{name}")
        assert subscription["ackDeadlineSeconds"] == 10  # Pub/Sub's minimum
        assert subscription["deadLetterPolicy"]["maxDeliveryAttempts"] == 5
    finally:
        await transport.delete_queue(name)


async def test_delete_keeps_the_dead_letters(
    make_transport: MakePubSub, queue: str, pubsub_emulator: ServiceProcess
) -> None:
    transport = await make_transport()
    await transport.delete_queue(queue)

    assert (await rest(pubsub_emulator, "GET", f"topics/{queue}"))[0] == 404
    assert (await rest(pubsub_emulator, "GET", f"subscriptions/{queue}"))[0] == 404
    assert (await rest(pubsub_emulator, "GET", f"topics/{queue}-dlq"))[0] == 200
    assert (await rest(pubsub_emulator, "GET", f"subscriptions/{queue}-dlq"))[0] == 200


async def test_queue_depth_is_unsupported_and_says_where_the_backlog_is(
    make_transport: MakePubSub, queue: str
) -> None:
    transport = await make_transport()

    with pytest.raises(Unsupported, match="Cloud Monitoring"):
        await transport.queue_depth(queue)
    with pytest.raises(QueueNotFound, match="asya-test-missing"):
        await transport.queue_depth(unique("asya-test-missing"))


# --- dead letters --------------------------------------------------------------------------


async def test_a_message_nacked_max_delivery_attempts_times_becomes_a_dead_letter(
    make_transport: MakePubSub, pubsub_emulator: ServiceProcess
) -> None:
    transport = await make_transport(max_delivery_attempts=5)
    name = unique()
    await transport.ensure_queue(name)
    try:
        await transport.send(name, b"poison")
        receiver = transport.receive(name, prefetch=1)
        for attempt in range(1, 6):
            delivery = await next_delivery(receiver)
            assert delivery.delivery_count == attempt
            await delivery.nack()
        assert await nothing_arrives(receiver)
        await receiver.aclose()

        dead = await next_delivery(transport.receive(f"{name}-dlq", prefetch=1))
        assert dead.body == b"poison"
        assert dead.delivery_count is None  # the dead-letter subscription has no policy
        await dead.ack()
    finally:
        await transport.delete_queue(name)
        await rest(pubsub_emulator, "DELETE", f"subscriptions/{name}-dlq")
        await rest(pubsub_emulator, "DELETE", f"topics/{name}-dlq")


# --- delays --------------------------------------------------------------------------------


async def test_a_delayed_message_is_held_back_until_its_time(
    make_transport: MakePubSub, queue: str
) -> None:
    transport = await make_transport()
    receiver = transport.receive(queue, prefetch=1)
    sent_at = time.monotonic()

    await transport.send(queue, b"later", delay=2.5)
    await transport.send(queue, b"now")

    # A held message takes no prefetch slot: the undelayed one comes first.
    first = await next_delivery(receiver)
    assert first.body == b"now"
    await first.ack()
    later = await next_delivery(receiver)
    assert later.body == b"later"
    assert time.monotonic() - sent_at >= 2.4  # not before its time (less clock rounding)
    assert later.delivery_count is None  # it was held: Pub/Sub counted the holds
    await later.ack()
    await receiver.aclose()


async def test_a_delay_the_transport_cannot_keep_names_the_limit(
    make_transport: MakePubSub, queue: str
) -> None:
    transport = await make_transport(max_delivery_attempts=20)

    with pytest.raises(Unsupported, match=r"at most 10200 s with 20 delivery attempts"):
        await transport.send(queue, b"x", delay=10201)
    await transport.send(queue, b"x", delay=10200)  # the limit itself is fine


# --- receiving -----------------------------------------------------------------------------


async def test_a_receiver_reports_the_subscription_a_restarted_emulator_lost(
    make_transport: MakePubSub, queue: str, broker: ServiceProcess
) -> None:
    transport = await make_transport()
    receiver = transport.receive(queue, prefetch=1)
    assert await nothing_arrives(receiver, within=0.5)

    await asyncio.to_thread(broker.stop)
    await asyncio.to_thread(broker.start)  # empty: the emulator keeps nothing on disk

    # It kept pulling through the outage (backoff capped at 30 s) and then found no
    # subscription.
    with pytest.raises(QueueNotFound, match=queue):
        await next_delivery(receiver, timeout=60)
    await transport.ensure_queue(queue)
    await transport.send(queue, b"after")
    delivery = await next_delivery(receiver)  # the next call tries again
    assert delivery.body == b"after"
    await delivery.ack()
    await receiver.aclose()


async def test_close_gives_unsettled_deliveries_back_at_once(
    make_transport: MakePubSub, queue: str
) -> None:
    crashed = await make_transport()  # 60 s lease: only giving it back is quick enough
    await crashed.send(queue, b"unfinished")
    held = await next_delivery(crashed.receive(queue, prefetch=1))
    await crashed.close()
    await held.ack()  # settled by the close: a no-op that raises nothing

    other = await make_transport()
    again = await next_delivery(other.receive(queue, prefetch=1))

    assert again.body == b"unfinished"
    assert again.delivery_count == 2
    await again.ack()


async def test_extend_refuses_a_negative_time(make_transport: MakePubSub, queue: str) -> None:
    transport = await make_transport()
    await transport.send(queue, b"x")
    delivery = await next_delivery(transport.receive(queue, prefetch=1))

    with pytest.raises(ValueError, match="extend"):
        await delivery.extend(-1.0)
    await delivery.extend(700.0)  # more than Pub/Sub's 600 s: capped, not refused
    await delivery.ack()
    await delivery.extend(5.0)  # settled: nothing to extend, nothing raised
