"""The gateway's two ASGI apps, built from one `Gateway` (the store, the transport, the flows,
the keys and the metrics they share).

Public app (`--port`): the tasks API, its event streams, /healthz, /readyz, /metrics.

    POST   /v1/tasks                submit: 201 + Location (200 for a known idempotency id)
    GET    /v1/tasks                list, newest first: ?status=&limit=&cursor=
    GET    /v1/tasks/{id}           one task
    DELETE /v1/tasks/{id}           cancel: 200, idempotent; 409 once it succeeded or failed
    GET    /v1/tasks/{id}/events    Server-Sent Events (sse.py)

Internal app (`--internal-port`): reports only, never a task read.

    POST   /internal/v1/reports     {"reports": [...], "canceled_cursor": n} ->
                                    {"accepted", "canceled": [ids], "canceled_cursor"}
    GET    /healthz

Submitting stores the task (pending) first and publishes its envelope second. When the
broker cannot take the envelope, the task is recorded as failed (reason `PublishFailed`, the
transport's error as `error`) and the answer is 503: the task exists and says what
happened, and nothing is ever left pending for an envelope that was never sent. A first
actor without a queue fails it the same way with reason `UnknownActor` and 400.

Every error answer has the shape of errors.py; every route but the health, readiness and
metrics ones needs an API key when keys are configured (auth.py).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import asya_transports as transports
from asya_gateway import submit
from asya_gateway.auth import ApiKeys
from asya_gateway.errors import ApiError, error_response
from asya_gateway.flows import Flow
from asya_gateway.metrics import CONTENT_TYPE, GatewayMetrics, TimedStore
from asya_gateway.reports import parse_batch
from asya_gateway.sse import KEEPALIVE_S, TaskStream, parse_last_event_id
from asya_gateway.store.base import Event, Store, StoreError, TaskConflict, TaskNotFound
from asya_gateway.tasks import Task, TaskStatus
from asya_shared import names, wire

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "Gateway",
    "internal_app",
    "public_app",
]

log = logging.getLogger("asya.gateway")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
# /readyz answers within this, whatever the store or the broker do.
READINESS_TIMEOUT_S = 3.0
# Where a publish failure is recorded as having happened: the gateway is no actor.
_SUBMITTER = "gateway"


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Gateway:
    """What both apps share. `store` is wrapped so that every call is timed in `metrics`."""

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
        self.clock = clock
        # Set when the gateway stops: open event streams end instead of holding it up.
        self.stopping = asyncio.Event()

    def tenant(self, request: Request) -> str:
        """The caller's tenant: "" with auth off, else the tenant of its API key (or 401)."""
        if self.keys is None:
            return ""
        return self.keys.authenticate(request.headers.get("authorization"))

    def now(self) -> str:
        return submit.timestamp(self.clock())


# ------------------------------------------------------------------------------ public


def public_app(gateway: Gateway) -> Starlette:
    api = _PublicApi(gateway)
    routes = [
        Route("/v1/tasks", api.submit, methods=["POST"]),
        Route("/v1/tasks", api.list_tasks, methods=["GET"]),
        Route("/v1/tasks/{task_id}", api.get_task, methods=["GET"]),
        Route("/v1/tasks/{task_id}", api.cancel_task, methods=["DELETE"]),
        Route("/v1/tasks/{task_id}/events", api.events, methods=["GET"]),
        Route("/healthz", _healthz, methods=["GET"]),
        Route("/readyz", api.readyz, methods=["GET"]),
        Route("/metrics", api.metrics, methods=["GET"]),
    ]
    return _app(routes, gateway.metrics)


