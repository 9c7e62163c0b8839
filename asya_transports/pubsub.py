"""The Transport protocol on Google Cloud Pub/Sub (the REST API, through gcloud-aio-pubsub).

This module is the only place that knows Pub/Sub: topics, subscriptions, ack ids and ack
deadlines. It translates every aiohttp and gcloud-aio exception into the errors of base.py,
so none of them reaches the rest of the sidecar. It does not retry operations that fail: it
raises `TransportUnavailable` and lets the consume loop decide. Only a receiver keeps trying
on its own, with capped exponential backoff and full jitter (0.5 s to 30 s).

Endpoint. With `emulator_host` (from PUBSUB_EMULATOR_HOST) every call goes to
`http://<host>/v1` over plain HTTP without credentials. That root is handed to the clients
explicitly instead of setting PUBSUB_EMULATOR_HOST in os.environ, which would redirect every
Google client in the process; and without an emulator the public endpoint is named
explicitly too, so a stray PUBSUB_EMULATOR_HOST in the process environment is never picked
up behind the configuration's back. Credentials come only from the environment, through
gcloud-aio-auth: GOOGLE_APPLICATION_CREDENTIALS, gcloud's application default credentials,
or the metadata server (workload identity on GKE).

Names. A queue is a topic and a subscription, both named after it
(`projects/<p>/topics/<queue>`, `projects/<p>/subscriptions/<queue>`). `send` publishes
to the topic, receivers pull from the subscription. Subscriptions never expire (Pub/Sub would
delete one after 31 days without a subscriber, an actor scaled to zero for a month).
`ensure_queue` never changes what already exists (ack deadline, dead-letter policy): it only
creates what is missing.

Leases. The subscription's ack deadline is `lease_seconds`, within the 10 to 600 seconds
Pub/Sub allows. A shorter lease (tests use 1 s) cannot be a subscription setting, so each
pulled message gets its deadline set with modifyAckDeadline (which accepts 0 to 600) before
it is handed out. Leases are whole seconds, rounded up. A delivery from a subscription that
was created with another lease (10 s or more) keeps that subscription's deadline.

Delays. Pub/Sub has no per-message delay. A delayed message carries the attribute
`asya-not-before` (Unix time in seconds, the sender's clock). A receiver that pulls it
earlier does not hand it out: it sets the message's ack deadline to the time left (at least
1 s, at most 600 s, rounded up), so Pub/Sub delivers it again then, and repeats for longer
delays. Every such hold is a delivery attempt, and the dead-letter policy moves a message on
after `max_delivery_attempts`, so the longest delay is (max_delivery_attempts - 3) * 600 s:
4,200 s with the default 10 attempts, 58,200 s (about 16 hours) with Pub/Sub's maximum of 100
(ASYA_PUBSUB_MAX_DELIVERY_ATTEMPTS). The three attempts kept back are for the delivery itself,
a redelivery after a crash or nack, and one extra short hold when the receiver's clock runs
behind the sender's. Longer delays are refused with Unsupported. While a message is held it
is not in anyone's prefetch. Pub/Sub refuses a message without data, so an empty body is
refused with Unsupported too.

Dead letters. Each subscription has a dead-letter policy that moves a message to the topic
`<queue>-dlq` after `max_delivery_attempts` deliveries; that topic has its own subscription
`<queue>-dlq` so the dead letters are kept (a topic without a subscription drops what it is
sent). `delete_queue` keeps both: dead letters are evidence, and deleting them is a decision
for a person. On Google Cloud the Pub/Sub service agent needs the publisher role on the
dead-letter topic and the subscriber role on the subscription, or nothing is forwarded.
Messages are retained for 31 days, the longest Pub/Sub allows (beyond 24 hours Google charges
for storage); the emulator allows only 7 days, and we settle for that when it refuses.

Delivery count. Pub/Sub counts deliveries (`deliveryAttempt`) only on subscriptions with a
dead-letter policy, which ours have; the emulator counts them too. Elsewhere the count is
None. A delayed message that may have been held reports None: its count includes the holds.

Depth. Pub/Sub's API does not say how many messages wait in a subscription; the backlog
(`num_undelivered_messages`, `oldest_unacked_message_age`) is published only to Cloud
Monitoring, which is where KEDA's gcp-pubsub scaler reads it. `queue_depth` raises
Unsupported.

Pulling. Receivers use synchronous pull, which the server holds open (about 90 s on the
emulator) until a message comes. A pull cannot be taken back: the server may hand messages to
a pull whose client has gone, and they come back only after their ack deadline (the emulator
does exactly this). So `aclose` does not abort the pull in flight; it lets it finish and
gives back whatever it brings. Only `close` aborts pulls, at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Iterator, Mapping
from typing import Any, Final, TypeVar

import aiohttp
from gcloud.aio.auth import Token
from gcloud.aio.pubsub import PublisherClient, PubsubMessage, SubscriberClient, SubscriberMessage

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

API_ROOT: Final = "https://pubsub.googleapis.com/v1"
SCOPES: Final = ["https://www.googleapis.com/auth/pubsub"]
DEFAULT_LEASE_SECONDS: Final = 60.0
# 10 MB is Pub/Sub's limit for one message.
DEFAULT_MAX_MESSAGE_BYTES: Final = 10_000_000
DEFAULT_MAX_DELIVERY_ATTEMPTS: Final = 10
# Pub/Sub's bounds: a subscription's ack deadline is 10..600 s, a modifyAckDeadline 0..600 s,
# a dead-letter policy's maxDeliveryAttempts 5..100, and one pull returns at most 1,000.
MIN_ACK_DEADLINE_S: Final = 10
MAX_ACK_DEADLINE_S: Final = 600
MIN_DELIVERY_ATTEMPTS: Final = 5
MAX_DELIVERY_ATTEMPTS: Final = 100
MAX_PULL_MESSAGES: Final = 1000
# Attempts a delayed message keeps for itself after its holds (see the module docstring).
SPARE_ATTEMPTS: Final = 3
LONGEST_RETENTION: Final = "2678400s"  # 31 days, the most Pub/Sub keeps unacked messages
EMULATOR_RETENTION: Final = "604800s"  # 7 days: the emulator's maximum, and the default
NOT_BEFORE: Final = "asya-not-before"
# Bound on one call (publish, create, ack...), token refresh included: a send while the
# endpoint is unreachable fails within this.
OPERATION_TIMEOUT_S: Final = 30
# The emulator holds an empty pull for about 90 s; a client that gave up sooner would leave
# the server a pull to hand messages to that nobody reads.
PULL_TIMEOUT_S: Final = 120
# So a pull held that long cannot tell a quiet subscription from a network that drops every
# packet. Once one has waited PROBE_AFTER_S, the receiver asks the server something small
# (and again every PROBE_AFTER_S): any answer, even a refusal, means it is reachable; no
# answer within PROBE_TIMEOUT_S sets Receiver.trouble (/healthz) until one comes. A silent
# outage thus shows within about 30 s, as a send's timeout shows it.
PROBE_AFTER_S: Final = 20.0
PROBE_TIMEOUT_S: Final = 10
# Topic and subscription names: 3 to 255 characters, starting with a letter.
_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}")


# --- Pure rules -------------------------------------------------------------------------------


def check_queue_name(queue: str) -> None:
    if not _NAME.fullmatch(queue) or queue.startswith("goog"):
        raise InvalidQueueName(
            f"queue name {queue!r} cannot name a Pub/Sub topic and subscription: use 3 to 255 "
            "letters, digits and - _ . ~ + %, starting with a letter and not with 'goog'"
        )


def max_delay_seconds(max_delivery_attempts: int) -> float:
    """The longest delay that leaves SPARE_ATTEMPTS attempts after the holds."""
    return float((max_delivery_attempts - SPARE_ATTEMPTS) * MAX_ACK_DEADLINE_S)


def check_delay(delay: float, *, max_delivery_attempts: int) -> None:
    if not delay >= 0:  # also refuses NaN
        raise ValueError(f"delay must be zero or a positive number of seconds, got {delay!r}")
    limit = max_delay_seconds(max_delivery_attempts)
    if delay > limit:
        raise Unsupported(
            f"a delay of {delay:g} s is longer than Pub/Sub can hold a message here: at most "
            f"{limit:g} s with {max_delivery_attempts} delivery attempts, since each hold of up "
            f"to {MAX_ACK_DEADLINE_S} s is a delivery attempt. Raise "
            f"{env.PUBSUB_MAX_DELIVERY_ATTEMPTS} (at most {MAX_DELIVERY_ATTEMPTS}, for "
            f"{max_delay_seconds(MAX_DELIVERY_ATTEMPTS):g} s); an existing subscription keeps "
            "its dead-letter policy until that is updated to match"
        )


def delay_attributes(delay: float, *, now: float) -> dict[str, str]:
    """The attributes that keep a message from being handed out before `now + delay`."""
    if delay <= 0:
        return {}
    return {NOT_BEFORE: f"{now + delay:.3f}"}


def hold_seconds(attributes: Mapping[str, Any] | None, *, now: float) -> int | None:
    """How long to hide a message that came before its time (1..600 s), or None: hand it out.

    A value that is not a time is not ours to interpret: the message is handed out rather
    than hidden forever.
    """
    raw = (attributes or {}).get(NOT_BEFORE)
    if not isinstance(raw, str):
        return None
    try:
        not_before = float(raw)
    except ValueError:
        return None
    remaining = not_before - now
    if not remaining > 0 or math.isinf(remaining):
        return None
    # At least 1 s: a deadline of 0 would hand it straight back, to be pulled and held again.
    return max(1, deadline_seconds(remaining))


def delivery_count(delivery_attempt: int | None, *, delayed: bool) -> int | None:
    """Deliveries so far, counting this one; None when Pub/Sub does not say, or when holds of
    a delayed message may be counted in it."""
    if not isinstance(delivery_attempt, int) or isinstance(delivery_attempt, bool):
        return None
    if delayed and delivery_attempt > 1:
        return None
    return delivery_attempt


def deadline_seconds(seconds: float) -> int:
    """An ack deadline for modifyAckDeadline: whole seconds, rounded up, within 0..600."""
    return max(0, min(MAX_ACK_DEADLINE_S, math.ceil(seconds)))


def subscription_ack_deadline(lease: float) -> int:
    """The subscription's ack deadline for a lease: whole seconds within 10..600."""
    return max(MIN_ACK_DEADLINE_S, deadline_seconds(lease))


