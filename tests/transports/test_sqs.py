"""The SQS transport against moto in server mode: the shared contract, then what only SQS has
(body encoding, long delays, dead-letter queues, batches, configuration).

moto runs once per session (tests/support/services.py); the contract's recovery test kills it
and starts it again on the same port, which loses every queue it had. The `broker` fixture
always leaves it running.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aioboto3  # type: ignore[import-untyped]
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError  # type: ignore[import-untyped]
from hypothesis import given
from hypothesis import strategies as st

from asya_shared import names
from asya_transports import (
    Broker,
    InvalidQueueName,
    MessageTooLarge,
    QueueNotFound,
    TransportError,
    TransportUnavailable,
    Unsupported,
    sqs,
)
from asya_transports.sqs import SQSTransport
from tests.support.services import ServiceProcess, free_port, port_open
from tests.support.waiting import eventually
from tests.transports.contract import (
    TransportContract,
    next_delivery,
    nothing_arrives,
)

MakeSQS = Callable[..., Awaitable[SQSTransport]]


def unique(prefix: str = "asya-test") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def make_transport(
    moto_server: ServiceProcess, aws_env: dict[str, str]
) -> AsyncIterator[MakeSQS]:
    made: list[SQSTransport] = []

    async def make(**overrides: Any) -> SQSTransport:
        # A short long poll, so that closing a receiver and its transport is quick.
        options: dict[str, Any] = {"endpoint_url": moto_server.url, "wait_seconds": 1}
        transport = SQSTransport(**{**options, **overrides})
        made.append(transport)
        return await transport.__aenter__()

    yield make
    for transport in made:
        await transport.close()


@pytest.fixture
async def queue(make_transport: MakeSQS) -> str:
    name = unique()
    await (await make_transport()).ensure_queue(name)
    return name


@pytest.fixture
def broker(moto_server: ServiceProcess) -> Iterator[ServiceProcess]:
    yield moto_server
    # Whatever the test did, leave moto running for the rest of the session.
    if not port_open(moto_server.port):
        moto_server.start()


@pytest.fixture
async def raw(moto_server: ServiceProcess, aws_env: dict[str, str]) -> AsyncIterator[Any]:
    """A plain aioboto3 client of the same moto, to look behind the transport's back."""
    session = aioboto3.Session(region_name="us-east-1")
    async with session.client("sqs", endpoint_url=moto_server.url) as client:
        yield client


class TestSQSContract(TransportContract):
    HAS_LEASES = True
    COUNTS_DELIVERIES = True
    COUNTS_DEPTH = True
    MAX_DELAY_S = float(sqs.max_delay_seconds(sqs.DEFAULT_MAX_RECEIVE_COUNT))


# --- helpers -------------------------------------------------------------------------------


async def queue_attributes(raw: Any, queue: str) -> dict[str, str]:
    url = (await raw.get_queue_url(QueueName=queue))["QueueUrl"]
    answer = await raw.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
    return dict(answer["Attributes"])


async def depth_is(transport: Broker, queue: str, expected: int) -> bool:
    return await transport.queue_depth(queue) == expected


def client_error(code: str, message: str = "", status: int = 400, query: str = "") -> ClientError:
    error = {"Code": code, "Message": message}
    if query:
        error["QueryErrorCode"] = query
    return ClientError(
        {"Error": error, "ResponseMetadata": {"HTTPStatusCode": status}}, "SendMessage"
    )


# --- names ---------------------------------------------------------------------------------


def test_names_up_to_the_limit_are_accepted() -> None:
    sqs.check_queue_name("a" * 76)  # its DLQ has 80
    sqs.check_queue_name("asya-prod_orders-2")


def test_a_name_over_80_characters_is_refused_with_its_length() -> None:
    name = "asya-" + "n" * 76
    with pytest.raises(InvalidQueueName, match=rf"{name}' has 81 characters; sqs allows 80"):
        sqs.check_queue_name(name)


def test_a_name_whose_dead_letter_queue_would_be_too_long_is_refused() -> None:
    name = "q" * 77
    with pytest.raises(
        InvalidQueueName, match=rf"{name}' has 77 characters; sqs allows 80.*'{name}-dlq'"
    ):
        sqs.check_queue_name(name)


