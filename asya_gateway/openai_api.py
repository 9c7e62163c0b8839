"""The OpenAI-compatible front door: the gateway's flows as models, so any OpenAI client
(the official SDKs, LangChain, curl) can run a flow as a chat completion.

    GET  /v1/models               one model per flow
    GET  /v1/models/{model}       one of them (404 model_not_found otherwise)
    POST /v1/chat/completions     run the flow named by `model` on the request, answer its
                                  result as a chat.completion (or, with `stream: true`, as
                                  chat.completion.chunk events)

A completion is a task: it is submitted and followed through service.Gateway like any
other, with the caller's tenant, so GET /v1/tasks/<id> shows it (the id is in the
`X-Asya-Task-Id` header and in the completion's id, `chatcmpl-<task id>`). What the flow
gets and how its answer is read is decided in openai_shapes.py; this module only reads the
request, runs the task and writes the answer.

A completion waits for its task at most the flow's timeout (plus a moment for the sidecar
to report the timeout failure itself), or DEFAULT_WAIT_S for a flow without one; then it
answers 504 and the task goes on. Every error is in OpenAI's shape
(`{"error": {"message", "type", "param", "code"}}`), so clients raise their usual
exceptions; errors that a retry would only repeat (a failed flow, a timeout) carry
`x-should-retry: false`, since the official clients otherwise resubmit on 5xx and 409,
which would run the flow again as a new task.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from asya_gateway.bodies import read_body
from asya_gateway.doors import FrontDoor
from asya_gateway.errors import ApiError
from asya_gateway.flows import Flow
from asya_gateway.openai_shapes import (
    DONE,
    ChatRequest,
    OpenAIError,
    chat_completion,
    completion_chunk,
    completion_text,
    failure_of,
    from_api_error,
    model_list,
    model_object,
    parse_chat_request,
    rest_of,
    sse_data,
    timed_out,
    token_text,
    unfinished,
    unknown_model,
    usage_chunk,
    usage_of,
)
from asya_gateway.service import Gateway
from asya_gateway.sse import KEEPALIVE, TaskStream
from asya_gateway.store.base import StoreError
from asya_gateway.streaming import BoundedStreamingResponse
from asya_gateway.tasks import Task, TaskStatus

__all__ = ["DEFAULT_WAIT_S", "TIMEOUT_GRACE_S", "front_door"]

log = logging.getLogger("asya.gateway")

# How long a completion waits for a flow that sets no timeout. As long as the official
# clients wait by default (10 minutes); a flow that takes longer should set its timeout.
DEFAULT_WAIT_S = 600.0
# Beyond a flow's timeout: the sidecar fails an overdue task with reason Timeout and
# reports it within about a report interval, and that answer says more than a bare 504.
TIMEOUT_GRACE_S = 2.0
TASK_ID_HEADER = "X-Asya-Task-Id"

Handler = Callable[[Request], Awaitable[Response]]


def front_door(gateway: Gateway, *, default_wait_s: float = DEFAULT_WAIT_S) -> FrontDoor:
    door = _OpenAIDoor(gateway, default_wait_s)
    return FrontDoor(
        routes=[
            Route("/v1/models", _openai_errors(door.list_models), methods=["GET"]),
            Route("/v1/models/{model}", _openai_errors(door.get_model), methods=["GET"]),
            Route("/v1/chat/completions", _openai_errors(door.chat_completions), methods=["POST"]),
        ]
    )


def _openai_errors(handler: Handler) -> Handler:
    """Answer every error of `handler` in OpenAI's shape (the app's own handlers would
    answer the gateway's shape, which OpenAI clients do not read)."""

    @functools.wraps(handler)
    async def answered(request: Request) -> Response:
        try:
            return await handler(request)
        except OpenAIError as exc:
            return _error_response(exc)
        except ApiError as exc:
            return _error_response(from_api_error(exc))
        except StoreError as exc:
            log.warning("%s %s: store failed: %s", request.method, request.url.path, exc)
            return _error_response(_store_unavailable(exc))

    return answered


def _error_response(exc: OpenAIError) -> Response:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def _store_unavailable(exc: StoreError) -> OpenAIError:
    return OpenAIError(
        503,
        f"the task store cannot answer now ({exc}); try again later",
        code="store_unavailable",
    )