def subscription_body(
    *, dead_letter_topic: str | None, ack_deadline: int, max_delivery_attempts: int, retention: str
) -> dict[str, Any]:
    """What `create_subscription` sends besides the topic."""
    body: dict[str, Any] = {
        "ackDeadlineSeconds": ack_deadline,
        "messageRetentionDuration": retention,
        # An empty policy never expires. Without one, Pub/Sub deletes a subscription after
        # 31 days without a subscriber: an actor scaled to zero, or dead letters kept.
        "expirationPolicy": {},
    }
    if dead_letter_topic is not None:
        body["deadLetterPolicy"] = {
            "deadLetterTopic": dead_letter_topic,
            "maxDeliveryAttempts": max_delivery_attempts,
        }
    return body


def emulator_api_root(host: str) -> str:
    """The REST root of an emulator at `host` (`127.0.0.1:8085`, as PUBSUB_EMULATOR_HOST)."""
    host = host.strip().rstrip("/")
    return f"{host}/v1" if "://" in host else f"http://{host}/v1"


def project_from_env(environ: Mapping[str, str]) -> str:
    project = (
        environ.get(env.PUBSUB_PROJECT) or environ.get(env.GOOGLE_CLOUD_PROJECT) or ""
    ).strip()
    if not project:
        raise ValueError(
            f"the pubsub transport needs a Google Cloud project: set {env.PUBSUB_PROJECT} "
            f"(or {env.GOOGLE_CLOUD_PROJECT})"
        )
    return project