@pytest.mark.parametrize("name", ["", "asya.orders", "asya orders", "orders.fifo", "é"])
def test_characters_sqs_rejects_are_refused(name: str) -> None:
    with pytest.raises(InvalidQueueName, match="letters, digits"):
        sqs.check_queue_name(name)


async def test_bad_names_are_refused_before_any_request(aws_env: dict[str, str]) -> None:
    # Nothing listens on this port: any request would fail with TransportUnavailable.
    async with SQSTransport(endpoint_url=f"http://127.0.0.1:{free_port()}") as transport:
        for name in ["x" * 81, "x" * 78]:
            # A transport error, and still the shared vocabulary's InvalidName.
            with pytest.raises(TransportError, match=f"{len(name)}") as refused:
                await transport.send(name, b"body")
            assert isinstance(refused.value, names.InvalidName)
            with pytest.raises(InvalidQueueName):
                await transport.ensure_queue(name)
            with pytest.raises(InvalidQueueName):
                await transport.queue_depth(name)
            with pytest.raises(InvalidQueueName):
                transport.receive(name, prefetch=1)


# --- bodies --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "sent_as", "encoding"),
    [
        (b'{"a": 1}', '{"a": 1}', None),
        ("tab\t CR\r LF\n dès 日本 🌍".encode(), "tab\t CR\r LF\n dès 日本 🌍", None),
        (b"\xff\xfe", "//4=", "base64"),  # not UTF-8
        (b"a\x01b", "YQFi", "base64"),  # a control character SQS refuses
        (b"a\x00", "YQA=", "base64"),
        ("\ufffe".encode(), "77++", "base64"),  # a non-character SQS refuses
        (b"", "-", "empty"),  # SQS needs at least one character
    ],
)
def test_bodies_travel_as_text_when_sqs_accepts_them(
    body: bytes, sent_as: str, encoding: str | None
) -> None:
    text, attributes = sqs.encode_body(body)

    assert text == sent_as
    assert attributes.get(sqs.ENCODING, {}).get("StringValue") == encoding
    assert sqs.decode_body(text, encoding) == body


@given(st.binary(max_size=300) | st.text(max_size=100).map(lambda t: t.encode("utf-8", "replace")))
def test_any_body_round_trips(body: bytes) -> None:
    text, attributes = sqs.encode_body(body)
    encoding = attributes.get(sqs.ENCODING, {}).get("StringValue")
    assert text
    assert sqs.decode_body(text, encoding) == body


def test_a_body_marked_base64_that_is_not_is_handed_out_as_its_text() -> None:
    assert sqs.decode_body("not base64!", "base64") == b"not base64!"
    assert sqs.decode_body("plain", "rot13") == b"plain"


def test_message_size_counts_the_attributes_as_sqs_does() -> None:
    attributes = {sqs.ENCODING: {"DataType": "String", "StringValue": "base64"}}
    assert sqs.message_size("日本", {}) == 6
    assert sqs.message_size("abcd", attributes) == 4 + len("asya-encoding") + 6 + 6


async def test_a_binary_body_over_the_limit_once_encoded_is_refused(
    make_transport: MakeSQS, queue: str
) -> None:
    transport = await make_transport(max_message_bytes=1000)
    body = b"\xff" * 900  # fits as bytes, not as base64

    with pytest.raises(MessageTooLarge, match=r"900 bytes .* takes 1225 bytes on SQS") as info:
        await transport.send(queue, body)
    assert info.value.size == 900
    assert info.value.limit == 1000
    assert await transport.queue_depth(queue) == 0


async def test_bodies_sqs_would_refuse_round_trip(
    make_transport: MakeSQS, queue: str, raw: Any
) -> None:
    transport = await make_transport()
    bodies = [b"\x80 not utf-8", b"bell \x07", "non-character \ufffe".encode(), b"", b"\r\n\t"]
    for body in bodies:
        await transport.send(queue, body)

    receiver = transport.receive(queue, prefetch=len(bodies))
    received = [await next_delivery(receiver) for _ in bodies]

    assert sorted(d.body for d in received) == sorted(bodies)
    for delivery in received:
        await delivery.ack()
    await receiver.aclose()


