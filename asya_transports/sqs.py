"""The Transport protocol on Amazon SQS (standard queues, through aioboto3).

This module is the only place that knows SQS: queue URLs, receipt handles, visibility
timeouts and redrive policies. It translates every botocore, aiobotocore and aiohttp
exception into the errors of base.py, so none of them reaches the rest of the sidecar. It
does not retry operations beyond botocore's own two retries: it raises
`TransportUnavailable` and lets the consume loop decide. Only a receiver keeps trying on its
own, with capped exponential backoff and full jitter (0.5 s to 30 s).

Endpoint and credentials. `endpoint_url` (ASYA_SQS_ENDPOINT) points the client at moto or
LocalStack; without it botocore picks the AWS endpoint of the region (and honours
AWS_ENDPOINT_URL_SQS / AWS_ENDPOINT_URL itself). Credentials come only from the normal AWS
chain: environment, shared files, IRSA or pod identity; never from Asya's configuration.

Names. Queue names of at most 80 characters (letters, digits, '-' and '_'), SQS's limit, and
so is `<queue>-dlq`: a name that does not fit is refused with InvalidQueueName before any
request, never truncated (two actors could collide).

Bodies. SQS bodies are text, and only some characters are allowed (tab, LF, CR, U+0020 to
U+D7FF, U+E000 to U+FFFD, U+10000 and up). A body that is valid UTF-8 made of those
characters travels as is. Any other body travels base64-encoded, marked with the message
attribute `asya-encoding: base64`; an empty body (SQS needs at least one character) travels
as "-" marked `asya-encoding: empty`. SQS counts a message's size as the UTF-8 bytes of the
body plus the names, types and values of its attributes; `send` checks that size against
`max_message_bytes` before any request. So text bodies fit up to the limit (1 MiB, the most
SQS accepts), binary ones only up to about three quarters of it.

Delays. SQS delays a message by at most 900 s (DelaySeconds, whole seconds, rounded up here
so a message is never early). A longer delay is sent with DelaySeconds=900 and the attribute
`asya-not-before` (Unix time in seconds, the sender's clock). A receiver that gets it earlier
does not hand it out: it hides it again with ChangeMessageVisibility for the time left (at
most 12 hours, SQS's limit), and repeats. Every such hold is a receive, and the redrive
policy moves a message to the dead-letter queue after `max_receive_count` receives, so the
longest delay is 900 + (max_receive_count - 3) * 43,200 s: 303,300 s (about 3.5 days) with the
default 10. The three receives kept back are for the delivery itself, a redelivery after a
crash or nack, and one extra short hold when the receiver's clock runs behind the sender's.
The limit also stays a day under the 14-day retention. Longer delays are refused with
Unsupported, whose message says how to raise the limit (ASYA_SQS_MAX_RECEIVE_COUNT).

Dead letters. `ensure_queue` creates `<queue>-dlq` first, then the queue with a redrive
policy to it (maxReceiveCount = `max_receive_count`), the visibility timeout `lease_seconds`
and the longest retention, 14 days, on both. If the queue already exists with other
attributes, the transport's settings win: it sets them with SetQueueAttributes and logs what
it changed (the operator corrects drift the same way). `delete_queue` deletes the queue and
keeps its dead-letter queue: dead letters are evidence, and deleting them is a decision for
a person. SQS keeps a dead letter until 14 days after it was first sent. AWS refuses to
create a queue for 60 s after one of the same name was deleted; that is reported as
TransportUnavailable.

Delivery count. `delivery_count` is SQS's ApproximateReceiveCount. For a message that
carries `asya-not-before` it is None after the first receive, since the count may include
holds.

Depth. `queue_depth` is ApproximateNumberOfMessages + ApproximateNumberOfMessagesDelayed:
messages held by a consumer (and delayed messages being held) are not counted. SQS counts
are approximate and may lag by a minute or so after a change.

Receiving. A background task long-polls (WaitTimeSeconds = `wait_seconds`) for up to 10
messages at a time, never more than the free prefetch slots, into an asyncio.Queue that
`__anext__` waits on. A long poll cannot be taken back: SQS may give messages to a request
whose client has gone, and hides them for a whole lease. So `aclose` lets the poll in flight
finish in the background and gives back whatever it brings; `close` waits for that briefly.

Settling. ack is DeleteMessage, nack ChangeMessageVisibility 0, extend ChangeMessageVisibility
(at most 12 hours). A stale receipt handle (the lease ran out and someone received the message
again) settles nothing and raises nothing; so does settling twice.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import math
import re
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, Final, NamedTuple, TypeVar
from urllib.parse import urlsplit

import aioboto3  # type: ignore[import-untyped]
import aiohttp
from aiobotocore.config import AioConfig  # type: ignore[import-untyped]
from botocore import exceptions as boto  # type: ignore[import-untyped]

from asya_shared import env, names
from asya_shared.durations import positive_duration_from_env
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

# What a message attribute looks like in SendMessage and ReceiveMessage.
Attributes = dict[str, dict[str, str]]

DEFAULT_REGION: Final = "us-east-1"
DEFAULT_LEASE_SECONDS: Final = 30.0
DEFAULT_WAIT_SECONDS: Final = 20
DEFAULT_MAX_RECEIVE_COUNT: Final = 10
# SQS's limits: 1 MiB per message (raised from 256 KiB in 2025), DelaySeconds 0..900,
# a visibility timeout of at most 12 hours, long polls of 0..20 s, 10 messages per receive,
# maxReceiveCount 1..1000, and retention of at most 14 days.
MAX_MESSAGE_BYTES: Final = 1024 * 1024
MAX_DELAY_SECONDS: Final = 900
MAX_VISIBILITY_SECONDS: Final = 43_200
MAX_WAIT_SECONDS: Final = 20
MAX_BATCH: Final = 10
MAX_RECEIVE_COUNT: Final = 1000
RETENTION_SECONDS: Final = 1_209_600
# Receives a delayed message keeps for itself after its holds (see the module docstring).
SPARE_RECEIVES: Final = 3
# A delay ends at least this long before SQS would delete the message for its age, which
# leaves a day for the delivery and its retries.
RETENTION_MARGIN_SECONDS: Final = 86_400
ENCODING: Final = "asya-encoding"
NOT_BEFORE: Final = "asya-not-before"
EMPTY_BODY: Final = "-"
# A connection attempt that takes longer than this fails; with 3 attempts in all (botocore's
# standard retries), a send while the endpoint is unreachable fails within about 15 s.
CONNECT_TIMEOUT_S: Final = 3.0
SDK_ATTEMPTS: Final = 3
# Every call but the long poll answers at once; one whose answer takes longer than this is
# lost on the way (a silent network fault), so a send fails within 3 x 15 s, not hangs.
READ_TIMEOUT_S: Final = 15.0
# A long poll holds its response for up to wait_seconds; its read may take this much longer.
# The poll is tried once: the receiver retries it with back-off and reports why meanwhile
# (Receiver.trouble, which /healthz shows), so a silent outage shows within wait + slack
# (28 s by default) instead of three such reads.
POLL_READ_SLACK_S: Final = 8.0
# Every long poll holds one pooled connection for up to wait_seconds, so sends need room
# beside them (aiobotocore's default pool has 10).
MAX_POOL_CONNECTIONS: Final = 64
# With wait_seconds=0 (short polling) an empty answer comes at once; pause before the next.
EMPTY_POLL_PAUSE_S: Final = 1.0
# How long `close` lets abandoned long polls finish so their messages can be given back.
ORPHAN_GRACE_S: Final = 2.0

# The characters SQS accepts in a body (its documented XML 1.0 subset).
_NOT_SQS_TEXT: Final = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_NAME: Final = re.compile(r"[A-Za-z0-9_-]+")
# Error codes. SQS answers its JSON protocol with the old query codes as well, and botocore
# shows one or the other depending on the protocol, so both spellings are listed.
_MISSING_QUEUE: Final = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
_QUEUE_EXISTS: Final = frozenset({"QueueAlreadyExists", "QueueNameExists"})
_DELETED_RECENTLY: Final = frozenset(
    {"AWS.SimpleQueueService.QueueDeletedRecently", "QueueDeletedRecently"}
)
_STALE_HANDLE: Final = frozenset(
    {"ReceiptHandleIsInvalid", "AWS.SimpleQueueService.MessageNotInflight", "MessageNotInflight"}
)
_BUSY: Final = frozenset(
    {"RequestThrottled", "ThrottlingException", "Throttling", "OverLimit", "ServiceUnavailable"}
)
_DENIED: Final = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidSecurity",
        "MissingAuthenticationToken",
    }
)
_CONNECTION_ERRORS: Final = (
    boto.ConnectionError,  # EndpointConnectionError, ConnectTimeoutError, proxy, SSL
    boto.HTTPClientError,  # ConnectionClosedError, ReadTimeoutError
    aiohttp.ClientError,
    OSError,  # TimeoutError among them
)
_CREDENTIAL_ERRORS: Final = (
    boto.NoCredentialsError,
    boto.PartialCredentialsError,
    boto.CredentialRetrievalError,
)
# Everything the stack raises: service answers (ClientError), botocore's own errors, and
# aiohttp's and the socket's when aiobotocore lets them through.
_SDK_ERRORS: Final = (boto.ClientError, boto.BotoCoreError, aiohttp.ClientError, OSError)


# --- Pure rules -------------------------------------------------------------------------------


def check_queue_name(queue: str) -> None:
    """Refuse a name SQS would reject; never truncate. asya_shared.names checks the length of
    the name and of its dead-letter queue's name, both against SQS's 80 characters."""
    try:
        names.check_queue_name(queue, "sqs")
    except names.InvalidName as exc:
        raise InvalidQueueName(str(exc)) from None
    if not _NAME.fullmatch(queue):
        raise InvalidQueueName(
            f"queue name {queue!r} is not a name SQS accepts: use letters, digits, '-' and '_'"
        )


def encode_body(body: bytes) -> tuple[str, Attributes]:
    """The SQS message body for `body`, and the attributes that say how to decode it."""
    if not body:
        return EMPTY_BODY, {ENCODING: _string("empty")}
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    else:
        if not _NOT_SQS_TEXT.search(text):
            return text, {}
    return base64.b64encode(body).decode("ascii"), {ENCODING: _string("base64")}


def decode_body(text: str, encoding: str | None) -> bytes:
    """The bytes a sender gave, from an SQS body and its `asya-encoding`.

    A body we cannot decode is handed out as its text, so the consumer sees it (and can put
    it aside) instead of it being dropped or retried forever.
    """
    if encoding == "empty":
        return b""
    if encoding == "base64":
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            log.warning("a message marked %s=base64 is not base64; handing out its text", ENCODING)
    elif encoding is not None:
        log.warning("unknown %s=%r; handing out the message's text", ENCODING, encoding)
    return text.encode("utf-8")


def message_size(text: str, attributes: Attributes) -> int:
    """A message's size as SQS counts it: the body, and each attribute's name, type and value."""
    size = len(text.encode("utf-8"))
    for name, value in attributes.items():
        size += len(name.encode()) + len(value["DataType"].encode())
        size += len(value.get("StringValue", "").encode())
    return size


def too_large(queue: str, *, body_size: int, sqs_size: int, limit: int) -> MessageTooLarge:
    """The error for a message whose SQS size is over `limit`, naming the caller's size."""
    error = MessageTooLarge(queue, body_size, limit)
    if sqs_size != body_size:
        error.args = (
            f"message of {body_size} bytes for queue {queue!r} takes {sqs_size} bytes on SQS "
            f"(base64 for bytes that are not SQS text, plus message attributes), which "
            f"exceeds this broker's limit of {limit} bytes",
        )
    return error