def lease_from_env(environ: Mapping[str, str]) -> float:
    """ASYA_PUBSUB_ACK_DEADLINE as seconds (`60`, `90s`, `5m`): more than 0, at most 600."""
    return positive_duration_from_env(
        environ,
        env.PUBSUB_ACK_DEADLINE,
        DEFAULT_LEASE_SECONDS,
        maximum=MAX_ACK_DEADLINE_S,
        limit=f"Pub/Sub's ack deadline is more than 0 and at most {MAX_ACK_DEADLINE_S} seconds",
    )


def max_delivery_attempts_from_env(environ: Mapping[str, str]) -> int:
    raw = (environ.get(env.PUBSUB_MAX_DELIVERY_ATTEMPTS) or "").strip()
    if not raw:
        return DEFAULT_MAX_DELIVERY_ATTEMPTS
    try:
        attempts = int(raw)
    except ValueError:
        attempts = 0
    if not MIN_DELIVERY_ATTEMPTS <= attempts <= MAX_DELIVERY_ATTEMPTS:
        raise ValueError(
            f"{env.PUBSUB_MAX_DELIVERY_ATTEMPTS}={raw!r} is not a whole number from "
            f"{MIN_DELIVERY_ATTEMPTS} to {MAX_DELIVERY_ATTEMPTS}, the range Pub/Sub's "
            "dead-letter policy allows"
        )
    return attempts


