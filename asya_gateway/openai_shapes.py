"""The OpenAI-compatible door's pure parts: what a chat completion request means for a flow,
and the JSON objects answered for it (models, completions, stream chunks, errors).

No I/O here: openai_api.py reads the request, runs the task and writes what these build, so
every decision about shapes can be tested without a server.

The payload a flow receives is the request body without the fields the door itself acts
on (`model` picks the flow, `stream` and `stream_options` pick how the answer is sent):
`{"messages": [...], "temperature": 0.2, ...}`. Everything else travels on unchanged, so a
flow can read `user`, `max_tokens` or any extra field a client adds (`extra_body`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from asya_gateway.errors import ApiError
from asya_gateway.tasks import Task, TaskStatus

__all__ = [
    "DONE",
    "DOOR_FIELDS",
    "NO_RETRY",
    "ChatRequest",
    "OpenAIError",
    "chat_completion",
    "completion_chunk",
    "completion_id",
    "completion_text",
    "failure_of",
    "from_api_error",
    "model_list",
    "model_object",
    "parse_chat_request",
    "rest_of",
    "sse_data",
    "timed_out",
    "token_text",
    "unfinished",
    "unknown_model",
    "usage_chunk",
    "usage_of",
]

# The request fields the door consumes; every other field is part of the flow's payload.
DOOR_FIELDS = frozenset({"model", "stream", "stream_options"})
# The line that ends a stream, as OpenAI sends it; the official clients stop reading there.
DONE = b"data: [DONE]\n\n"
OWNER = "asya"
_USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")
# OpenAI's error `type` by HTTP status; 5xx answers are all "server_error".
_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
}


class OpenAIError(Exception):
    """An answer other than success, in OpenAI's error shape:
    `{"error": {"message", "type", "param", "code"}}` with an HTTP status (and headers)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None,
        param: str | None = None,
        error_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = error_type or _TYPES.get(status, "server_error")
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def from_api_error(exc: ApiError) -> OpenAIError:
    """The gateway's own error (service.py, auth.py) in OpenAI's shape, same status; a
    payload path at fault becomes `param` ("$.messages" -> "messages")."""
    code = "invalid_api_key" if exc.status == 401 else exc.code
    param = None
    if exc.path is not None:
        param = exc.path.removeprefix("$").removeprefix(".") or None
    return OpenAIError(exc.status, exc.message, code=code, param=param, headers=exc.headers)


def unknown_model(model: str, flows: Iterable[str]) -> OpenAIError:
    known = sorted(flows)
    listing = ", ".join(repr(name) for name in known) if known else "none: the gateway has no flows"
    return OpenAIError(
        404,
        f"the model {model!r} does not exist: models are the gateway's flows ({listing}); "
        "GET /v1/models lists them",
        code="model_not_found",
        param="model",
    )


# ---------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class ChatRequest:
    """A checked `POST /v1/chat/completions` body."""

    model: str
    payload: dict[str, Any]  # what the flow gets: the body minus DOOR_FIELDS
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage


def _bad(message: str, param: str | None = None, code: str = "invalid_request") -> OpenAIError:
    return OpenAIError(400, message, code=code, param=param)


def parse_chat_request(body: bytes) -> ChatRequest:
    """The request in `body`; OpenAIError 400 naming the field that is wrong."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(
            f"the body is not valid JSON ({exc}); send a chat completion request object",
            code="invalid_json",
        ) from None
    if not isinstance(document, dict):
        raise _bad(
            "the body must be a JSON object like "
            '{"model": "<flow>", "messages": [{"role": "user", "content": "..."}]}'
        )
    model = document.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("`model` is required: the name of a flow (GET /v1/models lists them)", "model")
    messages = document.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad(
            '`messages` is required: a non-empty list like [{"role": "user", "content": "..."}]',
            "messages",
        )
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _bad(
                f"messages[{index}] must be an object with a string `role` "
                '(like {"role": "user", "content": "..."})',
                f"messages[{index}]",
            )
    stream = document.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _bad(f"`stream` must be true or false, not {stream!r}", "stream")
    options = document.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, dict):
            raise _bad("`stream_options` must be an object like {\"include_usage\": true}",
                       "stream_options")  # fmt: skip
        include_usage = options.get("include_usage", False) is True
    payload = {key: value for key, value in document.items() if key not in DOOR_FIELDS}
    return ChatRequest(model, payload, stream, include_usage)


# ------------------------------------------------------------------------------ models


def model_object(name: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": OWNER}


def model_list(names: Iterable[str], created: int) -> dict[str, Any]:
    return {"object": "list", "data": [model_object(name, created) for name in sorted(names)]}


# ---------------------------------------------------------------------------- answers


def completion_id(task_id: str) -> str:
    """The completion's id names its task, so a client can find it in GET /v1/tasks/<id>."""
    return f"chatcmpl-{task_id}"