async def test_what_is_on_the_wire(make_transport: MakeSQS, queue: str, raw: Any) -> None:
    transport = await make_transport()
    await transport.send(queue, b"\x00\x01")
    url = (await raw.get_queue_url(QueueName=queue))["QueueUrl"]

    answer = await raw.receive_message(QueueUrl=url, MessageAttributeNames=["All"])

    [message] = answer["Messages"]
    assert message["Body"] == base64.b64encode(b"\x00\x01").decode()
    assert message["MessageAttributes"][sqs.ENCODING]["StringValue"] == "base64"


# --- delays --------------------------------------------------------------------------------


def test_max_delay_leaves_three_receives_and_a_day_of_retention() -> None:
    assert sqs.max_delay_seconds(10) == 900 + 7 * 43_200 == 303_300
    assert sqs.max_delay_seconds(3) == 900
    assert sqs.max_delay_seconds(1) == 900  # SQS's own delay needs no receive
    assert sqs.max_delay_seconds(1000) == 13 * 86_400


@pytest.mark.parametrize(
    ("delay", "plan"),
    [
        (0.0, (0, None)),
        (0.2, (1, None)),  # rounded up: never early
        (2.0, (2, None)),
        (899.5, (900, None)),
        (900.0, (900, None)),
        (901.0, (900, 1_000_901.0)),
        (303_300.0, (900, 1_303_300.0)),
    ],
)
def test_plan_delay(delay: float, plan: tuple[int, float | None]) -> None:
    longest = sqs.max_delay_seconds(10)
    assert sqs.plan_delay(delay, now=1_000_000.0, longest=longest, max_receive_count=10) == plan


def test_a_delay_past_the_limit_says_how_to_raise_it() -> None:
    with pytest.raises(Unsupported, match=r"303300 s.*ASYA_SQS_MAX_RECEIVE_COUNT"):
        sqs.plan_delay(303_301, now=0.0, longest=303_300, max_receive_count=10)


@pytest.mark.parametrize("delay", [-1.0, math.nan, math.inf])
def test_a_delay_must_be_a_finite_positive_number(delay: float) -> None:
    with pytest.raises(ValueError, match="delay"):
        sqs.plan_delay(delay, now=0.0, longest=303_300, max_receive_count=10)


@pytest.mark.parametrize(
    ("not_before", "hold"),
    [
        (None, None),
        (99.0, None),  # past: hand it out
        (100.0, None),
        (100.2, 1),  # at least a second, rounded up
        (200.5, 101),
        (1e9, 43_200),  # at most 12 hours at a time
    ],
)
def test_hold_seconds(not_before: float | None, hold: int | None) -> None:
    assert sqs.hold_seconds(not_before, now=100.0) == hold


@pytest.mark.parametrize(
    ("receive_count", "delayed", "count"),
    [(1, False, 1), (4, False, 4), (1, True, 1), (2, True, None), (None, False, None)],
)
def test_delivery_count(receive_count: int | None, delayed: bool, count: int | None) -> None:
    assert sqs.delivery_count(receive_count, delayed=delayed) == count


def test_parse_message() -> None:
    message = sqs.parse_message(
        {
            "MessageId": "m-1",
            "ReceiptHandle": "h-1",
            "Body": "YQE=",
            "Attributes": {"ApproximateReceiveCount": "3"},
            "MessageAttributes": {
                sqs.ENCODING: {"DataType": "String", "StringValue": "base64"},
                sqs.NOT_BEFORE: {"DataType": "Number", "StringValue": "1700000000.5"},
            },
        }
    )
    assert message == sqs.Received("m-1", "h-1", b"a\x01", 3, 1_700_000_000.5)
    garbled = sqs.parse_message(
        {
            "MessageId": "m-2",
            "ReceiptHandle": "h-2",
            "Body": "x",
            "MessageAttributes": {sqs.NOT_BEFORE: {"DataType": "Number", "StringValue": "soon"}},
        }
    )
    assert garbled.not_before is None  # handed out rather than hidden forever
    assert garbled.receive_count is None