class DelayPlan(NamedTuple):
    delay_seconds: int  # SendMessage's DelaySeconds
    not_before: float | None  # for `asya-not-before`, when the delay is longer than SQS's own


def max_delay_seconds(max_receive_count: int) -> int:
    """The longest delay that leaves SPARE_RECEIVES receives after the holds."""
    holds = max(0, max_receive_count - SPARE_RECEIVES)
    by_receives = MAX_DELAY_SECONDS + holds * MAX_VISIBILITY_SECONDS
    return min(by_receives, RETENTION_SECONDS - RETENTION_MARGIN_SECONDS)


def plan_delay(delay: float, *, now: float, longest: float, max_receive_count: int) -> DelayPlan:
    """How to send a message that must stay invisible for `delay` seconds from `now`."""
    if not (delay >= 0 and math.isfinite(delay)):  # refuses NaN too
        raise ValueError(f"delay must be zero or a positive number of seconds, got {delay!r}")
    if delay > longest:
        raise Unsupported(
            f"a delay of {delay:g} s is longer than this SQS transport can keep a message: at "
            f"most {longest:g} s (about {longest / 86_400:.1f} days) with max_receive_count="
            f"{max_receive_count}. SQS delays by {MAX_DELAY_SECONDS} s at most, and each "
            f"further {MAX_VISIBILITY_SECONDS} s is a receive that counts toward moving the "
            f"message to the dead-letter queue. Raise {env.SQS_MAX_RECEIVE_COUNT} to allow "
            f"longer delays, up to {max_delay_seconds(MAX_RECEIVE_COUNT):g} s (SQS keeps a "
            f"message 14 days at most)"
        )
    if delay <= MAX_DELAY_SECONDS:
        return DelayPlan(math.ceil(delay), None)
    return DelayPlan(MAX_DELAY_SECONDS, now + delay)