def google_message(text: str) -> str:
    """The `error.message` of a Google error body inside aiohttp's message, else the text."""
    _, _, body = text.partition(": ")
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return text[:500]
    return str(message)


def translate(exc: BaseException, *, queue: str, doing: str) -> TransportError:
    """The base.py error for an exception of aiohttp or gcloud-aio raised while `doing`."""
    if isinstance(exc, aiohttp.ClientResponseError):
        status, detail = exc.status, google_message(exc.message)
        if status == 404:
            return QueueNotFound(queue, f"cannot {doing} it ({detail})")
        if status in (401, 403):
            return TransportError(
                f"Pub/Sub refused to {doing} queue {queue!r} ({status}: {detail}); check the "
                "credentials (workload identity or GOOGLE_APPLICATION_CREDENTIALS) and their "
                "IAM roles on the topic and subscription"
            )
        if status in (408, 429) or status >= 500:
            return TransportUnavailable(
                f"Pub/Sub could not {doing} queue {queue!r} now ({status}: {detail}); "
                "try again later"
            )
        return TransportError(
            f"cannot {doing} queue {queue!r}: Pub/Sub answered {status} ({detail})"
        )
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError):
        return TransportUnavailable(
            f"Pub/Sub did not answer in time while trying to {doing} queue {queue!r}; "
            "try again later"
        )
    if isinstance(exc, aiohttp.ClientError | OSError):
        return TransportUnavailable(
            f"cannot reach Pub/Sub to {doing} queue {queue!r} ({detail}); try again later"
        )
    return TransportError(f"cannot {doing} queue {queue!r}: {exc!r}")


@contextlib.contextmanager
def _edge(queue: str, doing: str) -> Iterator[None]:
    """Translate what the Pub/Sub stack raises inside the block into a base.py error."""
    try:
        yield
    except TransportError:
        raise
    # Everything: besides aiohttp's errors, gcloud-aio-auth raises bare Exceptions (and
    # ValueErrors, KeyErrors) when it cannot get a token, and none may leave this module.
    except Exception as exc:
        raise translate(exc, queue=queue, doing=doing) from exc


async def _within(call: Awaitable[T], timeout: float) -> T:
    async with asyncio.timeout(timeout):
        return await call


# --- Deliveries and receivers -----------------------------------------------------------------


class PubSubDelivery(receiving.PolledDelivery):
    """A message pulled from a subscription (implements base.Delivery).

    Its ack id names this delivery only: once the deadline passed and Pub/Sub delivered the
    message again, acking or nacking it changes nothing, and raises nothing.
    """

    def __init__(
        self, transport: PubSubTransport, receiver: PubSubReceiver, message: SubscriberMessage
    ) -> None:
        delayed = NOT_BEFORE in (message.attributes or {})
        super().__init__(
            receiver,
            body=message.data or b"",
            delivery_count=delivery_count(message.delivery_attempt, delayed=delayed),
            held=transport._held,
        )
        self.ack_id = message.ack_id
        self._transport = transport

    async def extend(self, seconds: float) -> None:
        """Set the deadline to `seconds` from now (whole seconds, at most Pub/Sub's 600)."""
        if not seconds >= 0:
            raise ValueError(f"extend needs zero or a positive number of seconds, got {seconds!r}")
        if self.settled:
            return
        await self._transport._set_deadline(self.queue, [self.ack_id], deadline_seconds(seconds))

    async def _delete(self) -> None:
        await self._transport._acknowledge(self.queue, [self.ack_id])

    async def _return(self) -> None:
        await self._transport._release([self])