async def test_a_delay_over_900_seconds_is_accepted_and_held(
    make_transport: MakeSQS, queue: str
) -> None:
    transport = await make_transport()
    receiver = transport.receive(queue, prefetch=1)

    await transport.send(queue, b"tomorrow", delay=901)

    await eventually(lambda: depth_is(transport, queue, 1), "the delayed message counted")
    assert await nothing_arrives(receiver)
    await receiver.aclose()


async def test_a_message_is_not_handed_out_before_its_not_before_time(
    make_transport: MakeSQS, queue: str, raw: Any
) -> None:
    """What a receiver does with a long-delayed message after SQS's own 900 s have passed."""
    transport = await make_transport()
    url = (await raw.get_queue_url(QueueName=queue))["QueueUrl"]
    receiver = transport.receive(queue, prefetch=2)
    not_before = time.time() + 2.5
    await raw.send_message(
        QueueUrl=url,
        MessageBody="later",
        MessageAttributes={
            sqs.NOT_BEFORE: {"DataType": "Number", "StringValue": f"{not_before:.3f}"}
        },
    )
    await raw.send_message(
        QueueUrl=url,
        MessageBody="due",
        MessageAttributes={
            sqs.NOT_BEFORE: {"DataType": "Number", "StringValue": f"{time.time() - 5:.3f}"}
        },
    )

    due = await next_delivery(receiver)
    assert due.body == b"due"
    assert due.delivery_count == 1  # never held: its count is a plain count
    later = await next_delivery(receiver)

    assert time.time() >= not_before  # not before; how much later is not asserted
    assert later.body == b"later"
    assert later.delivery_count is None  # held at least once: the count includes the holds
    await due.ack()
    await later.ack()
    await receiver.aclose()


# --- queues --------------------------------------------------------------------------------


async def test_ensure_creates_the_dead_letter_queue_and_the_redrive_policy(
    make_transport: MakeSQS, raw: Any
) -> None:
    transport = await make_transport(lease_seconds=45, max_receive_count=7)
    name = unique()

    await transport.ensure_queue(name)

    dlq = await queue_attributes(raw, f"{name}-dlq")
    attributes = await queue_attributes(raw, name)
    assert json.loads(attributes["RedrivePolicy"]) == {
        "deadLetterTargetArn": dlq["QueueArn"],
        "maxReceiveCount": 7,
    }
    assert attributes["VisibilityTimeout"] == "45"
    assert attributes["MessageRetentionPeriod"] == "1209600"
    assert dlq["MessageRetentionPeriod"] == "1209600"


async def test_ensure_sets_its_attributes_on_a_queue_that_has_others(
    make_transport: MakeSQS, raw: Any
) -> None:
    name = unique()
    await (await make_transport(lease_seconds=30, max_receive_count=10)).ensure_queue(name)
    other = await make_transport(lease_seconds=5, max_receive_count=4)
    await other.send(name, b"kept")

    await other.ensure_queue(name)

    attributes = await queue_attributes(raw, name)
    assert attributes["VisibilityTimeout"] == "5"
    assert json.loads(attributes["RedrivePolicy"])["maxReceiveCount"] == 4
    assert await other.queue_depth(name) == 1


def test_attribute_drift_compares_redrive_policies_as_json() -> None:
    wanted = sqs.queue_attributes(dlq_arn="arn:q-dlq", lease_seconds=2.5, max_receive_count=5)
    assert wanted["VisibilityTimeout"] == "3"  # whole seconds, rounded up
    same = {
        **wanted,
        "RedrivePolicy": '{"maxReceiveCount": "5", "deadLetterTargetArn": "arn:q-dlq"}',
    }
    assert sqs.attribute_drift(same, wanted) == {}
    changed = {**same, "VisibilityTimeout": "30"}
    assert sqs.attribute_drift(changed, wanted) == {"VisibilityTimeout": "3"}
    assert set(sqs.attribute_drift({}, wanted)) == set(wanted)


async def test_delete_keeps_the_dead_letter_queue(make_transport: MakeSQS, queue: str) -> None:
    transport = await make_transport()

    await transport.delete_queue(queue)

    with pytest.raises(QueueNotFound, match=queue):
        await transport.queue_depth(queue)
    assert await transport.queue_depth(f"{queue}-dlq") == 0


