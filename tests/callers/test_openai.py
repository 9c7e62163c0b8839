"""asya_callers.openai against a real llama.cpp server serving Gemma 3 270M
(tests/support/llama_server.py), in-process and in a real runtime.

Outputs are kept to a few tokens: the tests check what the caller does with an answer, not
what the model knows. Two requests with the same prompt may get different text even at
temperature 0 (llama.cpp reuses the cached prefix of the previous prompt, and a different
split of the work shifts near-tied logits), so tests compare token counts, not texts, across
requests. A scripted HTTP server stands in only for answers llama.cpp will not give (a 401
that echoes the key, as OpenAI's does; a malformed answer).

Behind a sidecar: tests/callers/test_openai_pipeline.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from asya_callers.errors import BadRequest, ServerError, Unreachable
from asya_callers.openai import Chat, Completions, Embeddings
from tests.support.llama_server import LlamaServer, StartLlamaServer
from tests.support.runtime import RuntimeFactory
from tests.support.scripted_server import Answer, ScriptedServer
from tests.support.services import free_port

SETTINGS = (
    *("BASE_URL", "MODEL", "API_KEY", "TIMEOUT", "MAX_TOKENS", "TEMPERATURE"),
    *("PROMPT_TEMPLATE", "SYSTEM_PROMPT", "OUTPUT_FIELD", "STREAM"),
)
API_KEY = "sk-asya-test-0123456789abcdef"
# Long enough that Gemma never finishes it in a few tokens.
STORY = "Write a long story about a dragon who learns to bake bread."
# Over the server's 2048-token context: llama.cpp refuses it with 400.
TOO_LONG = "word " * 2100

Caller = Chat | Completions | Embeddings
Build = Callable[..., Any]


@pytest.fixture
async def build(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Build]:
    """`build(Chat, BASE_URL=..., STREAM="true")`: the caller built from exactly those
    ASYA_OPENAI_ settings; its connection pool is closed after the test."""
    built: list[Caller] = []

    def make(caller: type[Caller], **env: str) -> Any:
        for name in SETTINGS:
            monkeypatch.delenv(f"ASYA_OPENAI_{name}", raising=False)
        for name, value in env.items():
            monkeypatch.setenv(f"ASYA_OPENAI_{name}", value)
        built.append(caller())
        return built[-1]

    yield make
    for caller in built:
        await caller.client.aclose()


async def run(caller: Chat | Completions, payload: Any) -> tuple[list[Any], dict[str, Any]]:
    """Drive the handler as the runtime does: its FLY events, and its one result."""
    events: list[Any] = []
    results: list[Any] = []
    async for item in caller.handle(payload):
        if isinstance(item, tuple) and item[0] == "FLY":
            events.append(item[1])
        else:
            results.append(item)
    assert len(results) == 1, results
    return events, results[0]


async def call(caller: Caller, payload: Any) -> dict[str, Any]:
    """The result of any of the three, FLY events left out."""
    if isinstance(caller, Embeddings):
        return await caller.handle(payload)
    return (await run(caller, payload))[1]


def assert_usage(result: dict[str, Any], *, at_most: int) -> None:
    usage = result["usage"]
    assert usage["prompt_tokens"] > 0
    assert 1 <= usage["completion_tokens"] <= at_most
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


# ------------------------------------------------------------------------------------ chat


async def test_chat_answers_a_prompt_and_keeps_every_payload_field(
    llama_server: LlamaServer, build: Build
) -> None:
    chat = build(Chat, BASE_URL=llama_server.url, MAX_TOKENS="8")
    payload = {"prompt": "Name a colour.", "ticket": 7, "meta": {"source": ["web"]}}

    events, result = await run(chat, payload)

    assert events == []
    assert set(result) == {*payload, "completion", "usage", "finish_reason"}
    assert {k: result[k] for k in payload} == payload
    assert isinstance(result["completion"], str)
    assert result["completion"].strip()
    assert result["finish_reason"] in ("stop", "length")
    assert_usage(result, at_most=8)


async def test_chat_sends_the_whole_conversation_of_messages(
    llama_server: LlamaServer, build: Build
) -> None:
    chat = build(Chat, BASE_URL=llama_server.url, MAX_TOKENS="4")
    last = {"role": "user", "content": "And in German?"}
    conversation = [
        {"role": "user", "content": "How do you say good morning in French?"},
        {"role": "assistant", "content": "Bonjour."},
        last,
    ]

    _, whole = await run(chat, {"messages": conversation})
    _, alone = await run(chat, {"messages": [last]})

    # Every turn reaches the model: the conversation costs more prompt tokens than its end.
    assert whole["usage"]["prompt_tokens"] > alone["usage"]["prompt_tokens"] + 10
    assert whole["completion"].strip()


async def test_a_template_sends_the_same_request_as_the_prompt_it_spells_out(
    llama_server: LlamaServer, build: Build
) -> None:
    env = {"BASE_URL": llama_server.url, "MAX_TOKENS": "2"}
    templated = build(Chat, **env, PROMPT_TEMPLATE="Translate to {lang}: {text}")
    plain = build(Chat, **env)

    _, from_template = await run(templated, {"lang": "French", "text": "good night, moon"})
    _, from_prompt = await run(plain, {"prompt": "Translate to French: good night, moon"})
    _, shorter = await run(plain, {"prompt": "Translate to French: good night"})

    assert from_template["usage"]["prompt_tokens"] == from_prompt["usage"]["prompt_tokens"]
    assert from_template["usage"]["prompt_tokens"] > shorter["usage"]["prompt_tokens"]
    assert from_template["completion"]
    assert from_template["lang"] == "French"


async def test_llm_max_tokens_overrides_the_env_default_for_one_payload(
    llama_server: LlamaServer, build: Build
) -> None:
    chat = build(Chat, BASE_URL=llama_server.url, MAX_TOKENS="5")

    _, by_env = await run(chat, {"prompt": STORY})
    _, by_payload = await run(chat, {"prompt": STORY, "llm": {"max_tokens": 2}})

    assert by_env["usage"]["completion_tokens"] == 5
    assert by_env["finish_reason"] == "length"
    assert by_payload["usage"]["completion_tokens"] == 2
    assert by_payload["finish_reason"] == "length"
    assert by_payload["llm"] == {"max_tokens": 2}  # the payload travels on as it came


async def test_the_server_accepts_every_parameter_llm_may_set(
    llama_server: LlamaServer, build: Build
) -> None:
    chat = build(Chat, BASE_URL=llama_server.url)
    llm = {
        "model": str(llama_server.model),  # what llama.cpp lists under /v1/models
        "max_tokens": 3,
        "temperature": 0.7,
        "top_p": 0.9,
        "stop": ["\n\n"],
        "seed": 42,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.1,
    }

    _, result = await run(chat, {"prompt": STORY, "llm": llm})

    assert_usage(result, at_most=3)


async def test_the_base_url_may_end_in_v1_as_openai_sdks_write_it(
    llama_server: LlamaServer, build: Build
) -> None:
    chat = build(Chat, BASE_URL=f"{llama_server.url}/v1/", MAX_TOKENS="2")

    _, result = await run(chat, {"prompt": "Hi"})

    assert_usage(result, at_most=2)


async def test_a_prompt_longer_than_the_context_is_a_bad_request_with_the_servers_reason(
    llama_server: LlamaServer, build: Build
) -> None:
    chat = build(Chat, BASE_URL=llama_server.url, MAX_TOKENS="2")

    with pytest.raises(BadRequest) as caught:
        await run(chat, {"prompt": TOO_LONG})

    assert caught.value.status == 400
    message = str(caught.value)
    assert f"POST {llama_server.url}/v1/chat/completions: refused (HTTP 400)" in message
    assert "maximum context length is 2048 tokens" in message


# ------------------------------------------------------------------------------- streaming


async def test_a_streamed_chat_emits_each_piece_as_a_token_event_and_the_whole_at_the_end(
    llama_server: LlamaServer, build: Build
) -> None:
    chat = build(Chat, BASE_URL=llama_server.url, MAX_TOKENS="8", STREAM="true")
    payload = {"prompt": STORY, "ticket": 7}

    events, result = await run(chat, payload)

    # One event per generated token that carries text: at most max_tokens of them.
    assert 2 <= len(events) <= 8
    assert all(e.keys() == {"type", "text"} and e["type"] == "token" for e in events)
    assert all(isinstance(e["text"], str) and e["text"] for e in events)
    assert "".join(e["text"] for e in events) == result["completion"]
    assert result["finish_reason"] == "length"
    assert result["ticket"] == 7
    # llama-cpp-python sends no usage while streaming, even when asked to (stream_options).
    assert result["usage"] is None or result["usage"]["completion_tokens"] == 8


async def test_streamed_completions_add_up_to_the_completion(
    llama_server: LlamaServer, build: Build
) -> None:
    completions = build(Completions, BASE_URL=llama_server.url, STREAM="true")

    events, result = await run(completions, {"prompt": STORY, "llm": {"max_tokens": 6}})

    assert 2 <= len(events) <= 6
    assert "".join(e["text"] for e in events) == result["completion"]
    assert result["finish_reason"] == "length"
    assert result["llm"] == {"max_tokens": 6}


async def test_a_stream_the_server_ends_without_an_answer_is_a_server_error(
    llama_server: LlamaServer, build: Build
) -> None:
    # Streaming, llama-cpp-python says 200 before it checks the context, then ends the
    # stream empty: there is no 400 to read, and no text to pass off as an answer.
    chat = build(Chat, BASE_URL=llama_server.url, MAX_TOKENS="2", STREAM="true")

    with pytest.raises(ServerError, match="streamed no choices"):
        await run(chat, {"prompt": TOO_LONG})


# ----------------------------------------------------------------------------- completions


async def test_completions_continue_a_prompt(llama_server: LlamaServer, build: Build) -> None:
    completions = build(Completions, BASE_URL=llama_server.url, OUTPUT_FIELD="continuation")

    _, result = await run(completions, {"prompt": STORY, "llm": {"max_tokens": 4}, "id": 3})

    assert set(result) == {"prompt", "llm", "id", "continuation", "usage", "finish_reason"}
    assert isinstance(result["continuation"], str)
    assert result["continuation"]
    assert result["finish_reason"] == "length"
    assert_usage(result, at_most=4)


async def test_completions_fill_the_template(llama_server: LlamaServer, build: Build) -> None:
    env = {"BASE_URL": llama_server.url, "MAX_TOKENS": "2"}
    templated = build(Completions, **env, PROMPT_TEMPLATE="The capital of {country} is")
    plain = build(Completions, **env)

    _, from_template = await run(templated, {"country": "the United Kingdom"})
    _, from_prompt = await run(plain, {"prompt": "The capital of the United Kingdom is"})
    _, shorter = await run(plain, {"prompt": "The capital of France is"})

    assert from_template["usage"]["prompt_tokens"] == from_prompt["usage"]["prompt_tokens"]
    assert from_template["usage"]["prompt_tokens"] > shorter["usage"]["prompt_tokens"]


# ------------------------------------------------------------------------------ embeddings


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


async def test_a_string_is_embedded_as_one_vector(llama_server: LlamaServer, build: Build) -> None:
    embeddings = build(Embeddings, BASE_URL=llama_server.url)

    result = await embeddings.handle({"input": "red apple", "doc": 1})

    vector = result["embedding"]
    assert len(vector) == 640  # Gemma 3 270M's width
    assert all(isinstance(x, float) for x in vector)
    assert result["doc"] == 1
    assert result["usage"]["prompt_tokens"] > 0


async def test_a_list_is_embedded_as_vectors_in_input_order(
    llama_server: LlamaServer, build: Build
) -> None:
    embeddings = build(Embeddings, BASE_URL=llama_server.url, OUTPUT_FIELD="vectors")
    texts = ["red apple", "quantum field theory", "a ripe red apple"]

    result = await embeddings.handle({"input": texts})
    singles = [(await embeddings.handle({"input": text}))["vectors"] for text in texts]

    vectors = result["vectors"]
    assert len(vectors) == 3
    # Batched, llama.cpp's numbers differ a little from one input at a time (cosine 0.999),
    # while the three texts are far apart (at most 0.71): each vector must be its own text's.
    for vector, own in zip(vectors, singles, strict=True):
        nearest = max(singles, key=lambda single: cosine(vector, single))
        assert nearest is own
        assert cosine(vector, own) > 0.99


async def test_the_template_wins_over_the_input_field(
    llama_server: LlamaServer, build: Build
) -> None:
    templated = build(Embeddings, BASE_URL=llama_server.url, PROMPT_TEMPLATE="{title}: {body}")
    plain = build(Embeddings, BASE_URL=llama_server.url)
    payload = {"title": "Tides", "body": "The moon pulls the sea.", "input": "quantum physics"}

    result = (await templated.handle(payload))["embedding"]
    spelled_out = (await plain.handle({"input": "Tides: The moon pulls the sea."}))["embedding"]
    of_input = (await plain.handle({"input": "quantum physics"}))["embedding"]

    assert cosine(result, spelled_out) > 0.99
    assert cosine(result, of_input) < 0.9


# -------------------------------------------------------------------- failures and secrets


async def test_a_server_that_is_not_there_is_unreachable(build: Build) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    chat = build(Chat, BASE_URL=url)

    with pytest.raises(Unreachable, match=f"POST {url}/v1/chat/completions"):
        await run(chat, {"prompt": "hi"})


@pytest.mark.model_servers  # a private server, which the conftest's markers do not see
async def test_the_api_key_is_sent_as_a_bearer_token_and_a_wrong_one_is_refused_unshown(
    start_llama_server: StartLlamaServer, build: Build
) -> None:
    server = start_llama_server(api_key=API_KEY)
    wrong_key = "sk-asya-wrong-9876543210fedcba"
    right = build(Chat, BASE_URL=server.url, API_KEY=API_KEY, MAX_TOKENS="3", STREAM="true")
    wrong = build(Chat, BASE_URL=server.url, API_KEY=wrong_key, MAX_TOKENS="3")

    events, result = await run(right, {"prompt": "Hi"})
    with pytest.raises(BadRequest) as caught:
        await run(wrong, {"prompt": "Hi"})

    assert result["completion"]
    assert events
    assert caught.value.status == 401
    assert wrong_key not in str(caught.value)
    assert API_KEY not in str(caught.value)
    assert API_KEY not in json.dumps([events, result])


async def test_a_key_the_server_echoes_back_is_scrubbed_from_errors(
    scripted_server: ScriptedServer, build: Build
) -> None:
    # OpenAI answers a wrong key with "Incorrect API key provided: <the key>"; servers that
    # fail mid-stream may quote the request in an error event.
    echoed = {"error": {"message": f"Incorrect API key provided: {API_KEY}"}}
    stream = f"data: {json.dumps({'error': {'message': f'bad request from {API_KEY}'}})}\n\n"
    scripted_server.script("/v1/chat/completions", Answer(401, echoed))
    scripted_server.script(
        "/v1/chat/completions",
        Answer(200, stream.encode(), {"Content-Type": "text/event-stream"}),
    )
    chat = build(Chat, BASE_URL=scripted_server.url, API_KEY=API_KEY)
    streamed = build(Chat, BASE_URL=scripted_server.url, API_KEY=API_KEY, STREAM="true")

    with pytest.raises(BadRequest) as refused:
        await run(chat, {"prompt": "hi"})
    with pytest.raises(ServerError) as failed:
        await run(streamed, {"prompt": "hi"})

    assert scripted_server.requests[0].headers["Authorization"] == f"Bearer {API_KEY}"
    assert str(refused.value).endswith("Incorrect API key provided: ***")
    assert "failed while streaming" in str(failed.value)
    assert API_KEY not in str(failed.value)
    assert "***" in str(failed.value)


@pytest.mark.parametrize(
    ("caller", "answer", "message"),
    [
        (Chat, {"choices": []}, "answered without choices[0].message.content"),
        (Chat, {"choices": [{"message": {"content": None}}]}, "message.content"),
        (Completions, {"id": "cmpl-1"}, "answered without choices[0].text"),
        (Embeddings, {"data": []}, "answered without 'data' holding 1 embedding(s)"),
        (Embeddings, {"data": [{"embedding": "0.1,0.2"}]}, "a list of numbers"),
    ],
)
async def test_an_answer_without_the_result_is_a_server_error_showing_it(
    scripted_server: ScriptedServer,
    build: Build,
    caller: type[Caller],
    answer: dict[str, Any],
    message: str,
) -> None:
    scripted_server.script(caller.path, Answer(200, answer))
    instance = build(caller, BASE_URL=scripted_server.url)

    with pytest.raises(ServerError) as caught:
        await call(instance, {"prompt": "hi", "input": "hi"})

    assert message in str(caught.value)
    assert repr(answer) in str(caught.value)  # what the server said instead


async def test_embeddings_answered_out_of_order_are_put_back_in_input_order(
    scripted_server: ScriptedServer, build: Build
) -> None:
    data = [{"index": 1, "embedding": [0.0, 1.0]}, {"index": 0, "embedding": [1.0, 0.0]}]
    scripted_server.script("/v1/embeddings", Answer(200, {"data": data, "usage": None}))
    embeddings = build(Embeddings, BASE_URL=scripted_server.url, MODEL="bge-small")

    result = await embeddings.handle({"input": ["first", "second"]})

    assert result["embedding"] == [[1.0, 0.0], [0.0, 1.0]]
    assert scripted_server.requests[0].body == {"model": "bge-small", "input": ["first", "second"]}


# ---------------------------------------------------------------------- in a real runtime


def test_a_template_field_missing_from_the_payload_is_permanent_invalid_input(
    start_runtime: RuntimeFactory,
) -> None:
    # No request is made, so no server is needed behind the URL.
    env = {
        "ASYA_OPENAI_BASE_URL": f"http://127.0.0.1:{free_port()}",
        "ASYA_OPENAI_PROMPT_TEMPLATE": "Summarize {text} for {audience}",
    }
    runtime = start_runtime("asya_callers.openai.Chat.handle", env=env)

    response = runtime.invoke({"text": "Tides.", "reader": "a child"})

    assert response.status_code == 500
    details = response.json()["details"]
    assert details["type"] == "asya_callers.errors.InvalidInput"
    assert "asya_callers.errors.Permanent" in details["mro"]
    assert "asya_callers.errors.Transient" not in details["mro"]
    assert "ASYA_OPENAI_PROMPT_TEMPLATE reads payload field(s) 'audience'" in details["message"]


@pytest.mark.parametrize(
    ("handler", "env", "message"),
    [
        ("Chat", {}, "ASYA_OPENAI_BASE_URL is required"),
        ("Completions", {"ASYA_OPENAI_TIMEOUT": "soon"}, "ASYA_OPENAI_TIMEOUT='soon'"),
        (
            "Embeddings",
            {"ASYA_OPENAI_PROMPT_TEMPLATE": "Embed {0}"},
            "ASYA_OPENAI_PROMPT_TEMPLATE is not a valid str.format template",
        ),
    ],
)
def test_a_bad_setting_stops_the_runtime_at_start_naming_the_variable(
    start_runtime: RuntimeFactory, handler: str, env: dict[str, str], message: str
) -> None:
    if env:
        env = {"ASYA_OPENAI_BASE_URL": "http://127.0.0.1:9", **env}
    runtime = start_runtime(f"asya_callers.openai.{handler}.handle", env=env, wait=False)

    code, stderr = runtime.wait_exit()

    assert code == 3
    assert message in stderr
    assert f"asya_callers.openai.{handler}.handle" in stderr


def test_a_streamed_chat_answers_the_runtime_with_its_token_events_beside_the_result(
    start_runtime: RuntimeFactory, llama_server: LlamaServer
) -> None:
    env = {
        "ASYA_OPENAI_BASE_URL": llama_server.url,
        "ASYA_OPENAI_STREAM": "true",
        "ASYA_OPENAI_MAX_TOKENS": "5",
    }
    runtime = start_runtime("asya_callers.openai.Chat.handle", env=env)

    body = runtime.invoke({"prompt": STORY}).json()

    [frame] = body["frames"]
    tokens = [event["text"] for event in body["fly"]]
    assert tokens
    assert "".join(tokens) == frame["payload"]["completion"]
    assert frame["route"]["next"] == ["post", "store"]  # the envelope goes on as routed
