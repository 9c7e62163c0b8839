"""asya_callers.openai behind a real sidecar (what `asya dev` runs), on the embedded
transport, against real llama.cpp servers: streamed tokens posted as FLY events, and a model
server that goes away and comes back while an envelope waits in retries."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.llama_server import LlamaServer, StartLlamaServer
from tests.support.pipeline import StartPipeline, actor
from tests.support.scripted_server import ScriptedServer
from tests.support.waiting import eventually

# Both tests start a pipeline of real processes; the restart test a private llama server,
# which the conftest's service markers do not see.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.model_servers,
    pytest.mark.parametrize("transport_kind", ["local"], indirect=True),
]

HANDLER = "asya_callers.openai.Chat.handle"
PROMPT = "Write a long story about a dragon who learns to bake bread."


def posted_events(server: ScriptedServer, envelope_id: str) -> list[dict[str, Any]]:
    """The FLY events the sidecar posted for one envelope, in the order they were posted."""
    return [
        event
        for request in server.requests
        if request.path == "/events" and request.body["envelope_id"] == envelope_id
        for event in request.body["events"]
    ]


def retried_on_unreachable(log: str, envelope_id: str) -> bool:
    """The runtime's log says the handler raised Unreachable for this envelope, and the
    sidecar's that it scheduled a retry."""
    mine = [line for line in log.splitlines() if f"envelope_id={envelope_id}" in line]
    return any("handler raised asya_callers.errors.Unreachable" in line for line in mine) and any(
        "envelope retried" in line for line in mine
    )


async def test_streamed_tokens_reach_the_events_url_and_add_up_to_the_stored_completion(
    start_pipeline: StartPipeline, llama_server: LlamaServer, scripted_server: ScriptedServer
) -> None:
    env = {
        "ASYA_OPENAI_BASE_URL": llama_server.url,
        "ASYA_OPENAI_STREAM": "true",
        "ASYA_OPENAI_MAX_TOKENS": "8",
    }
    # ASYA_EVENTS_URL is a sidecar setting; `asya dev` passes it to every sidecar.
    pipeline = await start_pipeline(
        [actor("writer", HANDLER, env=env)],
        extra_env={"ASYA_EVENTS_URL": f"{scripted_server.url}/events"},
    )

    envelope_id = await pipeline.send(["writer"], {"prompt": PROMPT, "ticket": 7})
    result = await pipeline.result(envelope_id)
    payload = result["payload"]

    def all_tokens() -> list[dict[str, Any]]:
        events = posted_events(scripted_server, envelope_id)
        text = "".join(event.get("text", "") for event in events)
        return events if text == payload["completion"] else []

    # Tokens are posted live, as the handler yields them, in one post or several; posting
    # is fire and forget, so the last ones may land after the result is stored.
    events = await eventually(
        all_tokens, what="the writer's token events at the events URL", details=pipeline.log_tail
    )

    assert result["status"]["phase"] == "succeeded"
    assert payload["ticket"] == 7
    assert payload["finish_reason"] == "length"
    assert payload["completion"]
    assert all(event["type"] == "token" for event in events)
    posts = [r for r in scripted_server.requests if r.path == "/events"]
    assert {post.body["actor"] for post in posts} == {"writer"}


async def test_a_model_server_that_goes_away_is_retried_until_it_is_back(
    start_pipeline: StartPipeline, start_llama_server: StartLlamaServer
) -> None:
    server = start_llama_server()
    retry_unreachable = {
        "policies": {
            "server-down": {"maxAttempts": 30, "backoff": "constant", "initialDelay": "1s"}
        },
        "rules": [{"errors": ["asya_callers.errors.Unreachable"], "policy": "server-down"}],
    }
    env = {"ASYA_OPENAI_BASE_URL": server.url, "ASYA_OPENAI_MAX_TOKENS": "3"}
    pipeline = await start_pipeline(
        [actor("writer", HANDLER, env=env, resiliency=retry_unreachable)]
    )
    # The first envelope leaves a pooled keep-alive connection behind, which the server's
    # death then breaks: the retries must get through on fresh ones.
    first = await pipeline.result(await pipeline.send(["writer"], {"prompt": PROMPT}))
    assert first["status"]["attempt"] == 1

    server.stop()
    envelope_id = await pipeline.send(["writer"], {"prompt": PROMPT, "ticket": 8})
    await eventually(
        lambda: retried_on_unreachable(pipeline.log_path.read_text(), envelope_id),
        what="the writer to fail on the stopped server and schedule a retry",
        details=pipeline.log_tail,
    )
    assert pipeline.stored(envelope_id) is None
    server.start()
    result = await pipeline.result(envelope_id)

    assert result["status"]["phase"] == "succeeded"
    assert result["status"]["attempt"] > 1
    assert result["payload"]["ticket"] == 8
    assert result["payload"]["completion"]
    assert result["payload"]["usage"]["completion_tokens"] <= 3
