"""The OpenAI-compatible door (asya_gateway/openai_api.py) through the official `openai`
client against a real uvicorn gateway: flows listed as models, a completion answered from
the flow's final payload, a streamed one relaying the FLY tokens, and every error raised as
the client's own exception class. No handler runs: each task is driven by posting the
reports a sidecar would to the internal port, while the client waits for its answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI, AsyncStream
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from asya_gateway.auth import hash_key
from asya_gateway.openai_shapes import (
    OpenAIError,
    completion_text,
    parse_chat_request,
    rest_of,
    usage_of,
)
from asya_gateway.server import GatewayServer
from asya_shared import names, wire
from asya_transports.local import LocalTransport
from tests.gateway.gateway_fixtures import (
    SERVED_STATE,
    ServeGateway,
    receive_envelope,
    report,
    serve_gateway,
)
from tests.support.waiting import eventually

__all__ = ["serve_gateway"]  # fixtures used here

KEY = "test-key-of-acme"
# Generous: only a failing test waits this long.
ANSWER_TIMEOUT_S = 60.0
FLOWS = """
flows:
  - name: chat
    route: [a, b]
    description: Two actors that answer a conversation.
  - name: one-message
    route: [a]
    input_schema:
      type: object
      properties:
        messages: {type: array, maxItems: 1}
  - name: quick
    route: [a]
    timeout: 1s
