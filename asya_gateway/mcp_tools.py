"""The gateway's named flows as MCP tools, over Streamable HTTP at `/mcp` (doors.py).

    tools/list   one tool per flow: its name, its description, its input schema
    tools/call   submit a task to the flow with the arguments as payload, follow it, and
                 answer its result; meanwhile `notifications/progress` as it moves from
                 actor to actor (when the call asked for progress) and each FLY event as a
                 `notifications/message` (level info, logger "asya.fly")

What a call answers:

    succeeded           structuredContent = the result (an object; any other value as
                        {"result": value}) and its JSON as one text block
    failed / canceled   isError, the task's error message, reason and id as text
    invalid arguments   isError, the message naming the failing JSON path; no task made
    unknown tool        isError, naming the tools there are
    no end in time      isError, naming the task to follow with GET /v1/tasks/<id>; the task
                        itself goes on. "In time" is the flow's timeout, or UNTIMED_WAIT_S for
                        a flow without one

Errors are tool results rather than JSON-RPC errors because the MCP spec asks for them so:
a model reads the message and can correct its arguments. Every result's `_meta` carries the
task's id (`asya/task_id`) once there is a task.

The official SDK serves the protocol. Its session manager runs stateless: every POST is
complete in itself, so gateway replicas need no session affinity, and a call's
notifications ride the response stream of that call. A `GET /mcp` (a standalone stream)
therefore has nothing to carry.

Auth happens before the SDK sees the request: with keys configured, a request without a
valid `Authorization: Bearer <key>` is answered 401 in the gateway's error shape. The tool
handler reads the same header again from the request the SDK hands it (the HTTP request of
the message being handled) to find the caller's tenant: a contextvar set around the SDK call
would not reach the handler, which runs in a task the SDK started elsewhere.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import mcp.types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.connection import allowed_log_levels
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from asya_gateway.doors import FrontDoor, asya_version
from asya_gateway.errors import ApiError, error_response
from asya_gateway.flows import Flow
from asya_gateway.service import Gateway
from asya_gateway.sse import TaskStream, Update
from asya_gateway.store.base import StoreError
from asya_gateway.tasks import Task, TaskStatus

__all__ = [
    "FLY_LOGGER",
    "MCP_PATH",
    "TASK_ID_META",
    "UNTIMED_WAIT_S",
    "call_outcome",
    "front_door",
    "payload_of",
    "progress_step",
    "tool_of",
]

MCP_PATH = "/mcp"
# How long a call waits for a flow that names no timeout. Read when the door is built, so a
# test may lower it before it starts a gateway.
UNTIMED_WAIT_S = 600.0
FLY_LOGGER = "asya.fly"
TASK_ID_META = "asya/task_id"
# The key a non-object input schema is wrapped under (tool_of): MCP arguments are an object.
PAYLOAD_ARGUMENT = "payload"

Context = ServerRequestContext[dict[str, Any], Any]


# ------------------------------------------------------------------------------ decisions


def tool_of(flow: Flow) -> types.Tool:
    """The MCP tool of a flow. MCP needs an object schema: a flow without a schema takes any
    object; a schema without a `type` gets `"type": "object"` (arguments are always an
    object, so that narrows nothing); a schema of another type is wrapped as the one
    argument `payload` (see payload_of)."""
    return types.Tool(
        name=flow.name,
        description=flow.description or None,
        input_schema=_input_schema(flow.input_schema),
    )


def _input_schema(schema: Mapping[str, Any] | None) -> dict[str, Any]:
    if schema is None:
        return {"type": "object"}
    if _wraps(schema):
        return {
            "type": "object",
            "properties": {PAYLOAD_ARGUMENT: dict(schema)},
            "required": [PAYLOAD_ARGUMENT],
            "additionalProperties": False,
        }
    return {**schema, "type": "object"}


def _wraps(schema: Mapping[str, Any] | None) -> bool:
    return schema is not None and "type" in schema and schema["type"] != "object"


def payload_of(flow: Flow, arguments: Mapping[str, Any] | None) -> Any:
    """The task payload of a tool call's arguments: the arguments themselves, or the
    `payload` argument for a flow whose schema is not an object's."""
    given = dict(arguments or {})
    if _wraps(flow.input_schema):
        if set(given) != {PAYLOAD_ARGUMENT}:
            raise ApiError(
                400,
                "invalid_payload",
                f"tool {flow.name!r} takes exactly one argument, {PAYLOAD_ARGUMENT!r} (got "
                f"{', '.join(map(repr, sorted(given))) or 'none'}); see its input schema",
            )
        return given[PAYLOAD_ARGUMENT]
    return given