def hold_seconds(not_before: float | None, *, now: float) -> int | None:
    """How long to hide a message that came before its time (1 s to 12 h), or None: hand it
    out."""
    if not_before is None or not_before <= now:
        return None
    # At least 1 s: a visibility timeout of 0 would hand it straight back, to be held again.
    return max(1, visibility_timeout(not_before - now))


def delivery_count(receive_count: int | None, *, delayed: bool) -> int | None:
    """Deliveries so far, counting this one; None when SQS does not say, or when holds of a
    delayed message may be counted in it."""
    if receive_count is None or (delayed and receive_count > 1):
        return None
    return receive_count


class Received(NamedTuple):
    """One message of a ReceiveMessage answer, decoded."""

    message_id: str
    receipt_handle: str
    body: bytes
    receive_count: int | None
    not_before: float | None


def parse_message(raw: Mapping[str, Any]) -> Received:
    """Decode one message of a ReceiveMessage answer."""
    attributes = raw.get("MessageAttributes") or {}
    encoding = attributes.get(ENCODING, {}).get("StringValue")
    count = raw.get("Attributes", {}).get("ApproximateReceiveCount")
    return Received(
        message_id=str(raw["MessageId"]),
        receipt_handle=str(raw["ReceiptHandle"]),
        body=decode_body(str(raw.get("Body", "")), encoding),
        receive_count=int(count) if isinstance(count, str) and count.isdigit() else None,
        not_before=_not_before(attributes.get(NOT_BEFORE, {}).get("StringValue")),
    )