def completion_text(result: Any) -> str:
    """The assistant's answer in a flow's final payload: its `completion` when that is text
    (what asya_callers.openai.Chat writes), a payload that is itself text, else the payload
    as JSON text, so a flow that answers with structured data still answers something."""
    if isinstance(result, dict) and isinstance(result.get("completion"), str):
        text: str = result["completion"]
        return text
    if isinstance(result, str):
        return result
    return json.dumps(result, ensure_ascii=False)


def usage_of(result: Any) -> dict[str, int]:
    """Token counts from the final payload's `usage` (as an OpenAI-compatible server reports
    them to asya_callers.openai); zeros when the flow counted none."""
    usage = result.get("usage") if isinstance(result, dict) else None
    counts = dict.fromkeys(_USAGE_KEYS, 0)
    if isinstance(usage, dict):
        for key in _USAGE_KEYS:
            value = usage.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                counts[key] = value
        if not isinstance(usage.get("total_tokens"), int):
            counts["total_tokens"] = counts["prompt_tokens"] + counts["completion_tokens"]
    return counts


def chat_completion(
    task_id: str, model: str, created: int, content: str, usage: Mapping[str, int]
) -> dict[str, Any]:
    return {
        "id": completion_id(task_id),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                # The flow ran to its end: whatever each model call did, the answer is whole.
                "finish_reason": "stop",
            }
        ],
        "usage": dict(usage),
    }


def completion_chunk(
    task_id: str,
    model: str,
    created: int,
    delta: Mapping[str, Any],
    *,
    finish_reason: str | None = None,
    include_usage: bool = False,
) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": completion_id(task_id),
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [
            {"index": 0, "delta": dict(delta), "logprobs": None, "finish_reason": finish_reason}
        ],
    }
    if include_usage:  # as OpenAI does: null on every chunk but the last
        chunk["usage"] = None
    return chunk


def usage_chunk(task_id: str, model: str, created: int, usage: Mapping[str, int]) -> dict[str, Any]:
    """The extra last chunk `stream_options.include_usage` asks for: no choices, the usage."""
    return {
        "id": completion_id(task_id),
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": dict(usage),
    }


def token_text(event: Any) -> str | None:
    """The text of a FLY event a handler yielded as a streamed token
    (`{"type": "token", "text": "Hel"}`, as the built-in LLM callers do); None for any
    other side event, which a chat client has no place for."""
    if isinstance(event, dict) and event.get("type") == "token":
        text = event.get("text")
        if isinstance(text, str) and text:
            return text
    return None


def rest_of(answer: str, streamed: str) -> str:
    """What a stream still owes of `answer` after the tokens `streamed` so far.

    Tokens are reported in batches by the streaming actor's sidecar, and the terminal status
    by x-sink's, so the last tokens may reach the gateway after the task ended: when what
    was streamed is the beginning of the answer, the rest is sent at the end, and the joined
    deltas are the answer. When it is not (a later actor rewrote `completion`, or several
    actors streamed), nothing is added: the tokens were the stream's answer."""
    if not streamed:
        return answer
    if answer.startswith(streamed):
        return answer[len(streamed) :]
    return ""


def sse_data(document: Mapping[str, Any]) -> bytes:
    """One `data:` event, compact JSON on a single line."""
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


# ----------------------------------------------------------------------------- failures


# A failed or canceled task is an answer, not a hiccup: a retry by the client would run the
# flow again as a new task. The official clients obey this header.
NO_RETRY = {"x-should-retry": "false"}


def failure_of(task: Task) -> OpenAIError:
    """A task that ended without succeeding, as an error: 502 when its flow failed (the
    handler's error type and message, its reason as `code`), 409 when it was canceled."""
    follow = f"GET /v1/tasks/{task.id} shows the task"
    headers = {**NO_RETRY, "X-Asya-Task-Id": task.id}
    if task.status is TaskStatus.CANCELED:
        return OpenAIError(
            409,
            f"task {task.id} of flow {task.flow!r} was canceled before it finished; {follow}",
            code="canceled",
            headers=headers,
        )
    error: dict[str, Any] = dict(task.error or {})
    kind = error.get("type") or "error"
    detail = error.get("message") or "no message"
    where = f" at actor {task.actor!r}" if task.actor else ""
    return OpenAIError(
        502,
        f"flow {task.flow!r} failed{where} (task {task.id}): {kind}: {detail}; {follow}",
        code=task.reason or "failed",
        headers=headers,
    )


def timed_out(task_id: str, waited: float) -> OpenAIError:
    return OpenAIError(
        504,
        f"task {task_id} did not finish within {waited:g}s; it goes on: follow it with "
        f"GET /v1/tasks/{task_id} (or GET /v1/tasks/{task_id}/events)",
        code="timeout",
        headers={**NO_RETRY, "X-Asya-Task-Id": task_id},
    )


def unfinished(task_id: str, why: str) -> OpenAIError:
    """The wait ended before the task did (the gateway is stopping, say)."""
    return OpenAIError(
        503,
        f"{why}; task {task_id} goes on: follow it with GET /v1/tasks/{task_id}",
        code="unavailable",
        headers={**NO_RETRY, "X-Asya-Task-Id": task_id},
    )
