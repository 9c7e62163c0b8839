"""What every front door of the gateway does with tasks: the REST API (app.py), MCP, A2A and
the OpenAI-compatible endpoint all submit, read, cancel and follow tasks through `Gateway`,
so they share one store, one transport, one set of flows and keys, and one behaviour.

Submitting stores the task (pending) first and publishes its envelope second. When the
broker cannot take the envelope, the task is recorded as failed (reason `PublishFailed`, the
transport's error as `error`) and the answer is 503: the task exists and says what
happened, and nothing is ever left pending for an envelope that was never sent. A first
actor without a queue fails it the same way with reason `UnknownActor` and 400.

Every method raises `ApiError` for an answer other than success, so each front door only
translates that into its own protocol's error.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import secrets
from collections.abc import Callable, Mapping
from typing import Any

import asya_transports as transports
from asya_gateway import outbox, submit
from asya_gateway.auth import ApiKeys
from asya_gateway.errors import ApiError
from asya_gateway.flows import Flow
from asya_gateway.metrics import GatewayMetrics, TimedStore
from asya_gateway.pausing import PauseRequest
from asya_gateway.sse import KEEPALIVE_S, TaskStream
from asya_gateway.store.base import (
    Event,
    Store,
    StoreError,
    TaskConflict,
    TaskNotFound,
    Unpublished,
)
from asya_gateway.streaming import SEND_TIMEOUT_S
from asya_gateway.submit import Submission
from asya_gateway.tasks import Task, TaskStatus
from asya_shared import names, pauses, wire

__all__ = [
    "Gateway",
    "count_finished",
    "not_found",
    "too_large",
]

log = logging.getLogger("asya.gateway")

# Where a publish failure is recorded as having happened: the gateway is no actor.
_SUBMITTER = "gateway"


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Gateway:
    """What the apps share. `store` is wrapped so that every call is timed in `metrics`."""

    def __init__(
        self,
        store: Store,
        transport: transports.Broker,
        *,
        namespace: str = "default",
        flows: Mapping[str, Flow] | None = None,
        keys: ApiKeys | None = None,
        metrics: GatewayMetrics | None = None,
        keepalive_s: float = KEEPALIVE_S,
        send_timeout_s: float = SEND_TIMEOUT_S,
        clock: Callable[[], datetime.datetime] = _utc_now,
    ) -> None:
        self.metrics = metrics or GatewayMetrics()
        self.store: Store = TimedStore(store, self.metrics)
        self.transport = transport
        names.queue_name(namespace, names.SINK)  # InvalidName now, not at the first submit
        self.namespace = namespace
        self.flows: Mapping[str, Flow] = dict(flows or {})
        self.keys = keys
        self.keepalive_s = keepalive_s
        # A streaming client that takes no chunk for this long is dropped (streaming.py).
        self.send_timeout_s = send_timeout_s
        self.clock = clock
        # Set when the gateway stops: open event streams end instead of holding it up.
        self.stopping = asyncio.Event()

    # -------------------------------------------------------------------------- callers

    def tenant_of(self, authorization: str | None) -> str:
        """The caller's tenant from an Authorization header: "" with auth off, else the
        tenant of its API key (ApiError 401 otherwise)."""
        if self.keys is None:
            return ""
        return self.keys.authenticate(authorization)

    def now(self) -> str:
        return submit.timestamp(self.clock())

    # ---------------------------------------------------------------------------- tasks

    def parse(self, body: bytes) -> Submission:
        """A `POST /v1/tasks` body, checked (ApiError 400/404 naming the problem)."""
        return submit.parse_submission(
            body, self.flows, namespace=self.namespace, transport=self.transport.name
        )

    def flow_submission(
        self, flow: str, payload: Any, *, task_id: str | None = None, timeout: Any = None
    ) -> Submission:
        """A submission of `payload` to the named flow, checked as `POST /v1/tasks` checks
        one (unknown flow 404, payload against the flow's input schema 400)."""
        body: dict[str, Any] = {"flow": flow, "payload": payload}
        if task_id is not None:
            body["id"] = task_id
        if timeout is not None:
            body["timeout"] = timeout
        return submit.check_submission(
            body, self.flows, namespace=self.namespace, transport=self.transport.name
        )

    async def submit(
        self, submission: Submission, tenant: str, *, task_id: str | None = None
    ) -> tuple[Task, bool]:
        """Store and publish; (the task, whether this call created it). A known id answers
        the existing task and publishes nothing. `task_id` names a new task whose id the
        caller chose (for submit_and_follow) when the submission has no id."""
        if submission.id is not None:
            try:
                return await self.store.get(submission.id, tenant), False
            except TaskNotFound:
                pass
        envelope = submit.build_envelope(
            submission,
            task_id=submission.id or task_id or submit.new_task_id(),
            now=self.clock(),
            traceparent=f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01",
        )
        data = submit.encode(envelope)
        limit = self.transport.max_message_bytes
        if len(data) > limit:
            raise too_large(len(data), limit, self.transport.name)
        queue = submit.queue_of(self.namespace, submission.route[0], self.transport.name)
        try:
            # The envelope waits in the task's outbox until the broker has it: a gateway
            # killed in between leaves it for outbox.py's sweep, not pending for ever.
            task, created = await self.store.create(
                submit.build_task(submission, envelope, tenant=tenant),
                envelope=data.decode(),
            )
        except TaskConflict as exc:  # another tenant's task holds this id
            raise ApiError(409, "id_taken", str(exc)) from None
        if not created:
            return task, False  # a concurrent submit with the same id won
        self.metrics.submitted.inc()
        try:
            await self.transport.send(queue, data)
        except Exception as exc:
            # Whatever happened, the task must not stay pending for an envelope never sent.
            await self._publish_failed(task, exc)
            if not isinstance(exc, transports.TransportError):
                log.exception("task %s: publishing failed unexpectedly", task.id)
            raise _publish_error(task, queue, exc) from None
        try:
            await self.store.published(task.id)
        except StoreError as exc:
            # The task runs; the sweep will publish its envelope a second time.
            log.warning("task %s: published, but emptying its outbox failed: %s", task.id, exc)
        return task, True

    async def get(self, task_id: str, tenant: str) -> Task:
        try:
            return await self.store.get(task_id, tenant)
        except TaskNotFound:
            raise not_found(task_id) from None

    async def cancel(self, task_id: str, tenant: str) -> Task:
        """Cancel (idempotent); 404 for an unknown task, 409 once it succeeded or failed."""
        at = self.now()
        try:
            task = await self.store.cancel(task_id, tenant, at=at)
        except TaskNotFound:
            raise not_found(task_id) from None
        except TaskConflict as exc:
            raise ApiError(
                409,
                "conflict",
                f"task {task_id!r} already {exc.task.status}; only a pending, running or paused "
                "task can be canceled",
            ) from None
        if task.updated_at == at:  # canceled by this call, not before
            self.metrics.finished(str(TaskStatus.CANCELED))
            # A paused task's parked envelope goes to x-sink, so its ending is recorded.
            try:
                record = await self.store.outbox(task_id)
            except StoreError as exc:
                log.warning("task %s: canceled; reading its outbox failed: %s", task_id, exc)
                record = None
            if record is not None:
                await self._send(record)
        return task

    async def pause(self, request: PauseRequest) -> Task:
        """Park x-pause's envelope in the task (idempotent): 404 for a task the gateway
        does not have, 409 once the task ended (x-pause drops the envelope)."""
        task_id = request.task_id
        try:
            task = await self.store.pause(
                task_id,
                envelope=outbox_text(request.envelope),
                route=request.route,
                attempt=request.attempt,
                pause=request.pause,
            )
        except TaskNotFound:
            raise ApiError(
                404,
                "task_not_found",
                f"no task {task_id!r}: only a task submitted through the gateway can pause",
            ) from None
        except TaskConflict as exc:
            raise ApiError(
                409,
                "task_ended",
                f"task {task_id!r} already {exc.task.status}: nobody will resume it, drop "
                "the envelope",
            ) from None
        return task

    async def resume(self, task_id: str, tenant: str, input: dict[str, Any]) -> Task:
        """Resume a paused task with a person's input: 404 unknown task, 409 not paused
        (also for the loser of two concurrent resumes), 400 input that does not fit the
        pause (the message names the field, `input.<name>`)."""
        try:
            resumed = await self.store.resume(task_id, tenant, input, at=self.now())
        except TaskNotFound:
            raise not_found(task_id) from None
        except TaskConflict as exc:
            raise ApiError(409, "not_paused", str(exc)) from None
        except pauses.InvalidInput as exc:
            raise ApiError(400, "invalid_input", exc.message, path=exc.field) from None
        await self._send(resumed)
        return resumed.task

    async def _send(self, item: Unpublished) -> None:
        """Publish an outbox envelope now; a failure leaves it to the outbox sweep."""
        try:
            await outbox.publish(self.store, self.transport, item, namespace=self.namespace)
        except StoreError as exc:
            log.warning("task %s: published, but emptying its outbox failed: %s", item.task.id, exc)

    async def submit_and_follow(
        self, submission: Submission, tenant: str
    ) -> tuple[Task, bool, TaskStream]:
        """submit(), with the task's stream subscribed before the envelope is published:
        a follower that subscribed after submitting could miss the first actor's earliest
        side events (they are live only). Close the stream always."""
        task_id = submission.id or submit.new_task_id()
        stream = self._stream(task_id, tenant, None)
        stream.subscribe()
        try:
            task, created = await self.submit(submission, tenant, task_id=task_id)
            if created:
                stream.start_from(task)
            else:  # an earlier submit's task: it may have moved since
                await stream.load()
        except BaseException:
            await stream.close()
            raise
        return task, created, stream

    async def follow(
        self, task_id: str, tenant: str, *, last_event_id: int | None = None
    ) -> TaskStream:
        """An opened stream of the task's updates (404 for an unknown task). Iterate its
        `updates()` (or `frames()` for SSE) and always `close()` it."""
        stream = self._stream(task_id, tenant, last_event_id)
        try:
            await stream.open()
        except TaskNotFound:
            await stream.close()
            raise not_found(task_id) from None
        except BaseException:
            await stream.close()
            raise
        return stream

    def _stream(self, task_id: str, tenant: str, last_event_id: int | None) -> TaskStream:
        return TaskStream(
            self.store,
            task_id,
            tenant,
            last_event_id=last_event_id,
            keepalive=self.keepalive_s,
            stopping=self.stopping,
        )

    async def _publish_failed(self, task: Task, exc: Exception) -> None:
        reason = "UnknownActor" if isinstance(exc, transports.QueueNotFound) else "PublishFailed"
        mro = [cls.__name__ for cls in type(exc).__mro__ if cls not in (object, BaseException)]
        report: wire.HopReport = {
            "id": task.id,
            "parent_id": None,
            "actor": _SUBMITTER,
            "event": "failed",
            "route": task.route,
            "attempt": 1,
            "at": self.now(),
            "reason": reason,
            "error": wire.error_details(type(exc).__name__, str(exc), mro=mro),
        }
        try:
            events = await self.store.apply([report])
        except StoreError:
            # Both the broker and the store are failing; the answer says the broker did.
            log.exception("task %s: publishing failed and recording the failure failed", task.id)
            return
        count_finished(self.metrics, events)


def outbox_text(envelope: Mapping[str, Any]) -> str:
    return submit.encode(envelope).decode()


def count_finished(metrics: GatewayMetrics, events: list[Event]) -> None:
    for event in events:
        if event.kind == "status" and event.terminal:
            metrics.finished(str(event.data.get("status")))


def not_found(task_id: str) -> ApiError:
    return ApiError(
        404, "not_found", f"no task {task_id!r}; check the id (tasks finished long ago are deleted)"
    )


def too_large(size: int, limit: int, transport: str | None) -> ApiError:
    subject = "the envelope" if transport else "the body"
    return ApiError(
        413,
        "too_large",
        f"{subject} is {size} bytes{'' if transport else ' or more'}; the broker accepts at "
        f"most {limit} bytes per message. Send a smaller payload, or a reference to the data "
        "(a URL or an object key) instead of the data itself",
    )


def _publish_error(task: Task, queue: str, exc: Exception) -> ApiError:
    recorded = f"Task {task.id!r} is recorded as failed"
    if isinstance(exc, transports.QueueNotFound):
        return ApiError(
            400,
            "unknown_actor",
            f"actor {task.route['curr']!r} has no queue ({queue!r} does not exist); deploy the "
            f"actor or fix the route. {recorded} (reason UnknownActor)",
        )
    if isinstance(exc, transports.MessageTooLarge):
        return ApiError(
            413, "too_large", f"the broker refused the envelope as too large: {exc}. {recorded}"
        )
    if isinstance(exc, transports.InvalidQueueName):
        return ApiError(
            400, "invalid_actor", f"the broker refused the queue name: {exc}. {recorded}"
        )
    if isinstance(exc, transports.TransportError):
        return ApiError(
            503,
            "broker_unavailable",
            f"the broker cannot take the envelope now ({exc}). {recorded} (reason "
            "PublishFailed). Submit again later, with a new id if you gave one",
            headers={"Retry-After": "5"},
        )
    return ApiError(500, "internal", f"publishing failed unexpectedly: {exc!r}. {recorded}")