def visibility_timeout(seconds: float) -> int:
    """Whole seconds, rounded up, within the 0 to 43,200 SQS allows."""
    return max(0, min(MAX_VISIBILITY_SECONDS, math.ceil(seconds)))


def queue_attributes(
    *, dlq_arn: str, lease_seconds: float, max_receive_count: int
) -> dict[str, str]:
    """The attributes `ensure_queue` gives a queue."""
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count}
    return {
        "RedrivePolicy": json.dumps(redrive, separators=(",", ":")),
        "VisibilityTimeout": str(visibility_timeout(lease_seconds)),
        "MessageRetentionPeriod": str(RETENTION_SECONDS),
    }


def dlq_attributes() -> dict[str, str]:
    return {"MessageRetentionPeriod": str(RETENTION_SECONDS)}


def attribute_drift(current: Mapping[str, str], wanted: Mapping[str, str]) -> dict[str, str]:
    """The wanted attributes whose current value differs (a redrive policy compared as JSON,
    since SQS writes its numbers back either as numbers or as strings)."""
    return {
        name: value
        for name, value in wanted.items()
        if _normalized(name, current.get(name)) != _normalized(name, value)
    }


def endpoint_from_env(environ: Mapping[str, str]) -> str | None:
    endpoint = (environ.get(env.SQS_ENDPOINT) or "").strip()
    if endpoint and urlsplit(endpoint).scheme not in ("http", "https"):
        raise ValueError(
            f"{env.SQS_ENDPOINT}={endpoint!r} is not an http:// or https:// URL, "
            "e.g. http://localstack:4566"
        )
    return endpoint or None


def region_from_env(environ: Mapping[str, str]) -> str:
    return (
        (environ.get("AWS_REGION") or "").strip()
        or (environ.get("AWS_DEFAULT_REGION") or "").strip()
        or DEFAULT_REGION
    )


def lease_from_env(environ: Mapping[str, str]) -> float:
    """ASYA_SQS_VISIBILITY_TIMEOUT as seconds (`30`, `90s`, `5m`): more than 0, at most 12 h."""
    return positive_duration_from_env(
        environ,
        env.SQS_VISIBILITY_TIMEOUT,
        DEFAULT_LEASE_SECONDS,
        maximum=MAX_VISIBILITY_SECONDS,
        limit=(
            "SQS's visibility timeout is more than 0 and at most "
            f"{MAX_VISIBILITY_SECONDS} seconds (12 hours)"
        ),
    )


def int_from_env(
    environ: Mapping[str, str], name: str, *, default: int, low: int, high: int, what: str
) -> int:
    raw = (environ.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ValueError(
            f"{name}={raw!r} is not a whole number from {low} to {high}, the range SQS allows "
            f"for {what}"
        )
    return value


def error_codes(exc: boto.ClientError) -> frozenset[str]:
    error = exc.response.get("Error", {})
    return frozenset(str(error.get(key, "")) for key in ("Code", "QueryErrorCode")) - {""}


def is_stale_handle(exc: boto.ClientError) -> bool:
    """Whether SQS refused a settle because the receipt handle is no longer the message's."""
    if error_codes(exc) & _STALE_HANDLE:
        return True
    # What AWS answers a ChangeMessageVisibility with an outdated handle.
    message = str(exc.response.get("Error", {}).get("Message", ""))
    return "InvalidParameterValue" in error_codes(exc) and "ReceiptHandle" in message


def translate(exc: BaseException, *, queue: str, doing: str, where: str) -> TransportError:
    """The base.py error for an exception of the AWS stack raised while `doing` `queue`."""
    if isinstance(exc, boto.ClientError):
        codes = error_codes(exc)
        error = exc.response.get("Error", {})
        detail = f"{error.get('Code', '?')}: {error.get('Message', '')}".rstrip(": ")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if codes & _MISSING_QUEUE:
            return QueueNotFound(queue, f"cannot {doing} it ({detail})")
        if codes & _DELETED_RECENTLY:
            return TransportUnavailable(
                f"cannot {doing} queue {queue!r}: SQS refuses to create a queue for 60 s after "
                f"one of the same name was deleted; try again later ({detail})"
            )
        if codes & _BUSY or status >= 500:
            return TransportUnavailable(
                f"SQS ({where}) could not {doing} queue {queue!r} now ({detail}); try again later"
            )
        if codes & _DENIED:
            return TransportError(
                f"SQS ({where}) refused to {doing} queue {queue!r} ({detail}); check the AWS "
                "credentials (environment, shared files, IRSA or pod identity) and their IAM "
                "policy"
            )
        return TransportError(f"SQS ({where}) refused to {doing} queue {queue!r}: {detail}")
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, _CREDENTIAL_ERRORS):
        return TransportError(
            f"no usable AWS credentials to {doing} queue {queue!r} ({detail}); provide them "
            "through the environment, shared files, IRSA or pod identity"
        )
    if isinstance(exc, _CONNECTION_ERRORS):
        return TransportUnavailable(
            f"cannot reach SQS ({where}) to {doing} queue {queue!r} ({detail}); try again later"
        )
    return TransportError(f"cannot {doing} queue {queue!r} on SQS ({where}): {detail}")


