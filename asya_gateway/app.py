"""The gateway's two ASGI apps, built from one `Gateway` (service.py: the store, the
transport, the flows, the keys and the metrics they share).

Public app (`--port`): the tasks API, its event streams, /healthz, /readyz, /metrics, and
the agent front doors of doors.py (OpenAI-compatible, A2A, MCP), whose lifespans the app
runs: serve it with lifespan on.

    POST   /v1/tasks                submit: 201 + Location (200 for a known idempotency id)
    GET    /v1/tasks                list, newest first: ?status=&limit=&cursor=
    GET    /v1/tasks/{id}           one task
    DELETE /v1/tasks/{id}           cancel: 200, idempotent; 409 once it succeeded or failed
    POST   /v1/tasks/{id}/resume    {"input": {...}}: 200 with the task running again;
                                    409 not paused, 400 input that does not fit the pause
    GET    /v1/tasks/{id}/events    Server-Sent Events (sse.py)
    GET    /v1/sump                 what x-sump kept, and a redrive of one record: sump.py
    GET    /v1/sump/{id}            (404 without a sump store)
    POST   /v1/sump/{id}/redrive

Internal app (`--internal-port`): reports only, never a task read.

    POST   /internal/v1/reports     {"reports": [...], "canceled_cursor": n} ->
                                    {"accepted", "canceled": [ids], "canceled_cursor"}
    POST   /internal/v1/pauses      x-pause parks an envelope: {"envelope", "pause",
                                    "paused_at", "expires_at"} -> {"task"}; 404 no such
                                    task, 409 it already ended
    GET    /healthz

What a request does to tasks is decided in service.py, which every front door shares.

Every error answer has the shape of errors.py; every route but the health, readiness and
metrics ones needs an API key when keys are configured (auth.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import asya_transports as transports
from asya_gateway import a2a_agent, mcp_tools, openai_api, sump, ui
from asya_gateway.bodies import read_body
from asya_gateway.doors import running
from asya_gateway.errors import ApiError, error_response
from asya_gateway.metrics import CONTENT_TYPE, GatewayMetrics
from asya_gateway.pausing import parse_pause_request, parse_resume_body
from asya_gateway.reports import parse_batch
from asya_gateway.service import Gateway, count_finished
from asya_gateway.sse import TaskStream, parse_last_event_id
from asya_gateway.store.base import StoreError
from asya_gateway.streaming import BoundedStreamingResponse
from asya_gateway.tasks import Task, TaskStatus
from asya_shared import names

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


# ------------------------------------------------------------------------------ public


def public_app(gateway: Gateway, *, sump_store: str | None = None) -> Starlette:
    """`sump_store`: the URL of x-sump's result store (ASYA_SUMP_STORE), for /v1/sump and the
    view's sump page; None leaves them saying that none is configured. Raises ValueError for
    a URL no store accepts."""
    api = _PublicApi(gateway)
    sump_view = sump.Sump.from_url(gateway, sump_store)
    routes: list[BaseRoute] = [
        Route("/v1/tasks", api.submit, methods=["POST"]),
        Route("/v1/tasks", api.list_tasks, methods=["GET"]),
        Route("/v1/tasks/{task_id}", api.get_task, methods=["GET"]),
        Route("/v1/tasks/{task_id}", api.cancel_task, methods=["DELETE"]),
        Route("/v1/tasks/{task_id}/events", api.events, methods=["GET"]),
        Route("/v1/tasks/{task_id}/resume", api.resume_task, methods=["POST"]),
        Route("/healthz", _healthz, methods=["GET"]),
        Route("/readyz", api.readyz, methods=["GET"]),
        Route("/metrics", api.metrics, methods=["GET"]),
    ]
    doors = [module.front_door(gateway) for module in (openai_api, a2a_agent, mcp_tools)]
    routes += sump.routes(sump_view)
    app = _app([*routes, *(route for door in doors for route in door.routes)], gateway.metrics)
    ui.install(app, gateway, sump_view)  # the web view at /ui (ui.py)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        del app
        try:
            async with running(doors):
                yield
        finally:
            await sump_view.close()

    app.router.lifespan_context = lifespan
    return app


class _PublicApi:
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    async def submit(self, request: Request) -> Response:
        gw = self.gw
        tenant = _tenant(gw, request)
        submission = gw.parse(await read_body(request, gw.transport.max_message_bytes))
        task, created = await gw.submit(submission, tenant)
        return _task_response(task, 201 if created else 200)

    async def list_tasks(self, request: Request) -> Response:
        gw = self.gw
        tenant = _tenant(gw, request)
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
        tenant = _tenant(self.gw, request)
        return JSONResponse((await self.gw.get(request.path_params["task_id"], tenant)).to_json())

    async def cancel_task(self, request: Request) -> Response:
        tenant = _tenant(self.gw, request)
        task = await self.gw.cancel(request.path_params["task_id"], tenant)
        return JSONResponse(task.to_json())

    async def resume_task(self, request: Request) -> Response:
        gw = self.gw
        tenant = _tenant(gw, request)
        body = parse_resume_body(await read_body(request, gw.transport.max_message_bytes))
        task = await gw.resume(request.path_params["task_id"], tenant, body)
        return JSONResponse(task.to_json())

    async def events(self, request: Request) -> Response:
        gw = self.gw
        task_id = request.path_params["task_id"]
        stream = await gw.follow(
            task_id,
            _tenant(gw, request),
            last_event_id=parse_last_event_id(request.headers.get("last-event-id")),
        )
        return BoundedStreamingResponse(
            _follow(stream, gw.metrics, task_id),
            send_timeout=gw.send_timeout_s,
            on_close=stream.close,
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
        count_finished(gateway.metrics, events)
        canceled, next_cursor = await gateway.store.canceled_since(cursor)
        gateway.metrics.report_batches.inc()
        gateway.metrics.reports.inc(len(batch))
        return JSONResponse(
            {"accepted": len(batch), "canceled": canceled, "canceled_cursor": next_cursor}
        )

    async def pauses(request: Request) -> Response:
        pause = parse_pause_request(await request.body())
        task = await gateway.pause(pause)
        return JSONResponse({"task": task.to_json()})

    routes = [
        Route("/internal/v1/reports", reports, methods=["POST"]),
        Route("/internal/v1/pauses", pauses, methods=["POST"]),
        Route("/healthz", _healthz, methods=["GET"]),
    ]
    return _app(routes, gateway.metrics)


# ------------------------------------------------------------------------------ shared


def _app(routes: Sequence[BaseRoute], metrics: GatewayMetrics) -> Starlette:
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


def _tenant(gw: Gateway, request: Request) -> str:
    return gw.tenant_of(request.headers.get("authorization"))


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


def _task_response(task: Task, status: int) -> Response:
    return JSONResponse(
        task.to_json(), status_code=status, headers={"Location": f"/v1/tasks/{task.id}"}
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