"""
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello?"}]


class Gateway:
    """A served gateway, the state dir its local transport uses, and helpers to drive it."""

    def __init__(self, server: GatewayServer, state_dir: Path, key: str | None) -> None:
        self.server = server
        self.state_dir = state_dir
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.AsyncClient(timeout=ANSWER_TIMEOUT_S)

    def client(self, api_key: str | None = None) -> AsyncOpenAI:
        # No retries: a test sees the first answer, and a retried 5xx would be a second task.
        return AsyncOpenAI(
            base_url=f"{self.server.url}/v1",
            api_key=api_key or KEY,
            max_retries=0,
            timeout=ANSWER_TIMEOUT_S,
        )

    async def tasks(self) -> list[dict[str, Any]]:
        response = await self.http.get(f"{self.server.url}/v1/tasks", headers=self.headers)
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()["tasks"]
        return found

    async def the_task(self) -> str:
        """The id of the one task submitted, once it exists."""
        tasks = await eventually(self.tasks, what="the completion's task")
        assert len(tasks) == 1, tasks
        task_id: str = tasks[0]["id"]
        return task_id

    async def post(self, *reports: wire.HopReport) -> None:
        response = await self.http.post(
            f"{self.server.internal_url}/internal/v1/reports", json={"reports": list(reports)}
        )
        assert response.status_code == 200, response.text

    async def drive(
        self, journey: Callable[[str], list[wire.HopReport]], *, after: asyncio.Event | None = None
    ) -> str:
        """Post `journey(task id)` once the task exists (and `after` is set); the task id."""
        task_id = await self.the_task()
        if after is not None:
            async with asyncio.timeout(ANSWER_TIMEOUT_S):
                await after.wait()
        await self.post(*journey(task_id))
        return task_id


StartGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def start_gateway(tmp_path: Path, serve_gateway: ServeGateway) -> AsyncIterator[StartGateway]:
    """Serve a gateway with FLOWS (and, unless `auth=False`, an API key for tenant acme)."""
    (tmp_path / "flows.yaml").write_text(FLOWS)
    (tmp_path / "keys.txt").write_text(f"{hash_key(KEY)}: acme\n")
    started: list[Gateway] = []

    async def start(*, auth: bool = True) -> Gateway:
        server = await serve_gateway(
            flows_file=str(tmp_path / "flows.yaml"),
            api_keys_file=str(tmp_path / "keys.txt") if auth else None,
        )
        started.append(Gateway(server, tmp_path / SERVED_STATE, KEY if auth else None))
        return started[-1]

    yield start
    for gateway in started:
        await gateway.http.aclose()


def answered(result: Any, tokens: list[Any] | None = None) -> Callable[[str], list[wire.HopReport]]:
    """A two-actor journey that streams `tokens` (FLY events) at `a` and ends with `result`."""

    def journey(task_id: str) -> list[wire.HopReport]:
        steps = [report(task_id, "received", curr="a", next_=["b"])]
        if tokens:
            steps.append(report(task_id, "fly", curr="a", next_=["b"], events=tokens))
        return [
            *steps,
            report(task_id, "routed", prev=["a"], curr="b"),
            report(task_id, "succeeded", prev=["a", "b"], curr=names.SINK, result=result),
        ]

    return journey


def failed(task_id: str) -> list[wire.HopReport]:
    error = wire.error_details("ValueError", "no answer for an empty ticket")
    return [
        report(task_id, "received", curr="a", next_=["b"]),
        report(task_id, "failed", curr="a", next_=["b"], reason="HandlerError", error=error),
    ]


def tokens(*texts: str) -> list[dict[str, Any]]:
    return [{"type": "token", "text": text} for text in texts]


async def read(
    stream: AsyncStream[ChatCompletionChunk],
    into: list[ChatCompletionChunk],
    following: asyncio.Event,
) -> None:
    """Every chunk of `stream` into `into`; `following` is set at the first one, which the
    door sends once it follows the task (so a token posted after that is not missed)."""
    async for chunk in stream:
        following.set()
        into.append(chunk)


# ------------------------------------------------------------------------------ models


async def test_models_are_the_flows(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    async with gateway.client() as client:
        models = [model async for model in client.models.list()]
        one = await client.models.retrieve("quick")
        with pytest.raises(openai.NotFoundError) as missing:
            await client.models.retrieve("nope")
    assert [model.id for model in models] == ["chat", "one-message", "quick"]
    assert {(model.object, model.owned_by) for model in models} == {("model", "asya")}
    assert all(isinstance(model.created, int) and model.created > 0 for model in models)
    assert (one.id, one.object) == ("quick", "model")
    assert missing.value.code == "model_not_found"
    assert "GET /v1/models" in missing.value.message


# ------------------------------------------------------------------------- completions


async def test_a_completion_answers_the_flows_completion_and_usage(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway()
    result = {
        "messages": MESSAGES,
        "completion": "Hello! How can I help?",
        "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12},
    }
    async with gateway.client() as client:
        driver = asyncio.create_task(gateway.drive(answered(result)))
        raw = await client.chat.completions.with_raw_response.create(
            model="chat",
            messages=MESSAGES,
            temperature=0.2,
            user="u-17",
            extra_body={"ticket": "T-1"},
        )
        task_id = await driver
    completion = raw.parse()
    assert raw.headers["x-asya-task-id"] == task_id
    assert completion.id == f"chatcmpl-{task_id}"
    assert (completion.object, completion.model) == ("chat.completion", "chat")
    [choice] = completion.choices
    assert (choice.index, choice.finish_reason) == (0, "stop")
    assert (choice.message.role, choice.message.content) == ("assistant", "Hello! How can I help?")
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (7, 5)
    assert completion.usage.total_tokens == 12

    # The flow got the request minus what the door acts on (model, stream).
    async with LocalTransport(gateway.state_dir) as transport:
        envelope = await receive_envelope(transport, "a")
    assert envelope["id"] == task_id
    assert envelope["payload"] == {
        "messages": MESSAGES,
        "temperature": 0.2,
        "user": "u-17",
        "ticket": "T-1",
    }
    assert envelope["route"] == {"prev": [], "curr": "a", "next": ["b"]}


async def test_a_result_without_a_completion_is_answered_as_json(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway()
    result = {"category": "billing", "score": 4}
    async with gateway.client() as client:
        driver = asyncio.create_task(gateway.drive(answered(result)))
        completion = await client.chat.completions.create(
            model="chat",
            messages=MESSAGES,
        )
        await driver
    assert json.loads(completion.choices[0].message.content or "") == result
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.total_tokens) == (0, 0)


async def test_a_stream_relays_the_flows_tokens_then_stops(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    result = {"completion": "Hello there", "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
    fly = [*tokens("Hel", "lo"), {"type": "progress", "done": 0.5}, *tokens(" there")]
    following = asyncio.Event()
    async with gateway.client() as client:
        driver = asyncio.create_task(gateway.drive(answered(result, fly), after=following))
        stream = await client.chat.completions.create(
            model="chat",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks: list[ChatCompletionChunk] = []
        await read(stream, chunks, following)
        task_id = await driver
    assert {(chunk.id, chunk.object, chunk.model) for chunk in chunks} == {
        (f"chatcmpl-{task_id}", "chat.completion.chunk", "chat")
    }
    *with_choices, last = chunks
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (
        3, 2, 5
    )  # fmt: skip
    assert with_choices[0].choices[0].delta.role == "assistant"
    deltas = [chunk.choices[0].delta.content for chunk in with_choices[1:-1]]
    assert deltas == ["Hel", "lo", " there"]  # the progress event is no text
    assert [chunk.choices[0].finish_reason for chunk in with_choices] == [
        *[None] * (len(with_choices) - 1),
        "stop",
    ]
    assert all(chunk.usage is None for chunk in with_choices)


async def test_a_stream_without_tokens_sends_the_whole_answer_once(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(auth=False)
    async with gateway.client(api_key="anything: auth is off") as client:
        driver = asyncio.create_task(gateway.drive(answered({"completion": "All at once."})))
        stream = await client.chat.completions.create(
            model="chat",
            messages=MESSAGES,
            stream=True,
        )
        chunks = [chunk async for chunk in stream]
        await driver
    assert [chunk.choices[0].delta.content for chunk in chunks] == ["", "All at once.", None]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(chunk.usage is None for chunk in chunks)  # include_usage was not asked for


async def test_a_stream_ends_with_the_tokens_reported_too_late(
    start_gateway: StartGateway,
) -> None:
    # The streaming actor's last token batch reaches the gateway after x-sink's report.
    gateway = await start_gateway()
    following = asyncio.Event()
    async with gateway.client() as client:
        journey = answered({"completion": "Hello there"}, tokens("Hel", "lo"))
        driver = asyncio.create_task(gateway.drive(journey, after=following))
        stream = await client.chat.completions.create(model="chat", messages=MESSAGES, stream=True)
        chunks: list[ChatCompletionChunk] = []
        await read(stream, chunks, following)
        await driver
    assert [chunk.choices[0].delta.content for chunk in chunks] == [
        "", "Hel", "lo", " there", None
    ]  # fmt: skip


# ------------------------------------------------------------------------------ errors


async def test_a_failed_flow_is_a_502_naming_its_error_and_not_retried(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway()
    # Retries on: the client must not resubmit what the gateway says not to.
    client = AsyncOpenAI(base_url=f"{gateway.server.url}/v1", api_key=KEY, max_retries=2)
    async with client:
        driver = asyncio.create_task(gateway.drive(failed))
        with pytest.raises(openai.InternalServerError) as caught:
            await client.chat.completions.create(
                model="chat",
                messages=MESSAGES,
            )
        task_id = await driver
    error = caught.value
    assert error.status_code == 502
    assert error.code == "HandlerError"
    assert "ValueError: no answer for an empty ticket" in error.message
    assert task_id in error.message
    assert error.response.headers["x-asya-task-id"] == task_id
    assert len(await gateway.tasks()) == 1


async def test_a_flow_failing_during_a_stream_raises_from_the_stream(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway()
    following = asyncio.Event()
    async with gateway.client() as client:
        driver = asyncio.create_task(gateway.drive(failed, after=following))
        stream = await client.chat.completions.create(
            model="chat",
            messages=MESSAGES,
            stream=True,
        )
        received: list[ChatCompletionChunk] = []
        with pytest.raises(openai.APIError) as caught:
            await read(stream, received, following)
        await driver
    assert [chunk.choices[0].delta.role for chunk in received] == ["assistant"]
    assert "ValueError: no answer for an empty ticket" in caught.value.message
    assert caught.value.body == {
        "message": caught.value.message,
        "type": "server_error",
        "param": None,
        "code": "HandlerError",
    }


async def test_a_task_canceled_meanwhile_is_a_conflict(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()

    async def cancel() -> str:
        task_id = await gateway.the_task()
        url = f"{gateway.server.url}/v1/tasks/{task_id}"
        response = await gateway.http.delete(url, headers=gateway.headers)
        assert response.status_code == 200, response.text
        return task_id

    async with gateway.client() as client:
        canceling = asyncio.create_task(cancel())
        with pytest.raises(openai.ConflictError) as caught:
            await client.chat.completions.create(model="chat", messages=MESSAGES)
        task_id = await canceling
    assert caught.value.code == "canceled"
    assert f"task {task_id}" in caught.value.message
    assert caught.value.response.headers["x-should-retry"] == "false"


async def test_an_unknown_model_is_not_found(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    async with gateway.client() as client:
        with pytest.raises(openai.NotFoundError) as caught:
            await client.chat.completions.create(
                model="gpt-4o",
                messages=MESSAGES,
            )
    assert caught.value.code == "model_not_found"
    assert caught.value.param == "model"
    assert "'chat'" in caught.value.message
    assert await gateway.tasks() == []


async def test_a_missing_or_wrong_key_is_an_authentication_error(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway()
    async with gateway.client(api_key="not-our-key") as client:
        with pytest.raises(openai.AuthenticationError) as wrong:
            await client.chat.completions.create(
                model="chat",
                messages=MESSAGES,
            )
        with pytest.raises(openai.AuthenticationError):
            await client.models.list()
    assert wrong.value.code == "invalid_api_key"
    assert "not valid" in wrong.value.message
    # No Authorization header at all (the client always sends one).
    response = await gateway.http.get(f"{gateway.server.url}/v1/models")
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "Authorization: Bearer" in response.json()["error"]["message"]


async def test_bad_requests_are_bad_request_errors_naming_the_field(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway()
    async with gateway.client() as client:
        with pytest.raises(openai.BadRequestError) as no_messages:
            await client.chat.completions.create(model="chat", messages=[])
        with pytest.raises(openai.BadRequestError) as off_schema:
            await client.chat.completions.create(
                model="one-message",
                messages=[*MESSAGES, {"role": "user", "content": "And?"}],
            )
    assert (no_messages.value.param, no_messages.value.status_code) == ("messages", 400)
    assert "non-empty list" in no_messages.value.message
    assert (off_schema.value.code, off_schema.value.param) == ("invalid_payload", "messages")
    assert "'one-message'" in off_schema.value.message
    assert await gateway.tasks() == []

    url = f"{gateway.server.url}/v1/chat/completions"
    not_json = await gateway.http.post(url, content=b"{", headers=gateway.headers)
    assert not_json.status_code == 400
    assert not_json.json()["error"]["code"] == "invalid_json"
    assert set(not_json.json()["error"]) == {"message", "type", "param", "code"}


async def test_a_flow_past_its_timeout_is_a_504_naming_the_task(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway()
    async with gateway.client() as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(
                model="quick",
                messages=MESSAGES,
            )
    [task] = await gateway.tasks()
    assert caught.value.status_code == 504
    assert caught.value.code == "timeout"
    assert f"GET /v1/tasks/{task['id']}" in caught.value.message
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert task["status"] == "pending"  # the task goes on; only the wait ended


# ------------------------------------------------------------------- the pure decisions


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"[]", None),
        (b'{"messages": [{"role": "user"}]}', "model"),
        (b'{"model": "chat", "messages": "hi"}', "messages"),
        (b'{"model": "chat", "messages": [{"content": "no role"}]}', "messages[0]"),
        (b'{"model": "chat", "messages": [{"role": "user"}], "stream": "yes"}', "stream"),
        (b'{"model": "chat", "messages": [{"role": "user"}], "stream_options": 1}',
         "stream_options"),
    ],
)  # fmt: skip
def test_a_request_that_cannot_run_names_its_field(body: bytes, param: str | None) -> None:
    with pytest.raises(OpenAIError) as caught:
        parse_chat_request(body)
    assert (caught.value.status, caught.value.type, caught.value.param) == (
        400, "invalid_request_error", param
    )  # fmt: skip


def test_the_flow_gets_every_field_but_what_the_door_acts_on() -> None:
    chat = parse_chat_request(
        b'{"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": true,'
        b' "stream_options": {"include_usage": true}, "user": "u", "max_tokens": 9}'
    )
    assert (chat.model, chat.stream, chat.include_usage) == ("chat", True, True)
    assert chat.payload == {
        "messages": [{"role": "user", "content": "hi"}],
        "user": "u",
        "max_tokens": 9,
    }


@pytest.mark.parametrize(
    ("result", "text"),
    [
        ({"completion": "Hi", "draft": "x"}, "Hi"),
        ("plain text", "plain text"),
        ({"completion": 3}, '{"completion": 3}'),
        (None, "null"),
    ],
)
def test_the_answer_is_the_completion_or_the_result_as_text(result: Any, text: str) -> None:
    assert completion_text(result) == text


@pytest.mark.parametrize(
    ("result", "usage"),
    [
        ({"usage": {"prompt_tokens": 4, "completion_tokens": 6}}, (4, 6, 10)),
        ({"usage": {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 11}}, (4, 6, 11)),
        ({"usage": None}, (0, 0, 0)),
        ({"usage": {"prompt_tokens": "4", "completion_tokens": True}}, (0, 0, 0)),
        ("text", (0, 0, 0)),
    ],
)
def test_usage_is_the_results_counts_or_zeros(result: Any, usage: tuple[int, int, int]) -> None:
    counts = usage_of(result)
    assert (counts["prompt_tokens"], counts["completion_tokens"], counts["total_tokens"]) == usage


@pytest.mark.parametrize(
    ("answer", "streamed", "rest"),
    [
        ("Hello", "", "Hello"),
        ("Hello", "Hel", "lo"),
        ("Hello", "Hello", ""),
        ("Judged: 4", "Hello", ""),  # rewritten after the tokens: they stand
    ],
)
def test_a_stream_owes_the_rest_of_an_answer_it_began(
    answer: str, streamed: str, rest: str
) -> None:
    assert rest_of(answer, streamed) == rest