def _string(value: str) -> dict[str, str]:
    return {"DataType": "String", "StringValue": value}


def _not_before(raw: str | None) -> float | None:
    # A value that is not a time is not ours to interpret: hand the message out rather than
    # hide it forever.
    try:
        value = float(raw) if raw is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def _normalized(name: str, value: str | None) -> object:
    if name != "RedrivePolicy" or not value:
        return value
    try:
        policy = json.loads(value)
        return {**policy, "maxReceiveCount": int(policy["maxReceiveCount"])}
    except (ValueError, TypeError, KeyError):
        return value


@contextlib.contextmanager
def _edge(queue: str, doing: str, where: str) -> Iterator[None]:
    """Translate what the AWS stack raises inside the block into a base.py error."""
    try:
        yield
    except _SDK_ERRORS as exc:
        raise translate(exc, queue=queue, doing=doing, where=where) from exc


# --- Deliveries and receivers -----------------------------------------------------------------


class SQSDelivery(receiving.PolledDelivery):
    """A message received from SQS (implements base.Delivery)."""

    def __init__(
        self, transport: SQSTransport, receiver: SQSReceiver, url: str, message: Received
    ) -> None:
        super().__init__(
            receiver,
            body=message.body,
            delivery_count=delivery_count(
                message.receive_count, delayed=message.not_before is not None
            ),
            held=transport._held,
        )
        self.url = url
        self.message_id = message.message_id
        self.receipt_handle = message.receipt_handle
        self._transport = transport
        # Received again by this transport after its lease ran out: this handle is outdated.
        self.superseded = False

    async def extend(self, seconds: float) -> None:
        if not (seconds >= 0 and math.isfinite(seconds)):
            raise ValueError(f"extend needs zero or a positive number of seconds, got {seconds!r}")
        if self.settled or self.superseded:
            return
        await self._transport._change_visibility(self, visibility_timeout(seconds))

    async def _delete(self) -> None:
        if not self.superseded:
            await self._transport._delete(self)

    async def _return(self) -> None:
        if not self.superseded:
            await self._transport._change_visibility(self, 0)


class SQSReceiver(receiving.PollingReceiver[SQSDelivery, tuple[str, list[Received]]]):
    """Long-polls one queue into the inbox (implements base.Receiver)."""

    def __init__(self, transport: SQSTransport, queue: str, *, prefetch: int) -> None:
        super().__init__(
            queue, prefetch=prefetch, backoff=transport._backoff, receivers=transport._receivers
        )
        self._transport = transport

    async def _fetch(self, count: int) -> tuple[str, list[Received]]:
        return await self._transport._fetch(self.queue, min(MAX_BATCH, count))

    async def _accept(self, batch: tuple[str, list[Received]]) -> list[SQSDelivery]:
        """The messages that are due; the others are hidden again until they are."""
        url, messages = batch
        now = time.time()
        ready: list[SQSDelivery] = []
        for message in messages:
            hold = hold_seconds(message.not_before, now=now)
            if hold is None:
                ready.append(self._transport._track(self, url, message))
            else:
                await self._transport._hide(self.queue, url, message, hold)
        return ready

    async def _give_back(self, deliveries: list[SQSDelivery]) -> None:
        await self._transport._release(deliveries)

    def _hand_out(self, delivery: SQSDelivery) -> bool:
        if delivery.superseded:  # received again since; its newer self is in the inbox too
            delivery.mark_settled()
            return False
        return True

    async def _between_fetches(self, received: int) -> None:
        if not received and self._transport.wait_seconds == 0:
            await self._pause(EMPTY_POLL_PAUSE_S)


