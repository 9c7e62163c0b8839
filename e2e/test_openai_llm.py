"""The OpenAI-compatible door end to end, on a real model: the official `openai` client asks
the gateway of `asya dev` for a streamed chat completion; the flow behind the "model" runs
the llm-review example's actors, classify (a keyword rule) then draft
(asya_callers.openai.Chat, streaming tokens from llama.cpp's server with Gemma 3 270M);
the door relays the draft's tokens as deltas and ends the answer when the task succeeds.

The route stops after draft on purpose: the example's judge writes its own field and the
gate reroutes, while here the flow's answer must be the drafted reply, which draft writes
to `completion` (ASYA_OPENAI_OUTPUT_FIELD) so the door answers it. classify reads `text`,
which the client sends next to `messages` (extra_body): every request field but model and
stream reaches the flow.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import AsyncOpenAI

from e2e.asya_dev import Dev, running_dev
from tests.support.llama_server import LlamaServer, llama_server

__all__ = ["llama_server"]  # the session fixture, used by the module fixture below

pytestmark = [pytest.mark.slow, pytest.mark.model_servers, pytest.mark.timeout(300)]

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "llm-review"
# The draft actor of examples/llm-review/actors.yaml, writing its reply to `completion`.
ACTORS = """\
apiVersion: asya.sh/v1alpha1
kind: AsyncActor
metadata: {{name: classify}}
spec:
  handler: support.classify
  env:
    - {{name: PYTHONPATH, value: "{example}"}}
---
apiVersion: asya.sh/v1alpha1
kind: AsyncActor
metadata: {{name: draft}}
spec:
  handler: asya_callers.openai.Chat.handle
  env:
    - {{name: ASYA_OPENAI_BASE_URL, value: "{base_url}"}}
    - name: ASYA_OPENAI_PROMPT_TEMPLATE
      value: |-
        Dear support team,

        {{text}}

        Best regards,
        Anna

        ---

        Reply from our {{category}} team:

        Dear Anna,
    - {{name: ASYA_OPENAI_MAX_TOKENS, value: "32"}}
    - {{name: ASYA_OPENAI_TEMPERATURE, value: "0"}}
    - {{name: ASYA_OPENAI_STREAM, value: "true"}}
    - {{name: ASYA_OPENAI_TIMEOUT, value: 60s}}
"""
FLOWS = """\
flows:
  - name: support-reply
    route: [classify, draft]
    description: Draft a reply to a customer's message.
    timeout: 2m
    input_schema:
      type: object
      required: [text]
      properties: {text: {type: string, minLength: 1}}
"""
MESSAGE = "I was charged twice for my subscription this month, please refund me."


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory, llama_server: LlamaServer) -> Iterator[Dev]:
    tmp = tmp_path_factory.mktemp("openai-llm")
    actors = ACTORS.format(example=EXAMPLE, base_url=llama_server.url)
    with running_dev(tmp, {"actors.yaml": actors, "flows.yaml": FLOWS}) as running:
        yield running


async def test_a_streamed_completion_relays_the_drafted_reply(dev: Dev) -> None:
    # asya dev serves without keys: any key is accepted.
    async with AsyncOpenAI(base_url=f"{dev.url}/v1", api_key="dev", max_retries=0) as client:
        models = [model.id async for model in client.models.list()]
        stream = await client.chat.completions.create(
            model="support-reply",
            messages=[{"role": "user", "content": MESSAGE}],
            stream=True,
            extra_body={"text": MESSAGE},
            timeout=180,
        )
        chunks = [chunk async for chunk in stream]
    assert models == ["support-reply"]
    assert chunks[0].choices[0].delta.role == "assistant"
    deltas = [chunk.choices[0].delta.content for chunk in chunks[1:-1]]
    assert all(deltas), deltas
    assert len(deltas) > 1  # streamed in pieces as the model wrote them, not sent whole
    assert chunks[-1].choices[0].finish_reason == "stop"

    task_id = chunks[0].id.removeprefix("chatcmpl-")
    async with httpx.AsyncClient(timeout=30) as http:
        task = (await http.get(f"{dev.url}/v1/tasks/{task_id}")).json()
    assert task["status"] == "succeeded", task
    assert task["route"]["prev"] == ["classify", "draft"]
    result = task["result"]
    assert result["category"] == "billing"
    assert result["text"] == MESSAGE
    # The deltas are the draft, token for token: what the flow answered.
    reply = "".join(str(delta) for delta in deltas)
    assert reply == result["completion"]
    assert reply.strip()
    assert not reply.startswith("Dear support team")  # the model's words, not the prompt
