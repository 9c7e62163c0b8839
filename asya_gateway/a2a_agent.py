"""The A2A front door (protocol 1.0, JSON-RPC binding): flows as the skills of one agent.

    GET  /.well-known/agent-card.json   the card: one skill per flow, public (no key)
    POST /a2a                           JSON-RPC: SendMessage, SendStreamingMessage,
                                        GetTask, CancelTask, SubscribeToTask

The SDK's dispatcher parses JSON-RPC and writes the answers (SSE for the streaming
methods); `GatewayRequestHandler` answers each method through service.Gateway, so an A2A
task is a gateway task: the same id, the same store, the same tenant. Nothing about a task
is kept in memory, so any replica answers GetTask or SubscribeToTask for a task another
one started. The SDK's DefaultRequestHandler is not used: it keeps tasks in its own store
and runs an executor in process, where the gateway has sidecars and a shared store.

What maps to what (states, parts, artifacts, errors) is decided in a2a_mapping.py.

The key is checked before the dispatcher sees the request: without a valid one the answer
is HTTP 401 with `WWW-Authenticate: Bearer` (not a JSON-RPC error), like every route of
the public port.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from typing import TypeVar

from a2a.server.context import ServerCallContext
from a2a.server.events import Event
from a2a.server.request_handlers import RequestHandler, validate_request_params
from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.server.routes import DefaultServerCallContextBuilder
from a2a.server.routes.jsonrpc_dispatcher import JsonRpcDispatcher
from a2a.types import (
    AgentCard,
    CancelTaskRequest,
    DeleteTaskPushNotificationConfigRequest,
    GetExtendedAgentCardRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    ListTaskPushNotificationConfigsRequest,
    ListTaskPushNotificationConfigsResponse,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    SendMessageRequest,
    SubscribeToTaskRequest,
    Task,
    TaskPushNotificationConfig,
)
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH
from a2a.utils.errors import (
    ExtendedAgentCardNotConfiguredError,
    InternalError,
    PushNotificationNotSupportedError,
    TaskNotCancelableError,
    UnsupportedOperationError,
)
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message as AsgiMessage

from asya_gateway import a2a_mapping as mapping
from asya_gateway.bodies import read_body
from asya_gateway.doors import FrontDoor, asya_version
from asya_gateway.errors import ApiError
from asya_gateway.service import Gateway
from asya_gateway.sse import TaskStream, Update
from asya_gateway.store.base import StoreError
from asya_gateway.tasks import Task as GatewayTask
from asya_gateway.tasks import TaskStatus

__all__ = ["JSONRPC_PATH", "GatewayRequestHandler", "front_door"]

JSONRPC_PATH = "/a2a"
# Where the rpc route leaves the caller's tenant for the context builder.
_TENANT_SCOPE_KEY = "asya.tenant"
_TENANT_STATE_KEY = "asya_tenant"

T = TypeVar("T")


def front_door(gateway: Gateway) -> FrontDoor:
    dispatcher = JsonRpcDispatcher(
        request_handler=GatewayRequestHandler(gateway), context_builder=_ContextBuilder()
    )
    version = asya_version("0.0.0")

    async def card(request: Request) -> Response:
        # The URL from the request, so the card is right behind whatever host and port
        # (or proxy, with uvicorn's forwarded headers) the client reached.
        base = str(request.base_url).rstrip("/")
        made = mapping.agent_card(
            rpc_url=base + JSONRPC_PATH,
            flows=gateway.flows.values(),
            version=version,
            auth_required=gateway.keys is not None,
        )
        return JSONResponse(agent_card_to_dict(made))

    async def rpc(request: Request) -> Response:
        request.scope[_TENANT_SCOPE_KEY] = gateway.tenant_of(request.headers.get("authorization"))
        body = await read_body(request, gateway.transport.max_message_bytes)
        return await dispatcher.handle_requests(_replaying(request, body))

    return FrontDoor(
        routes=[
            Route(AGENT_CARD_WELL_KNOWN_PATH, card, methods=["GET"]),
            Route(JSONRPC_PATH, rpc, methods=["POST"]),
        ]
    )


def _replaying(request: Request, body: bytes) -> Request:
    """The request again, its body served from `body` (the original stream is consumed).
    After the body, receiving goes to the server again: a streamed answer listens there
    for the client's disconnect."""
    pending = [body]

    async def receive() -> AsgiMessage:
        if pending:
            return {"type": "http.request", "body": pending.pop(), "more_body": False}
        return await request.receive()

    return Request(request.scope, receive)