async def test_a_message_received_max_receive_count_times_lands_in_the_dead_letter_queue(
    make_transport: MakeSQS,
) -> None:
    transport = await make_transport(max_receive_count=2, lease_seconds=1)
    name = unique()
    await transport.ensure_queue(name)
    await transport.send(name, b"poison")
    receiver = transport.receive(name, prefetch=1)

    for count in (1, 2):
        delivery = await next_delivery(receiver)
        assert delivery.delivery_count == count
        await delivery.nack()

    await eventually(lambda: depth_is(transport, f"{name}-dlq", 1), "the dead letter")
    assert await nothing_arrives(receiver)
    await receiver.aclose()
    assert await transport.queue_depth(name) == 0
    dead = await next_delivery(transport.receive(f"{name}-dlq", prefetch=1))
    assert dead.body == b"poison"


async def test_depth_counts_delayed_messages(make_transport: MakeSQS, queue: str) -> None:
    transport = await make_transport()
    await transport.send(queue, b"now")
    await transport.send(queue, b"later", delay=60)

    await eventually(lambda: depth_is(transport, queue, 2), "depth 2")


# --- receiving -----------------------------------------------------------------------------


async def test_delivery_count_is_the_approximate_receive_count(
    make_transport: MakeSQS, queue: str
) -> None:
    transport = await make_transport()
    await transport.send(queue, b"again and again")
    receiver = transport.receive(queue, prefetch=1)

    counts = []
    for _ in range(3):
        delivery = await next_delivery(receiver)
        counts.append(delivery.delivery_count)
        await delivery.nack()

    assert counts == [1, 2, 3]
    await receiver.aclose()


async def test_receives_are_batched_up_to_the_free_prefetch(
    make_transport: MakeSQS, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    transport = await make_transport()
    for i in range(12):
        await transport.send(queue, f"b{i}".encode())
    calls: list[tuple[int, int]] = []  # (asked for, got)
    receive_message = transport._poller.receive_message

    async def spy(**kwargs: Any) -> Any:
        answer = await receive_message(**kwargs)
        calls.append((kwargs["MaxNumberOfMessages"], len(answer.get("Messages", []))))
        return answer

    monkeypatch.setattr(transport._poller, "receive_message", spy)
    receiver = transport.receive(queue, prefetch=10)

    batch = [await next_delivery(receiver) for _ in range(10)]

    assert calls[0] == (10, 10)  # all ten in one call
    await batch[0].ack()
    await batch[1].ack()
    more = [await next_delivery(receiver) for _ in range(2)]
    assert all(asked <= 2 for asked, _ in calls[1:])  # never more than the free slots
    for delivery in [*batch[2:], *more]:
        await delivery.ack()
    await receiver.aclose()


async def test_an_outdated_handle_settles_nothing(make_transport: MakeSQS, queue: str) -> None:
    """moto honours old receipt handles (AWS does not); the transport must not use them."""
    transport = await make_transport(lease_seconds=1)
    await transport.send(queue, b"twice")
    receiver = transport.receive(queue, prefetch=2)
    first = await next_delivery(receiver)
    second = await next_delivery(receiver)  # after the 1 s lease ran out
    assert second.delivery_count == 2

    await first.ack()  # outdated: must not delete the message `second` holds
    await first.extend(30)
    await second.nack()

    await eventually(lambda: depth_is(transport, queue, 1), "the message still there")
    await receiver.aclose()


# --- the endpoint ----------------------------------------------------------------------------


async def test_send_to_an_unreachable_endpoint_fails_promptly(aws_env: dict[str, str]) -> None:
    async with SQSTransport(endpoint_url=f"http://127.0.0.1:{free_port()}") as transport:
        with pytest.raises(TransportUnavailable, match=r"127\.0\.0\.1") as info:
            await asyncio.wait_for(transport.send("asya-test-q", b"x"), 20)
    assert info.value.__cause__ is not None


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (
            client_error("AWS.SimpleQueueService.NonExistentQueue", query="QueueDoesNotExist"),
            QueueNotFound,
        ),
        (client_error("QueueDoesNotExist"), QueueNotFound),
        (client_error("RequestThrottled"), TransportUnavailable),
        (client_error("InternalError", status=500), TransportUnavailable),
        (client_error("AWS.SimpleQueueService.QueueDeletedRecently"), TransportUnavailable),
        (client_error("InvalidClientTokenId", status=403), TransportError),
        (EndpointConnectionError(endpoint_url="http://x"), TransportUnavailable),
        (TimeoutError(), TransportUnavailable),
    ],
)
def test_translate(error: Exception, kind: type[TransportError]) -> None:
    translated = sqs.translate(error, queue="asya-q", doing="send to", where="moto")
    assert type(translated) is kind
    assert "asya-q" in str(translated)