class _PublicApi:
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    async def submit(self, request: Request) -> Response:
        gw = self.gw
        tenant = gw.tenant(request)
        limit = gw.transport.max_message_bytes
        body = await _read_body(request, limit)
        submission = submit.parse_submission(
            body, gw.flows, namespace=gw.namespace, transport=gw.transport.name
        )
        if submission.id is not None:
            try:
                existing = await gw.store.get(submission.id, tenant)
            except TaskNotFound:
                pass
            else:
                return _task_response(existing, 200)
        envelope = submit.build_envelope(
            submission,
            task_id=submission.id or submit.new_task_id(),
            now=gw.clock(),
            traceparent=f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01",
        )
        data = submit.encode(envelope)
        if len(data) > limit:
            raise _too_large(len(data), limit, gw.transport.name)
        queue = submit.queue_of(gw.namespace, submission.route[0], gw.transport.name)
        try:
            # The envelope waits in the task's outbox until the broker has it: a gateway
            # killed in between leaves it for outbox.py's sweep, not pending for ever.
            task, created = await gw.store.create(
                submit.build_task(submission, envelope, tenant=tenant),
                envelope=data.decode(),
            )
        except TaskConflict as exc:  # another tenant's task holds this id
            raise ApiError(409, "id_taken", str(exc)) from None
        if not created:
            return _task_response(task, 200)  # a concurrent POST with the same id won
        gw.metrics.submitted.inc()
        try:
            await gw.transport.send(queue, data)
        except Exception as exc:
            # Whatever happened, the task must not stay pending for an envelope never sent.
            await self._publish_failed(task, exc)
            if not isinstance(exc, transports.TransportError):
                log.exception("task %s: publishing failed unexpectedly", task.id)
            raise _publish_error(task, queue, exc) from None
        try:
            await gw.store.published(task.id)
        except StoreError as exc:
            # The task runs; the sweep will publish its envelope a second time.
            log.warning("task %s: published, but emptying its outbox failed: %s", task.id, exc)
        return _task_response(task, 201)

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
            "at": self.gw.now(),
            "reason": reason,
            "error": wire.error_details(type(exc).__name__, str(exc), mro=mro),
        }
        try:
            events = await self.gw.store.apply([report])
        except StoreError:
            # Both the broker and the store are failing; the answer says the broker did.
            log.exception("task %s: publishing failed and recording the failure failed", task.id)
            return
        _count_finished(self.gw.metrics, events)

    async def list_tasks(self, request: Request) -> Response:
        gw = self.gw
        tenant = gw.tenant(request)
        query = request.query_params
        status = _status_param(query.get("status"))
        limit = _limit_param(query.get("limit"))
        cursor = query.get("cursor") or None
        try:
            page = await gw.store.list_tasks(tenant, status=status, limit=limit, cursor=cursor)
        except ValueError as exc:  # the store's InvalidCursor says what to do
            raise ApiError(400, "invalid_cursor", str(exc)) from None
        return JSONResponse(
            {"tasks": [task.to_json() for task in page.tasks], "next_cursor": page.next_cursor}
        )

    async def get_task(self, request: Request) -> Response:
        tenant = self.gw.tenant(request)
        task_id = request.path_params["task_id"]
        return JSONResponse((await _get(self.gw.store, task_id, tenant)).to_json())

    async def cancel_task(self, request: Request) -> Response:
        gw = self.gw
        tenant = gw.tenant(request)
        task_id = request.path_params["task_id"]
        at = gw.now()
        try:
            task = await gw.store.cancel(task_id, tenant, at=at)
        except TaskNotFound:
            raise _not_found(task_id) from None
        except TaskConflict as exc:
            raise ApiError(
                409,
                "conflict",
                f"task {task_id!r} already {exc.task.status}; only a pending, running or paused "
                "task can be canceled",
            ) from None
        if task.updated_at == at:  # canceled by this call, not before
            gw.metrics.finished(str(TaskStatus.CANCELED))
        return JSONResponse(task.to_json())

    async def events(self, request: Request) -> Response:
        gw = self.gw
        tenant = gw.tenant(request)
        task_id = request.path_params["task_id"]
        stream = TaskStream(
            gw.store,
            task_id,
            tenant,
            last_event_id=parse_last_event_id(request.headers.get("last-event-id")),
            keepalive=gw.keepalive_s,
            stopping=gw.stopping,
        )
        try:
            await stream.open()
        except TaskNotFound:
            await stream.close()
            raise _not_found(task_id) from None
        except BaseException:
            await stream.close()
            raise
        return StreamingResponse(
            _follow(stream, gw.metrics, task_id),
            media_type="text/event-stream",
            # No proxy may buffer or cache a live stream.
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def readyz(self, request: Request) -> Response:
        del request
        problems = []
        try:
            async with asyncio.timeout(READINESS_TIMEOUT_S):
                await self.gw.store.ping()
        except (StoreError, TimeoutError) as exc:
            problems.append(f"store: {exc or 'no answer within the readiness timeout'}")
        broker = await _broker_problem(self.gw)
        if broker:
            problems.append(f"broker: {broker}")
        if problems:
            return error_response(503, "not_ready", "not ready: " + "; ".join(problems))
        return JSONResponse({"status": "ready", "store": "ok", "broker": "ok"})

    async def metrics(self, request: Request) -> Response:
        del request
        return Response(self.gw.metrics.render(), media_type=CONTENT_TYPE)


async def _follow(
    stream: TaskStream, metrics: GatewayMetrics, task_id: str
) -> AsyncIterator[bytes]:
    metrics.sse_subscribers.inc()
    try:
        async for frame in stream.frames():
            yield frame
    except StoreError:
        # The client reconnects with Last-Event-ID and misses nothing.
        log.warning("event stream of task %s ended: the store failed", task_id, exc_info=True)
    finally:
        metrics.sse_subscribers.dec()
        await stream.close()


async def _broker_problem(gw: Gateway) -> str | None:
    """Why the broker cannot be used now, or None. Reading the depth of x-sink's queue is a
    round trip every broker answers; a missing queue (or a broker that cannot count) still
    proves the broker is there."""
    queue = names.check_queue_name(names.queue_name(gw.namespace, names.SINK), gw.transport.name)
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_S):
            await gw.transport.queue_depth(queue)
    except (transports.QueueNotFound, transports.Unsupported):
        return None
    except TimeoutError:
        return "no answer within the readiness timeout"
    except transports.TransportError as exc:
        return str(exc)
    return None