class PubSubReceiver(receiving.PollingReceiver[PubSubDelivery, list[SubscriberMessage]]):
    """Pulls from one subscription into the inbox (implements base.Receiver).

    It asks for no more messages than there are free prefetch slots. If the subscription does
    not exist (deleted, or an emulator that restarted without its state), `__anext__` raises
    QueueNotFound and the next call tries again.
    """

    def __init__(self, transport: PubSubTransport, queue: str, *, prefetch: int) -> None:
        super().__init__(
            queue, prefetch=prefetch, backoff=transport._backoff, receivers=transport._receivers
        )
        self._transport = transport

    async def _fetch(self, count: int) -> list[SubscriberMessage]:
        pull = asyncio.ensure_future(self._transport._pull(self.queue, count))
        try:
            while True:
                done, _ = await asyncio.wait([pull], timeout=PROBE_AFTER_S)
                if done:
                    return pull.result()
                self.trouble = await self._transport._unreachable(self.queue)
        except asyncio.CancelledError:
            pull.cancel()
            raise

    async def _accept(self, batch: list[SubscriberMessage]) -> list[PubSubDelivery]:
        """The messages that are due, with this transport's lease; the others are held back
        until their time."""
        transport = self._transport
        now = time.time()
        ready: list[PubSubDelivery] = []
        holds: dict[int, list[str]] = {}
        for message in batch:
            hold = hold_seconds(message.attributes, now=now)
            if hold is None:
                ready.append(PubSubDelivery(transport, self, message))
            else:
                holds.setdefault(hold, []).append(message.ack_id)
        for seconds, ack_ids in holds.items():
            # Too early: hidden again until its time.
            try:
                await transport._set_deadline(self.queue, ack_ids, seconds)
            except TransportError as exc:
                log.warning(
                    "could not hold back %d delayed message(s) of %r; they come back after "
                    "the subscription's ack deadline and are held then: %s",
                    len(ack_ids),
                    self.queue,
                    exc,
                )
        if ready and transport._per_message_deadline is not None:
            # Set before handing out, or a late answer could cut short an extend().
            try:
                await transport._set_deadline(
                    self.queue, [d.ack_id for d in ready], transport._per_message_deadline
                )
            except TransportError as exc:
                log.warning(
                    "could not shorten the lease of %d message(s) of %r to %d s; they keep "
                    "the subscription's ack deadline: %s",
                    len(ready),
                    self.queue,
                    transport._per_message_deadline,
                    exc,
                )
        return ready

    async def _give_back(self, deliveries: list[PubSubDelivery]) -> None:
        await self._transport._release(deliveries)


# --- The transport ----------------------------------------------------------------------------