class _OpenAIDoor:
    def __init__(self, gateway: Gateway, default_wait_s: float) -> None:
        self.gw = gateway
        self.default_wait_s = default_wait_s
        # Flows have no creation time of their own; they are as old as this gateway's
        # reading of them, and the value stays the same between calls.
        self.models_created = _unix(gateway.clock())

    # ----------------------------------------------------------------------- models

    async def list_models(self, request: Request) -> Response:
        self.gw.tenant_of(request.headers.get("authorization"))
        return JSONResponse(model_list(self.gw.flows, self.models_created))

    async def get_model(self, request: Request) -> Response:
        self.gw.tenant_of(request.headers.get("authorization"))
        model = request.path_params["model"]
        if model not in self.gw.flows:
            raise unknown_model(model, self.gw.flows)
        return JSONResponse(model_object(model, self.models_created))

    # ------------------------------------------------------------------ completions

    async def chat_completions(self, request: Request) -> Response:
        gw = self.gw
        tenant = gw.tenant_of(request.headers.get("authorization"))
        chat = parse_chat_request(await read_body(request, gw.transport.max_message_bytes))
        flow = gw.flows.get(chat.model)
        if flow is None:
            raise unknown_model(chat.model, gw.flows)
        # Followed from before it is published: no token of its first actor is missed.
        task, _, stream = await gw.submit_and_follow(
            gw.flow_submission(flow.name, chat.payload), tenant
        )
        wait_s = self._wait_s(flow)
        deadline = asyncio.get_running_loop().time() + wait_s
        created = _unix(gw.clock())
        if chat.stream:
            return BoundedStreamingResponse(
                self._chunks(chat, stream, task.id, tenant, created, deadline, wait_s),
                send_timeout=gw.send_timeout_s,
                headers={TASK_ID_HEADER: task.id},
                on_close=stream.close,
            )
        try:
            progress = self._progress(stream, task.id, tenant, deadline, wait_s)
            async with contextlib.aclosing(progress):
                async for item in progress:
                    if isinstance(item, Task):
                        task = item
        finally:
            await stream.close()
        if task.status is not TaskStatus.SUCCEEDED:
            raise failure_of(task)
        answer = chat_completion(
            task.id, chat.model, created, completion_text(task.result), usage_of(task.result)
        )
        return JSONResponse(answer, headers={TASK_ID_HEADER: task.id})

    def _wait_s(self, flow: Flow) -> float:
        if flow.timeout is None:
            return self.default_wait_s
        return flow.timeout + TIMEOUT_GRACE_S

    async def _chunks(
        self,
        chat: ChatRequest,
        stream: TaskStream,
        task_id: str,
        tenant: str,
        created: int,
        deadline: float,
        wait_s: float,
    ) -> AsyncIterator[bytes]:
        """The streamed answer. The response closes `stream` however it ends, even when
        this body never starts (on_close)."""

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            return sse_data(
                completion_chunk(
                    task_id,
                    chat.model,
                    created,
                    delta,
                    finish_reason=finish_reason,
                    include_usage=chat.include_usage,
                )
            )

        try:
            yield chunk({"role": "assistant", "content": ""})
            task: Task | None = None
            streamed: list[str] = []
            progress = self._progress(stream, task_id, tenant, deadline, wait_s)
            async with contextlib.aclosing(progress):
                async for item in progress:
                    if item is None:
                        yield KEEPALIVE  # a comment: proxies keep the line open, clients skip it
                    elif isinstance(item, str):
                        streamed.append(item)
                        yield chunk({"content": item})
                    else:
                        task = item
            if task is None:  # _progress ends with the task or raises; never, then
                raise unfinished(task_id, "the task's event stream ended early")
            if task.status is not TaskStatus.SUCCEEDED:
                raise failure_of(task)
            # The whole answer when no handler streamed, the tokens that came too late else.
            rest = rest_of(completion_text(task.result), "".join(streamed))
            if rest:
                yield chunk({"content": rest})
            yield chunk({}, "stop")
            if chat.include_usage:
                yield sse_data(usage_chunk(task_id, chat.model, created, usage_of(task.result)))
            yield DONE
        except OpenAIError as exc:
            # The status line is long gone: an error event, which the clients raise.
            yield sse_data(exc.body())
        except ApiError as exc:
            yield sse_data(from_api_error(exc).body())
        except StoreError as exc:
            log.warning("completion of task %s: the store failed: %s", task_id, exc)
            yield sse_data(_store_unavailable(exc).body())

    async def _progress(
        self, stream: TaskStream, task_id: str, tenant: str, deadline: float, wait_s: float
    ) -> AsyncGenerator[str | Task | None, None]:
        """What a completion learns while it waits: each streamed token's text, None at a
        keep-alive tick, and last the task as it ended. OpenAIError 504 at the deadline, 503
        when the wait ends before the task does."""
        updates = stream.updates()
        try:
            while True:
                try:
                    # Around the one await, never around a yield: the timeout must cancel
                    # this wait, not whatever the consumer does with a token.
                    async with asyncio.timeout_at(deadline):
                        update = await anext(updates)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise timed_out(task_id, wait_s) from None
                if update is None:
                    yield None
                elif update.kind == "fly":
                    text = token_text(update.data)
                    if text is not None:
                        yield text
                elif update.terminal:
                    break
        finally:
            closing = getattr(updates, "aclose", None)  # typed as an iterator, made a generator
            if closing is not None:
                await closing()
        task = await self.gw.get(task_id, tenant)
        if task.terminal:
            yield task
        elif self.gw.stopping.is_set():
            raise unfinished(task_id, "the gateway is stopping")
        elif stream.overflowed:
            raise unfinished(task_id, "this completion fell too far behind the task's events")
        else:
            raise unfinished(task_id, "the task's event stream ended early")


def _unix(moment: datetime.datetime) -> int:
    return int(moment.timestamp())