# ---------------------------------------------------------------------------- internal


def internal_app(gateway: Gateway) -> Starlette:
    async def reports(request: Request) -> Response:
        batch, cursor = parse_batch(await request.body())
        events = await gateway.store.apply(batch) if batch else []
        _count_finished(gateway.metrics, events)
        canceled, next_cursor = await gateway.store.canceled_since(cursor)
        gateway.metrics.report_batches.inc()
        gateway.metrics.reports.inc(len(batch))
        return JSONResponse(
            {"accepted": len(batch), "canceled": canceled, "canceled_cursor": next_cursor}
        )

    routes = [
        Route("/internal/v1/reports", reports, methods=["POST"]),
        Route("/healthz", _healthz, methods=["GET"]),
    ]
    return _app(routes, gateway.metrics)


# ------------------------------------------------------------------------------ shared


def _app(routes: list[Route], metrics: GatewayMetrics) -> Starlette:
    app = Starlette(
        routes=routes,
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            StoreError: _store_error,
            Exception: _unexpected,
        },
    )
    app.add_middleware(_Timing, metrics=metrics)
    return app


async def _healthz(request: Request) -> Response:
    del request
    return JSONResponse({"status": "ok"})


async def _api_error(request: Request, exc: Exception) -> Response:
    del request
    assert isinstance(exc, ApiError)
    return exc.response()


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = {
        404: f"no such path {request.url.path}; the API lives under /v1/tasks",
        405: f"{request.method} is not allowed on {request.url.path}",
    }.get(exc.status_code, str(exc.detail))
    return error_response(exc.status_code, code, message, headers=exc.headers)


async def _store_error(request: Request, exc: Exception) -> Response:
    log.warning("%s %s: store failed: %s", request.method, request.url.path, exc)
    return error_response(
        503, "store_unavailable", f"the task store cannot answer now ({exc}); try again later"
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(
        500, "internal", "the gateway failed on this request; its log has the details"
    )


class _Timing:
    """Observe each request's duration, until its response headers, by route template
    (`/v1/tasks/{task_id}`, never the id itself: that would make a series per task)."""

    def __init__(self, app: ASGIApp, *, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        observed = False

        async def timed_send(message: Message) -> None:
            nonlocal observed
            if message["type"] == "http.response.start" and not observed:
                observed = True
                route = scope.get("route")
                template = getattr(route, "path", None) or "unmatched"
                self.metrics.request(
                    scope["method"], template, message["status"], time.perf_counter() - started
                )
            await send(message)

        await self.app(scope, receive, timed_send)


# ------------------------------------------------------------------------------ pieces


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit, None)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit, None)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int, transport: str | None) -> ApiError:
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


def _count_finished(metrics: GatewayMetrics, events: list[Event]) -> None:
    for event in events:
        if event.kind == "status" and event.terminal:
            metrics.finished(str(event.data.get("status")))


def _task_response(task: Task, status: int) -> Response:
    return JSONResponse(
        task.to_json(), status_code=status, headers={"Location": f"/v1/tasks/{task.id}"}
    )


async def _get(store: Store, task_id: str, tenant: str) -> Task:
    try:
        return await store.get(task_id, tenant)
    except TaskNotFound:
        raise _not_found(task_id) from None


def _not_found(task_id: str) -> ApiError:
    return ApiError(
        404, "not_found", f"no task {task_id!r}; check the id (tasks finished long ago are deleted)"
    )


_STATUSES = ", ".join(str(status) for status in TaskStatus)


def _status_param(raw: str | None) -> TaskStatus | None:
    if not raw:
        return None
    try:
        return TaskStatus(raw)
    except ValueError:
        raise ApiError(
            400, "invalid_status", f"status {raw!r} is not a task status; one of {_STATUSES}"
        ) from None


def _limit_param(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not raw.isdigit() or int(raw) < 1:
        raise ApiError(
            400, "invalid_limit", f"limit {raw!r} must be a whole number from 1 to {MAX_LIMIT}"
        )
    return min(int(raw), MAX_LIMIT)  # more than the maximum: the maximum, as documented