class PubSubTransport(ClosesOnExit):
    """One project's Pub/Sub, or an emulator (implements base.Transport)."""

    name = "pubsub"

    def __init__(
        self,
        *,
        project: str,
        emulator_host: str | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_delivery_attempts: int = DEFAULT_MAX_DELIVERY_ATTEMPTS,
        reconnect_initial: float = 0.5,
        reconnect_max: float = 30.0,
    ) -> None:
        if not project:
            raise ValueError("project must name a Google Cloud project")
        if not 0 < lease_seconds <= MAX_ACK_DEADLINE_S:
            raise ValueError(
                f"lease_seconds must be more than 0 and at most {MAX_ACK_DEADLINE_S} "
                f"(Pub/Sub's longest ack deadline), got {lease_seconds!r}"
            )
        if max_message_bytes < 1:
            raise ValueError(f"max_message_bytes must be positive, got {max_message_bytes!r}")
        if not MIN_DELIVERY_ATTEMPTS <= max_delivery_attempts <= MAX_DELIVERY_ATTEMPTS:
            raise ValueError(
                f"max_delivery_attempts must be from {MIN_DELIVERY_ATTEMPTS} to "
                f"{MAX_DELIVERY_ATTEMPTS} (Pub/Sub's dead-letter policy), "
                f"got {max_delivery_attempts!r}"
            )
        self.project = project
        self.emulator_host = emulator_host or None
        self.max_message_bytes = max_message_bytes
        self.max_delivery_attempts = max_delivery_attempts
        deadline = deadline_seconds(lease_seconds)
        self.lease_seconds: float | None = float(deadline)
        self._ack_deadline = subscription_ack_deadline(lease_seconds)
        # A lease shorter than any subscription deadline is set on each pulled message.
        self._per_message_deadline = deadline if deadline != self._ack_deadline else None
        self._backoff = receiving.Backoff(initial=reconnect_initial, cap=reconnect_max)
        self._session: aiohttp.ClientSession | None = None
        self._publisher: PublisherClient | None = None
        self._subscriber: SubscriberClient | None = None
        self._receivers: set[PubSubReceiver] = set()
        self._held: set[PubSubDelivery] = set()  # pulled by this transport, not settled yet
        self._short_retention = False  # the endpoint refused LONGEST_RETENTION once
        self._closed = False

    @property
    def max_delay_seconds(self) -> float:
        """The longest `delay` that `send` accepts."""
        return max_delay_seconds(self.max_delivery_attempts)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> PubSubTransport:
        """Configure from ASYA_PUBSUB_PROJECT (else GOOGLE_CLOUD_PROJECT),
        PUBSUB_EMULATOR_HOST, ASYA_PUBSUB_ACK_DEADLINE and ASYA_PUBSUB_MAX_DELIVERY_ATTEMPTS
        (empty means unset)."""
        return cls(
            project=project_from_env(environ),
            emulator_host=(environ.get(env.PUBSUB_EMULATOR_HOST) or "").strip() or None,
            lease_seconds=lease_from_env(environ),
            max_delivery_attempts=max_delivery_attempts_from_env(environ),
        )

    async def __aenter__(self) -> PubSubTransport:
        if self._closed:
            raise TransportError("the Pub/Sub transport is closed")
        if self._session is None:
            await self._open_clients()
        # Reach the endpoint now, so that a wrong address or missing credentials show at
        # start-up. Entering again after a failure tries again.
        await self._probe()
        return self

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for receiver in list(self._receivers):
            # No grace: the server holds an empty pull open for about 90 s, and what an
            # aborted pull took comes back after its ack deadline anyway.
            await receiver.close_within(0)
        # Pub/Sub has no connection whose loss returns messages: give back the unsettled ones
        # now rather than after their deadline.
        await self._release(list(self._held))
        session, self._session = self._session, None
        self._publisher = self._subscriber = None
        if session is not None:
            await session.close()

    def receive(self, queue: str, *, prefetch: int) -> Receiver:
        check_queue_name(queue)
        if not 0 < prefetch <= MAX_PULL_MESSAGES:
            raise ValueError(f"prefetch must be between 1 and {MAX_PULL_MESSAGES}, got {prefetch}")
        if self._closed:
            raise self._not_open()
        self._subscriber_client()  # refuse now rather than from the background task
        return PubSubReceiver(self, queue, prefetch=prefetch)

    async def send(self, queue: str, body: bytes, *, delay: float = 0.0) -> None:
        check_queue_name(queue)
        if len(body) > self.max_message_bytes:
            raise MessageTooLarge(queue, len(body), self.max_message_bytes)
        if not body:
            raise Unsupported(
                f"cannot send an empty message to queue {queue!r}: Pub/Sub refuses messages "
                "without data"
            )
        check_delay(delay, max_delivery_attempts=self.max_delivery_attempts)
        message = PubsubMessage(body, **delay_attributes(delay, now=time.time()))
        publisher = self._publisher_client()
        with _edge(queue, "send to"):
            answer = await _within(
                publisher.publish(self._topic(queue), [message], timeout=OPERATION_TIMEOUT_S),
                OPERATION_TIMEOUT_S,
            )
        # The message ids are Pub/Sub's acknowledgement that the message is stored.
        if not answer.get("messageIds"):
            raise TransportError(
                f"Pub/Sub answered a publish to queue {queue!r} without a message id "
                f"({answer!r}); the message may not be stored"
            )

    async def ensure_queue(self, queue: str) -> None:
        check_queue_name(queue)
        dead_letters = names.dead_letter_name(queue)
        check_queue_name(dead_letters)
        await self._create_topic(queue)
        # The dead-letter subscription before the queue's: a dead letter sent to a topic
        # without a subscription is dropped.
        await self._create_topic(dead_letters)
        await self._create_subscription(dead_letters, dead_letter_topic=None)
        await self._create_subscription(queue, dead_letter_topic=self._topic(dead_letters))

    async def delete_queue(self, queue: str) -> None:
        """Delete the subscription and the topic; keep `<queue>-dlq` (see the docstring)."""
        check_queue_name(queue)
        subscriber, publisher = self._subscriber_client(), self._publisher_client()
        # Missing is fine: there is no such queue afterwards, which is what was asked.
        with contextlib.suppress(QueueNotFound), _edge(queue, "delete the subscription of"):
            await _within(
                subscriber.delete_subscription(
                    self._subscription(queue), timeout=OPERATION_TIMEOUT_S
                ),
                OPERATION_TIMEOUT_S,
            )
        with contextlib.suppress(QueueNotFound), _edge(queue, "delete the topic of"):
            await _within(
                publisher.delete_topic(self._topic(queue), timeout=OPERATION_TIMEOUT_S),
                OPERATION_TIMEOUT_S,
            )

    async def queue_depth(self, queue: str) -> int:
        check_queue_name(queue)
        subscriber = self._subscriber_client()
        with _edge(queue, "read the depth of"):
            await _within(
                subscriber.get_subscription(self._subscription(queue), timeout=OPERATION_TIMEOUT_S),
                OPERATION_TIMEOUT_S,
            )
        raise Unsupported(
            f"Pub/Sub does not say through its API how many messages wait in subscription "
            f"{queue!r}: the backlog (num_undelivered_messages) is published only to Cloud "
            "Monitoring, where KEDA's gcp-pubsub scaler reads it"
        )

    # Used by receivers and deliveries.

    async def _pull(self, queue: str, max_messages: int) -> list[SubscriberMessage]:
        subscriber = self._subscriber_client()
        with _edge(queue, "pull from"):
            return await _within(
                subscriber.pull(self._subscription(queue), max_messages, timeout=PULL_TIMEOUT_S),
                PULL_TIMEOUT_S,
            )

    async def _unreachable(self, queue: str) -> str | None:
        """Why Pub/Sub cannot be reached now, or None if it answered (whatever it said: a
        refusal, such as a subscriber role that may not read the subscription, is an answer)."""
        subscriber = self._subscriber_client()
        try:
            await _within(
                subscriber.get_subscription(self._subscription(queue), timeout=PROBE_TIMEOUT_S),
                PROBE_TIMEOUT_S,
            )
        except aiohttp.ClientResponseError:
            return None
        except Exception as exc:  # as in _edge: the auth library raises bare Exceptions too
            reason = translate(exc, queue=queue, doing="check the connection while pulling from")
            return str(reason)
        return None

    async def _acknowledge(self, queue: str, ack_ids: list[str]) -> None:
        """Never raises: an ack that does not arrive means the message comes back after its
        deadline, a duplicate that at-least-once delivery allows; a stale one does nothing."""
        try:
            subscriber = self._subscriber_client()
            with _edge(queue, "acknowledge a message from"):
                await _within(
                    subscriber.acknowledge(
                        self._subscription(queue), ack_ids, timeout=OPERATION_TIMEOUT_S
                    ),
                    OPERATION_TIMEOUT_S,
                )
        except TransportUnavailable as exc:
            log.warning("could not acknowledge %d message(s) of %r: %s", len(ack_ids), queue, exc)
        except TransportError as exc:  # stale, or the subscription is gone: nothing to ack
            log.debug("acknowledging %d message(s) of %r did nothing: %s", len(ack_ids), queue, exc)

    async def _set_deadline(self, queue: str, ack_ids: list[str], seconds: int) -> None:
        """modifyAckDeadline. Raises TransportUnavailable, and nothing for ack ids that are
        stale or whose subscription is gone: there is nothing left to change."""
        subscriber = self._subscriber_client()
        try:
            with _edge(queue, "set the ack deadline of messages from"):
                await _within(
                    subscriber.modify_ack_deadline(
                        self._subscription(queue), ack_ids, seconds, timeout=OPERATION_TIMEOUT_S
                    ),
                    OPERATION_TIMEOUT_S,
                )
        except TransportUnavailable:
            raise
        except TransportError as exc:
            log.debug("deadline of %d message(s) of %r not changed: %s", len(ack_ids), queue, exc)

    async def _release(self, deliveries: list[PubSubDelivery]) -> None:
        """Make deliveries available again at once (deadline 0); on failure they come back
        when their deadline ends."""
        by_queue: dict[str, list[str]] = {}
        for delivery in deliveries:
            delivery.mark_settled()
            by_queue.setdefault(delivery.queue, []).append(delivery.ack_id)
        if self._session is None:
            return
        for queue, ack_ids in by_queue.items():
            try:
                await self._set_deadline(queue, ack_ids, 0)
            except TransportError as exc:
                log.warning("could not give back %d message(s) of %r: %s", len(ack_ids), queue, exc)

    # Admin helpers.

    async def _create_topic(self, name: str) -> None:
        publisher = self._publisher_client()
        with _edge(name, "create the topic of"):
            try:
                await _within(
                    publisher.create_topic(self._topic(name), timeout=OPERATION_TIMEOUT_S),
                    OPERATION_TIMEOUT_S,
                )
            except aiohttp.ClientResponseError as exc:
                if exc.status != 409:  # 409 ALREADY_EXISTS: ensuring is idempotent
                    raise

    async def _create_subscription(self, name: str, *, dead_letter_topic: str | None) -> None:
        subscriber = self._subscriber_client()
        while True:
            body = subscription_body(
                dead_letter_topic=dead_letter_topic,
                ack_deadline=self._ack_deadline,
                max_delivery_attempts=self.max_delivery_attempts,
                retention=EMULATOR_RETENTION if self._short_retention else LONGEST_RETENTION,
            )
            with _edge(name, "create the subscription of"):
                try:
                    await _within(
                        subscriber.create_subscription(
                            self._subscription(name),
                            self._topic(name),
                            body,
                            timeout=OPERATION_TIMEOUT_S,
                        ),
                        OPERATION_TIMEOUT_S,
                    )
                    return
                except aiohttp.ClientResponseError as exc:
                    if exc.status == 409:  # ALREADY_EXISTS: kept as it is
                        return
                    if exc.status != 400 or "retention" not in exc.message or self._short_retention:
                        raise
                    log.warning(
                        "this Pub/Sub endpoint refuses to retain messages for 31 days (%s); "
                        "subscriptions keep them for 7 days instead",
                        google_message(exc.message),
                    )
                    self._short_retention = True

    async def _open_clients(self) -> None:
        session = aiohttp.ClientSession()
        try:
            if self.emulator_host is not None:
                root, is_dev = emulator_api_root(self.emulator_host), True
            else:
                root, is_dev = API_ROOT, False
            # One token for both clients (refreshed once); unused against the emulator. The
            # ignores: gcloud-aio's annotations name the `requests` Session of its sync twin.
            token = Token(scopes=list(SCOPES), session=session)  # type: ignore[arg-type]
            publisher = PublisherClient(
                session=session,  # type: ignore[arg-type]
                token=token,
                api_root=root,
                api_is_dev=is_dev,
            )
            subscriber = SubscriberClient(
                session=session,  # type: ignore[arg-type]
                token=token,
                api_root=root,
                api_is_dev=is_dev,
            )
        # gcloud-aio-auth reads the credentials file the environment names (a missing or
        # malformed one raises here): a configuration error, not an outage.
        except Exception as exc:
            await session.close()
            raise TransportError(f"cannot set up the Pub/Sub clients: {exc!r}") from exc
        self._session, self._publisher, self._subscriber = session, publisher, subscriber

    async def _probe(self) -> None:
        subscriber = self._subscriber_client()
        try:
            async with asyncio.timeout(OPERATION_TIMEOUT_S):
                if self.emulator_host is None:
                    await subscriber.token.get()
                else:
                    # The emulator answers "Ok" at its root.
                    root = emulator_api_root(self.emulator_host).removesuffix("/v1")
                    async with subscriber.session.session.get(f"{root}/") as answer:
                        answer.raise_for_status()
        except Exception as exc:  # aiohttp's errors, or gcloud-aio-auth's bare Exceptions
            where = (
                f"the Pub/Sub emulator at {self.emulator_host}"
                if self.emulator_host is not None
                else "Google credentials for Pub/Sub (workload identity, "
                "GOOGLE_APPLICATION_CREDENTIALS or gcloud's application default credentials)"
            )
            raise TransportUnavailable(
                f"cannot reach {where}: {str(exc) or type(exc).__name__}"
            ) from exc

    # The clients stay usable while `close` gives messages back, and are gone after it.

    def _publisher_client(self) -> PublisherClient:
        if self._publisher is None:
            raise self._not_open()
        return self._publisher

    def _subscriber_client(self) -> SubscriberClient:
        if self._subscriber is None:
            raise self._not_open()
        return self._subscriber

    def _not_open(self) -> TransportError:
        if self._closed:
            return TransportError("the Pub/Sub transport is closed")
        return TransportError("the Pub/Sub transport is not open: use `async with` first")

    def _topic(self, name: str) -> str:
        return PublisherClient.topic_path(self.project, name)

    def _subscription(self, name: str) -> str:
        return SubscriberClient.subscription_path(self.project, name)