class _ContextBuilder(DefaultServerCallContextBuilder):
    """The SDK's call context, plus the tenant the rpc route authenticated."""

    def build(self, request: Request) -> ServerCallContext:
        context = super().build(request)
        context.state[_TENANT_STATE_KEY] = request.scope[_TENANT_SCOPE_KEY]
        return context


def _tenant(context: ServerCallContext) -> str:
    tenant = context.state.get(_TENANT_STATE_KEY)
    if not isinstance(tenant, str):
        # Only reachable when the handler is mounted without front_door's rpc route.
        raise InternalError("the A2A request reached the gateway without a checked tenant")
    return tenant


async def _gateway_call(call: Awaitable[T]) -> T:
    """`call`, with the gateway's errors as the A2A errors a client can act on."""
    try:
        return await call
    except ApiError as exc:
        raise mapping.protocol_error(exc) from None
    except StoreError as exc:
        raise InternalError(f"the task store cannot answer now ({exc}); try again later") from None


class GatewayRequestHandler(RequestHandler):
    """The A2A methods, answered through the gateway (see the module docstring)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    # ---------------------------------------------------------------------------- messages

    @validate_request_params
    async def on_message_send(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> Task | Message:
        """Start a task; answer it once it ended, or at once when the client asked to
        return immediately (non-blocking)."""
        tenant = _tenant(context)
        task, context_id, stream = await self._start(params, tenant)
        try:
            if not params.configuration.return_immediately and not task.terminal:
                task = await self._wait(stream, task.id, tenant)
        finally:
            await stream.close()
        return mapping.a2a_task(task.to_json(), context_id)

    @validate_request_params
    async def on_message_send_stream(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event]:
        tenant = _tenant(context)
        task, context_id, stream = await self._start(params, tenant)
        async for event in self._follow(stream, task.id, tenant, context_id):
            yield event

    @validate_request_params
    async def on_subscribe_to_task(
        self, params: SubscribeToTaskRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event]:
        tenant = _tenant(context)
        task = await _gateway_call(self.gw.get(params.id, tenant))
        if task.terminal:
            raise UnsupportedOperationError(
                f"task {task.id!r} already ended ({task.status}); read it with GetTask"
            )
        context_id = mapping.context_id_of(task.id, task.headers)
        stream = await _gateway_call(self.gw.follow(task.id, tenant))
        async for event in self._follow(stream, task.id, tenant, context_id):
            yield event

    async def _start(
        self, params: SendMessageRequest, tenant: str
    ) -> tuple[GatewayTask, str, TaskStream]:
        """Submit the message's task, its stream subscribed first (close it always)."""
        message = params.message
        if message.task_id:
            return await self._resume(message, tenant)
        flow = mapping.choose_flow(mapping.requested_skill(params), self.gw.flows)
        payload = mapping.payload_of(message)
        context_id = message.context_id or str(uuid.uuid4())

        async def submit() -> tuple[GatewayTask, TaskStream]:
            submission = self.gw.flow_submission(flow, payload)
            submission = dataclasses.replace(
                submission, headers={**submission.headers, mapping.CONTEXT_HEADER: context_id}
            )
            task, _, stream = await self.gw.submit_and_follow(submission, tenant)
            return task, stream

        task, stream = await _gateway_call(submit())
        return task, context_id, stream

    async def _resume(self, message: Message, tenant: str) -> tuple[GatewayTask, str, TaskStream]:
        """A message for an existing task resumes it, when it is paused, with the message's
        input; then the task is followed as a new one would be (close the stream)."""
        task_id = message.task_id
        task = await _gateway_call(self.gw.get(task_id, tenant))
        if task.status is not TaskStatus.PAUSED:
            raise UnsupportedOperationError(
                f"task {task_id!r} is {task.status}; a message can only continue a paused "
                "task. Send a message without taskId to start a new task"
            )
        input = mapping.resume_input(message, task.pause or {})
        resumed = await _gateway_call(self.gw.resume(task_id, tenant, input))
        stream = await _gateway_call(self.gw.follow(task_id, tenant))
        return resumed, mapping.context_id_of(task_id, task.headers), stream

    async def _wait(self, stream: TaskStream, task_id: str, tenant: str) -> GatewayTask:
        """The task once it ended or paused for input (an A2A client then answers it), or
        as it stands when the gateway stops first."""
        async for update in stream.updates():
            if update is not None and (update.terminal or _pauses(update)):
                break
        return await _gateway_call(self.gw.get(task_id, tenant))

    async def _follow(
        self, stream: TaskStream, task_id: str, tenant: str, context_id: str
    ) -> AsyncIterator[Event]:
        """The task's stream in A2A events; it ends after the final status update (or
        earlier, when the gateway stops: the client subscribes again). Closes `stream`."""
        events = mapping.TaskEvents(task_id, context_id)
        opened = False
        try:
            async for update in stream.updates():
                if update is None:  # keep-alive: sse-starlette sends its own pings
                    continue
                if not opened:
                    opened = True
                    yield events.opening(update.data)
                    if update.terminal:
                        return
                elif update.kind != "status":
                    yield events.fly(update.data)
                elif update.terminal:
                    ended = await _gateway_call(self.gw.get(task_id, tenant))
                    for event in events.final(ended.to_json()):
                        yield event
                    return
                else:
                    yield events.status(update.data)
                    if _pauses(update):
                        return  # input-required interrupts the stream; a message resumes it
        finally:
            await stream.close()

    # ------------------------------------------------------------------------------- tasks

    @validate_request_params
    async def on_get_task(self, params: GetTaskRequest, context: ServerCallContext) -> Task:
        task = await _gateway_call(self.gw.get(params.id, _tenant(context)))
        return mapping.a2a_task(task.to_json(), mapping.context_id_of(task.id, task.headers))

    @validate_request_params
    async def on_cancel_task(self, params: CancelTaskRequest, context: ServerCallContext) -> Task:
        try:
            task = await self.gw.cancel(params.id, _tenant(context))
        except ApiError as exc:
            if exc.status == 409:
                raise TaskNotCancelableError(exc.message) from None
            raise mapping.protocol_error(exc) from None
        except StoreError as exc:
            raise InternalError(
                f"the task store cannot answer now ({exc}); try again later"
            ) from None
        return mapping.a2a_task(task.to_json(), mapping.context_id_of(task.id, task.headers))

    async def on_list_tasks(
        self, params: ListTasksRequest, context: ServerCallContext
    ) -> ListTasksResponse:
        del params, context
        raise UnsupportedOperationError(
            "ListTasks is not offered over A2A; list tasks with GET /v1/tasks"
        )

    # ---------------------------------------------------------------- not offered (say so)

    async def on_create_task_push_notification_config(
        self, params: TaskPushNotificationConfig, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        raise _no_push()

    async def on_get_task_push_notification_config(
        self, params: GetTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        raise _no_push()

    async def on_list_task_push_notification_configs(
        self, params: ListTaskPushNotificationConfigsRequest, context: ServerCallContext
    ) -> ListTaskPushNotificationConfigsResponse:
        raise _no_push()

    async def on_delete_task_push_notification_config(
        self, params: DeleteTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> None:
        raise _no_push()

    async def on_get_extended_agent_card(
        self, params: GetExtendedAgentCardRequest, context: ServerCallContext
    ) -> AgentCard:
        raise ExtendedAgentCardNotConfiguredError(
            f"this agent has no extended card; its card is {AGENT_CARD_WELL_KNOWN_PATH}"
        )


def _pauses(update: Update) -> bool:
    """A status update that leaves the task waiting for a person (input-required)."""
    return update.kind == "status" and update.data.get("status") == "paused"


def _no_push() -> PushNotificationNotSupportedError:
    return PushNotificationNotSupportedError(
        "push notifications are not offered; follow a task with SendStreamingMessage or "
        "SubscribeToTask, or poll it with GetTask"
    )