# --- The transport ----------------------------------------------------------------------------


class SQSTransport(ClosesOnExit):
    """A client of one SQS endpoint (implements base.Transport)."""

    name = "sqs"

    def __init__(
        self,
        *,
        endpoint_url: str | None = None,
        region: str = DEFAULT_REGION,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        wait_seconds: int = DEFAULT_WAIT_SECONDS,
        max_receive_count: int = DEFAULT_MAX_RECEIVE_COUNT,
        reconnect_initial: float = 0.5,
        reconnect_max: float = 30.0,
    ) -> None:
        if not 0 < lease_seconds <= MAX_VISIBILITY_SECONDS:
            raise ValueError(
                f"lease_seconds must be more than 0 and at most {MAX_VISIBILITY_SECONDS}, "
                f"got {lease_seconds!r}"
            )
        if not 0 < max_message_bytes <= MAX_MESSAGE_BYTES:
            raise ValueError(
                f"max_message_bytes must be from 1 to {MAX_MESSAGE_BYTES} (SQS's limit), "
                f"got {max_message_bytes!r}"
            )
        if not 0 <= wait_seconds <= MAX_WAIT_SECONDS:
            raise ValueError(
                f"wait_seconds must be from 0 to {MAX_WAIT_SECONDS}, got {wait_seconds!r}"
            )
        if not 1 <= max_receive_count <= MAX_RECEIVE_COUNT:
            raise ValueError(
                f"max_receive_count must be from 1 to {MAX_RECEIVE_COUNT}, "
                f"got {max_receive_count!r}"
            )
        self.endpoint_url = endpoint_url
        self.region = region
        # Typed as the protocol declares it (a mutable protocol attribute is invariant).
        self.lease_seconds: float | None = float(lease_seconds)
        self._lease_s = float(lease_seconds)
        self.max_message_bytes = max_message_bytes
        self.wait_seconds = wait_seconds
        self.max_receive_count = max_receive_count
        self.max_delay_seconds = max_delay_seconds(max_receive_count)
        self._backoff = receiving.Backoff(initial=reconnect_initial, cap=reconnect_max)
        self._where = endpoint_url or f"AWS in {region}"
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self._poller: Any = None  # long polls only: see POLL_READ_SLACK_S
        self._entered = False
        self._closed = False
        self._urls: dict[str, str] = {}
        self._receivers: set[SQSReceiver] = set()
        self._held: set[SQSDelivery] = set()  # received by this transport, not settled yet
        # The newest delivery of each message, to tell an outdated receipt handle: moto (unlike
        # AWS) still honours old handles, and would delete a message someone else now holds.
        self._newest: weakref.WeakValueDictionary[str, SQSDelivery] = weakref.WeakValueDictionary()

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SQSTransport:
        """Configure from ASYA_SQS_* and AWS_REGION / AWS_DEFAULT_REGION (empty means unset)."""
        return cls(
            endpoint_url=endpoint_from_env(environ),
            region=region_from_env(environ),
            lease_seconds=lease_from_env(environ),
            wait_seconds=int_from_env(
                environ,
                env.SQS_WAIT_SECONDS,
                default=DEFAULT_WAIT_SECONDS,
                low=0,
                high=MAX_WAIT_SECONDS,
                what="a long poll's WaitTimeSeconds",
            ),
            max_receive_count=int_from_env(
                environ,
                env.SQS_MAX_RECEIVE_COUNT,
                default=DEFAULT_MAX_RECEIVE_COUNT,
                low=1,
                high=MAX_RECEIVE_COUNT,
                what="a redrive policy's maxReceiveCount",
            ),
        )

    async def __aenter__(self) -> SQSTransport:
        if self._closed:
            raise TransportError("the SQS transport is closed")
        if not self._entered:
            # No request here: listing queues would need a permission sidecars do not have,
            # so a wrong endpoint or missing credentials show at the first call instead.
            calls = AioConfig(
                connect_timeout=CONNECT_TIMEOUT_S,
                read_timeout=READ_TIMEOUT_S,
                retries={"mode": "standard", "total_max_attempts": SDK_ATTEMPTS},
                max_pool_connections=MAX_POOL_CONNECTIONS,
            )
            polls = AioConfig(
                connect_timeout=CONNECT_TIMEOUT_S,
                read_timeout=self.wait_seconds + POLL_READ_SLACK_S,
                retries={"mode": "standard", "total_max_attempts": 1},
                max_pool_connections=MAX_POOL_CONNECTIONS,
            )
            session = aioboto3.Session(region_name=self.region)
            try:
                self._client = await self._stack.enter_async_context(
                    session.client("sqs", endpoint_url=self.endpoint_url, config=calls)
                )
                self._poller = await self._stack.enter_async_context(
                    session.client("sqs", endpoint_url=self.endpoint_url, config=polls)
                )
            except _SDK_ERRORS as exc:
                raise TransportError(
                    f"cannot open an SQS client ({self._where}): {str(exc) or type(exc).__name__}"
                ) from exc
            self._entered = True
        return self

    async def close(self) -> None:
        """Stop receivers, give back every unsettled delivery, close the client."""
        if self._closed:
            return
        self._closed = True
        for receiver in list(self._receivers):
            await receiver.close_within(ORPHAN_GRACE_S)
        await self._release(list(self._held))
        self._client = self._poller = None
        # Closing only releases the HTTP session; a failure leaves nothing to clean up.
        with contextlib.suppress(*_SDK_ERRORS):
            await self._stack.aclose()

    def receive(self, queue: str, *, prefetch: int) -> Receiver:
        check_queue_name(queue)
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch!r}")
        self._check_open()
        return SQSReceiver(self, queue, prefetch=prefetch)

    async def send(self, queue: str, body: bytes, *, delay: float = 0.0) -> None:
        check_queue_name(queue)
        text, attributes = encode_body(body)
        plan = plan_delay(
            delay,
            now=time.time(),
            longest=self.max_delay_seconds,
            max_receive_count=self.max_receive_count,
        )
        if plan.not_before is not None:
            attributes[NOT_BEFORE] = {
                "DataType": "Number",
                "StringValue": f"{plan.not_before:.3f}",
            }
        size = message_size(text, attributes)
        if size > self.max_message_bytes:
            raise too_large(queue, body_size=len(body), sqs_size=size, limit=self.max_message_bytes)
        self._check_open()
        options: dict[str, Any] = {"MessageBody": text, "DelaySeconds": plan.delay_seconds}
        if attributes:
            options["MessageAttributes"] = attributes
        await self._on_queue(
            queue, "send to", lambda client, url: client.send_message(QueueUrl=url, **options)
        )

    async def ensure_queue(self, queue: str) -> None:
        check_queue_name(queue)
        self._check_open()
        dlq = names.dead_letter_name(queue)
        with _edge(dlq, "create the dead-letter queue", self._where):
            dlq_url = await self._create(dlq, dlq_attributes())
            answer = await self._client.get_queue_attributes(
                QueueUrl=dlq_url, AttributeNames=["QueueArn"]
            )
        wanted = queue_attributes(
            dlq_arn=str(answer["Attributes"]["QueueArn"]),
            lease_seconds=self._lease_s,
            max_receive_count=self.max_receive_count,
        )
        with _edge(queue, "create", self._where):
            self._urls[queue] = await self._create(queue, wanted)

    async def delete_queue(self, queue: str) -> None:
        """Delete `queue` and its messages; its dead-letter queue stays (dead letters are
        evidence). AWS lets a queue of the same name be created again only after 60 s."""
        check_queue_name(queue)
        self._check_open()
        # Already gone is what was asked.
        with contextlib.suppress(QueueNotFound):
            await self._on_queue(
                queue, "delete", lambda client, url: client.delete_queue(QueueUrl=url)
            )
        self._urls.pop(queue, None)

    async def queue_depth(self, queue: str) -> int:
        """Messages waiting or delayed in `queue`; not those a consumer holds. SQS's counts are
        approximate and may lag a change by a minute or so."""
        check_queue_name(queue)
        self._check_open()
        answer = await self._on_queue(
            queue,
            "read the depth of",
            lambda client, url: client.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            ),
        )
        counts = answer.get("Attributes", {})
        return int(counts.get("ApproximateNumberOfMessages", 0)) + int(
            counts.get("ApproximateNumberOfMessagesDelayed", 0)
        )

    # Used by receivers and deliveries.

    async def _fetch(self, queue: str, count: int) -> tuple[str, list[Received]]:
        """One long poll for up to `count` messages; the queue's URL and what came."""
        lease = visibility_timeout(self._lease_s)

        async def call(client: Any, url: str) -> tuple[str, Any]:
            answer = await client.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=count,
                WaitTimeSeconds=self.wait_seconds,
                VisibilityTimeout=lease,
                # The first is the current name, the second the deprecated one that older
                # SQS-compatible servers still expect; SQS accepts both.
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
                AttributeNames=["ApproximateReceiveCount"],
                MessageAttributeNames=["All"],
            )
            return url, answer

        url, answer = await self._on_queue(queue, "receive from", call, client=self._poller)
        return url, [parse_message(raw) for raw in answer.get("Messages", [])]

    def _track(self, receiver: SQSReceiver, url: str, message: Received) -> SQSDelivery:
        delivery = SQSDelivery(self, receiver, url, message)
        previous = self._newest.get(message.message_id)
        if previous is not None:
            previous.superseded = True
        self._newest[message.message_id] = delivery
        return delivery

    async def _hide(self, queue: str, url: str, message: Received, seconds: int) -> None:
        """Keep a message that came early invisible for `seconds` more."""
        try:
            with _edge(queue, "hold a delayed message in", self._where):
                await self._client.change_message_visibility(
                    QueueUrl=url, ReceiptHandle=message.receipt_handle, VisibilityTimeout=seconds
                )
        except TransportError as exc:
            # Not lost: it comes back after one lease and is held again then (one more
            # receive toward the dead-letter threshold).
            log.warning("could not hold a delayed message in %r: %s", queue, exc)

    async def _delete(self, delivery: SQSDelivery) -> None:
        await self._settle_call(
            delivery,
            "acknowledge a message of",
            lambda: self._client.delete_message(
                QueueUrl=delivery.url, ReceiptHandle=delivery.receipt_handle
            ),
        )

    async def _change_visibility(self, delivery: SQSDelivery, seconds: int) -> None:
        await self._settle_call(
            delivery,
            "return a message to" if seconds == 0 else "extend the lease on a message of",
            lambda: self._client.change_message_visibility(
                QueueUrl=delivery.url,
                ReceiptHandle=delivery.receipt_handle,
                VisibilityTimeout=seconds,
            ),
        )

    async def _settle_call(
        self, delivery: SQSDelivery, doing: str, call: Callable[[], Awaitable[Any]]
    ) -> None:
        if self._client is None:
            # Closed: `close` gave back every unsettled delivery already.
            return
        try:
            await call()
        except boto.ClientError as exc:
            codes = error_codes(exc)
            # An outdated handle means the message is someone else's now; a missing queue
            # took the message with it. Either way there is nothing left for us to settle.
            if is_stale_handle(exc) or codes & _MISSING_QUEUE:
                return
            raise translate(exc, queue=delivery.queue, doing=doing, where=self._where) from exc
        except _SDK_ERRORS as exc:
            raise translate(exc, queue=delivery.queue, doing=doing, where=self._where) from exc

    async def _release(self, deliveries: list[SQSDelivery]) -> None:
        """Make deliveries that will not be settled visible again at once."""
        by_url: dict[str, list[str]] = {}
        for delivery in deliveries:
            if delivery.mark_settled() and not delivery.superseded:
                by_url.setdefault(delivery.url, []).append(delivery.receipt_handle)
        for url, handles in by_url.items():
            await self._release_handles(url, handles)

    async def _release_handles(self, url: str, handles: list[str]) -> None:
        for start in range(0, len(handles), MAX_BATCH):
            entries = [
                {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": 0}
                for i, handle in enumerate(handles[start : start + MAX_BATCH])
            ]
            try:
                with _edge(url.rsplit("/", 1)[-1], "return messages to", self._where):
                    await self._client.change_message_visibility_batch(
                        QueueUrl=url, Entries=entries
                    )
            except TransportError as exc:
                # Nothing is lost: each comes back when its lease runs out.
                log.warning("could not return %d message(s) at once: %s", len(entries), exc)

    async def _on_queue(
        self,
        queue: str,
        doing: str,
        call: Callable[[Any, str], Awaitable[T]],
        *,
        client: Any = None,
    ) -> T:
        """Run `call(client, url)` (the client for calls unless given another); forget the
        URL if the queue turns out to be gone."""
        try:
            url = await self._queue_url(queue, doing)
            with _edge(queue, doing, self._where):
                return await call(client or self._client, url)
        except QueueNotFound:
            self._urls.pop(queue, None)
            raise

    async def _queue_url(self, queue: str, doing: str) -> str:
        url = self._urls.get(queue)
        if url is None:
            with _edge(queue, doing, self._where):
                answer = await self._client.get_queue_url(QueueName=queue)
            url = self._urls[queue] = str(answer["QueueUrl"])
        return url

    async def _create(self, queue: str, attributes: dict[str, str]) -> str:
        """CreateQueue; if the queue exists with other attributes, set ours on it."""
        try:
            answer = await self._client.create_queue(QueueName=queue, Attributes=attributes)
            return str(answer["QueueUrl"])
        except boto.ClientError as exc:
            if not error_codes(exc) & _QUEUE_EXISTS:
                raise
        url = str((await self._client.get_queue_url(QueueName=queue))["QueueUrl"])
        current = await self._client.get_queue_attributes(
            QueueUrl=url, AttributeNames=list(attributes)
        )
        drift = attribute_drift(current.get("Attributes", {}), attributes)
        if drift:
            log.warning(
                "queue %r had other attributes than this transport sets; setting %s",
                queue,
                ", ".join(f"{name}={value}" for name, value in sorted(drift.items())),
            )
            await self._client.set_queue_attributes(QueueUrl=url, Attributes=drift)
        return url

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError("the SQS transport is closed")
        if self._client is None:
            raise TransportError("the SQS transport is not open: use it as `async with`")