def test_credential_problems_say_where_credentials_come_from() -> None:
    translated = sqs.translate(
        client_error("InvalidClientTokenId", status=403), queue="q", doing="send to", where="m"
    )
    assert "credentials" in str(translated)


@pytest.mark.parametrize(
    ("error", "stale"),
    [
        (client_error("ReceiptHandleIsInvalid"), True),
        (client_error("AWS.SimpleQueueService.MessageNotInflight"), True),
        (
            client_error("InvalidParameterValue", "Value x for parameter ReceiptHandle is invalid"),
            True,
        ),
        (
            client_error("InvalidParameterValue", "Total VisibilityTimeout is beyond the limit"),
            False,
        ),
        (client_error("AccessDenied"), False),
    ],
)
def test_stale_handles(error: ClientError, stale: bool) -> None:
    assert sqs.is_stale_handle(error) is stale


def test_visibility_timeout_is_whole_seconds_up_to_12_hours() -> None:
    assert sqs.visibility_timeout(0) == 0
    assert sqs.visibility_timeout(0.1) == 1
    assert sqs.visibility_timeout(30) == 30
    assert sqs.visibility_timeout(1e9) == 43_200


# --- configuration -------------------------------------------------------------------------


def test_from_env_defaults() -> None:
    transport = SQSTransport.from_env({})
    as_protocol: Broker = transport  # mypy checks the protocol here, isinstance below
    assert isinstance(as_protocol, Broker)
    assert transport.name == "sqs"
    assert transport.endpoint_url is None
    assert transport.region == "us-east-1"
    assert transport.lease_seconds == 30.0
    assert transport.wait_seconds == 20
    assert transport.max_receive_count == 10
    assert transport.max_message_bytes == 1024 * 1024
    assert transport.max_delay_seconds == 303_300


def test_from_env_reads_its_variables() -> None:
    transport = SQSTransport.from_env(
        {
            "ASYA_SQS_ENDPOINT": "http://localstack:4566",
            "AWS_DEFAULT_REGION": "eu-west-1",
            "ASYA_SQS_VISIBILITY_TIMEOUT": "2m",
            "ASYA_SQS_WAIT_SECONDS": "0",
            "ASYA_SQS_MAX_RECEIVE_COUNT": "5",
        }
    )
    assert transport.endpoint_url == "http://localstack:4566"
    assert transport.region == "eu-west-1"
    assert transport.lease_seconds == 120.0
    assert transport.wait_seconds == 0
    assert transport.max_receive_count == 5
    assert transport.max_delay_seconds == 900 + 2 * 43_200


def test_aws_region_wins_over_the_default_region() -> None:
    environ = {"AWS_REGION": "ap-south-1", "AWS_DEFAULT_REGION": "eu-west-1"}
    assert SQSTransport.from_env(environ).region == "ap-south-1"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ASYA_SQS_ENDPOINT", "localstack:4566"),
        ("ASYA_SQS_VISIBILITY_TIMEOUT", "soon"),
        ("ASYA_SQS_VISIBILITY_TIMEOUT", "0"),
        ("ASYA_SQS_VISIBILITY_TIMEOUT", "13h"),
        ("ASYA_SQS_WAIT_SECONDS", "21"),
        ("ASYA_SQS_WAIT_SECONDS", "1.5"),
        ("ASYA_SQS_MAX_RECEIVE_COUNT", "0"),
        ("ASYA_SQS_MAX_RECEIVE_COUNT", "1001"),
        ("ASYA_SQS_MAX_RECEIVE_COUNT", "ten"),
    ],
)
def test_from_env_refuses_bad_values_naming_them(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=rf"{name}='{value}'"):
        SQSTransport.from_env({name: value})