def progress_step(data: Mapping[str, Any], sent: float | None) -> tuple[float, str] | None:
    """The progress notification a status update calls for, as (progress, message), or None.

    MCP asks each notification's progress to rise above the last one's, so a status whose
    progress does not (a retry, a pause, a failure) is not sent; the result says how it
    ended. Nothing is sent while the task is still pending: nothing moved yet."""
    status = str(data.get("status", ""))
    if status == TaskStatus.PENDING:
        return None
    progress = float(data.get("progress") or 0.0)
    if sent is not None and progress <= sent:
        return None
    actor = data.get("actor")
    in_flight = status in (TaskStatus.RUNNING, TaskStatus.PAUSED) and actor
    return progress, f"{status} at {actor}" if in_flight else status


def call_outcome(task: Task) -> types.CallToolResult:
    """The answer to a call whose task ended."""
    meta = {TASK_ID_META: task.id}
    if task.status == TaskStatus.SUCCEEDED:
        structured = task.result if isinstance(task.result, dict) else {"result": task.result}
        return types.CallToolResult(
            content=[types.TextContent(text=json.dumps(task.result, ensure_ascii=False))],
            structured_content=structured,
            meta=meta,
        )
    error: Mapping[str, Any] = task.error or {}
    message = str(error.get("message") or "").strip()
    kind = str(error.get("type") or "").strip()
    what = f"{kind}: {message}" if kind and message else message or kind
    text = f"task {task.id} {task.status}"
    if task.reason:
        text += f" (reason {task.reason})"
    if task.actor:
        text += f" at {task.actor}"
    if what:
        text += f": {what}"
    return _error(f"{text}. GET /v1/tasks/{task.id} shows the whole task", task_id=task.id)


def _still_running(task: Task, why: str) -> types.CallToolResult:
    return _error(
        f"task {task.id} is still {task.status} ({why}); it goes on: follow it with "
        f"GET /v1/tasks/{task.id}, or cancel it with DELETE /v1/tasks/{task.id}",
        task_id=task.id,
    )


def _error(message: str, *, task_id: str | None = None) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(text=message)],
        is_error=True,
        meta=None if task_id is None else {TASK_ID_META: task_id},
    )


# ------------------------------------------------------------------------------ the tools


@dataclass
class _Tools:
    """The MCP handlers, acting through the gateway like every other door."""

    gw: Gateway
    untimed_wait_s: float

    async def list_tools(
        self, ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        del ctx, params  # every caller sees every flow; the list is short: one page
        return types.ListToolsResult(tools=[tool_of(flow) for flow in self.gw.flows.values()])

    async def set_logging_level(
        self, ctx: Context, params: types.SetLevelRequestParams
    ) -> types.EmptyResult:
        # Declares the logging capability (FLY events are log messages). A stateless server
        # has nowhere to keep a level between requests, so it is accepted and not kept.
        del ctx, params
        return types.EmptyResult()

    async def call_tool(
        self, ctx: Context, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        flow = self.gw.flows.get(params.name)
        if flow is None:
            known = ", ".join(sorted(self.gw.flows)) or "none: this gateway has no flows"
            return _error(
                f"there is no tool {params.name!r}; the tools are this gateway's flows "
                f"({known}); tools/list shows them"
            )
        try:
            tenant = self.gw.tenant_of(_authorization(ctx))
            submission = self.gw.flow_submission(flow.name, payload_of(flow, params.arguments))
            task, _, stream = await self.gw.submit_and_follow(submission, tenant)
        except ApiError as exc:
            return _error(exc.message)
        except StoreError as exc:
            return _error(f"the task store cannot take the task now ({exc}); try again later")
        return await self._follow(ctx, task, stream, tenant, flow.timeout or self.untimed_wait_s)

    async def _follow(
        self, ctx: Context, task: Task, stream: TaskStream, tenant: str, wait_s: float
    ) -> types.CallToolResult:
        """Relay the task's updates until it ends or `wait_s` passes; closes `stream`."""
        relay = _Relay(ctx)
        try:
            with anyio.move_on_after(wait_s) as waiting:
                # One update at a time, relayed before the next is taken: a client that does
                # not read holds this loop, and the stream ends itself at MAX_BACKLOG.
                async for update in stream.updates():
                    if update is not None:  # None: a keep-alive tick; the SDK pings by itself
                        await relay.send(update)
            final = await self.gw.get(task.id, tenant)
        except (ApiError, StoreError) as exc:
            return _still_running(task, f"following it failed: {exc}")
        finally:
            # Shielded: a cancelled call (the client went away) still lets go of the store
            # subscription.
            with anyio.CancelScope(shield=True):
                await stream.close()
        if final.terminal:
            return call_outcome(final)
        if waiting.cancelled_caught:
            return _still_running(final, f"it did not end within {wait_s:g} s")
        why = "the gateway is stopping" if self.gw.stopping.is_set() else "its events fell behind"
        return _still_running(final, f"this call stopped following it: {why}")


class _Relay:
    """Tells the caller of one call what its task does: progress, and FLY events as logs,
    on the response stream of that call."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._sent: float | None = None
        # Since 2026-07-28 a client opts in to log messages per request; before, always on.
        self._logs = "info" in allowed_log_levels(ctx.session.protocol_version, ctx.meta)

    async def send(self, update: Update) -> None:
        if update.kind == "status":
            step = progress_step(update.data, self._sent)
            if step is not None:
                self._sent, message = step
                # A no-op unless the call carried a progress token.
                await self._ctx.session.report_progress(self._sent, 1.0, message)
        elif self._logs:
            await self._ctx.session.send_notification(
                types.LoggingMessageNotification(
                    params=types.LoggingMessageNotificationParams(
                        level="info", logger=FLY_LOGGER, data=update.data
                    )
                ),
                related_request_id=self._ctx.request_id,
            )


def _authorization(ctx: Context) -> str | None:
    request = ctx.request
    return request.headers.get("authorization") if isinstance(request, Request) else None


# ----------------------------------------------------------------------------- the door


class _Endpoint:
    """The ASGI app at /mcp: the API key is checked here, then the SDK's session manager
    (present while the door's lifespan runs) serves the request."""

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.manager: StreamableHTTPSessionManager | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            self.gw.tenant_of(Request(scope).headers.get("authorization"))
        except ApiError as exc:
            await exc.response()(scope, receive, send)
            return
        if self.manager is None:
            await error_response(
                503, "not_ready", "the MCP endpoint is not serving (the gateway is starting or "
                "stopping); try again in a moment",
            )(scope, receive, send)  # fmt: skip
            return
        if scope.get("method") != "GET":
            # A call ends by itself when the gateway stops (its task stream does).
            await self.manager.handle_request(scope, receive, send)
            return
        # A GET is a standalone stream; stateless, nothing is ever sent on it, and it would
        # hold a graceful stop up until the client left. It ends when the gateway stops.
        response = _Tracked(send)
        async with anyio.create_task_group() as group:

            async def end_on_stop() -> None:
                await self.gw.stopping.wait()
                group.cancel_scope.cancel()

            group.start_soon(end_on_stop)
            await self.manager.handle_request(scope, receive, response.send)
            group.cancel_scope.cancel()
        if not response.started:
            await error_response(
                503, "stopping", "the gateway is stopping; connect to another replica or retry"
            )(scope, receive, send)
        elif not response.ended:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


class _Tracked:
    """An ASGI `send` that remembers how far the response got."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False
        self.ended = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self.ended = True
        await self._send(message)


def front_door(gateway: Gateway, *, untimed_wait_s: float | None = None) -> FrontDoor:
    """`/mcp`, serving the flows of `gateway` as tools. `untimed_wait_s` bounds a call to a
    flow without a timeout (default UNTIMED_WAIT_S)."""
    tools = _Tools(gateway, UNTIMED_WAIT_S if untimed_wait_s is None else untimed_wait_s)
    server: Server[dict[str, Any]] = Server(
        "asya-gateway",
        version=asya_version(""),
        instructions="Each tool runs one of this gateway's flows (an Asya pipeline) and "
        "answers its result.",
        on_list_tools=tools.list_tools,
        on_call_tool=tools.call_tool,
    )
    # Registered after construction: the constructor warns that logging is deprecated in
    # the 2026 protocol, which still lets a request opt in to log messages (see _Relay).
    server.add_request_handler(
        "logging/setLevel", types.SetLevelRequestParams, tools.set_logging_level
    )
    endpoint = _Endpoint(gateway)

    @contextlib.asynccontextmanager
    async def serving() -> AsyncIterator[None]:
        # A manager runs once; each start of the app (a test may start one twice) gets its own.
        manager = StreamableHTTPSessionManager(app=server, stateless=True)
        async with manager.run():
            endpoint.manager = manager
            try:
                yield
            finally:
                endpoint.manager = None

    return FrontDoor(routes=[Route(MCP_PATH, endpoint)], lifespan=serving)
