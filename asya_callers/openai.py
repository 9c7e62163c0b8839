"""Callers for OpenAI-compatible servers: vLLM, llama.cpp, SGLang, TGI, Ollama, OpenAI itself.

    asya_callers.openai.Chat.handle          POST {base}/v1/chat/completions
    asya_callers.openai.Completions.handle   POST {base}/v1/completions
    asya_callers.openai.Embeddings.handle    POST {base}/v1/embeddings

Settings (read once, when the runtime builds the class; a wrong value stops the actor at
start with a message naming the variable):

    ASYA_OPENAI_BASE_URL       required: the server, with or without a trailing /v1
                               (http://vllm:8000 and http://vllm:8000/v1 are the same)
    ASYA_OPENAI_MODEL          the `model` of each request; unset: not sent, which servers
                               that serve one model (vLLM, llama.cpp) accept
    ASYA_OPENAI_API_KEY        sent as `Authorization: Bearer ...` (from a Secret); never
                               logged, and scrubbed from errors even when a server echoes it
    ASYA_OPENAI_TIMEOUT        per request: seconds or a duration (default 120s)
    ASYA_OPENAI_PROMPT_TEMPLATE  a Python str.format template over the payload's fields,
                               e.g. "Summarize:\\n{text}"; it becomes the user message (Chat),
                               the prompt (Completions) or the input (Embeddings)
    ASYA_OPENAI_OUTPUT_FIELD   the payload field the result goes into (default `completion`;
                               `embedding` for Embeddings)
    Chat and Completions only:
    ASYA_OPENAI_MAX_TOKENS     default max_tokens of each request (unset: the server's)
    ASYA_OPENAI_TEMPERATURE    default temperature of each request (unset: the server's)
    ASYA_OPENAI_STREAM         true: read the answer as it is generated and emit each piece
                               of text as a FLY event {"type": "token", "text": ...},
                               which the sidecar posts to ASYA_EVENTS_URL when the call
                               ends (default false). `usage` then comes only from servers that
                               honour stream_options.include_usage (vLLM, OpenAI); from
                               others (llama-cpp-python) it is null
    Chat only:
    ASYA_OPENAI_SYSTEM_PROMPT  a system message put before the others (the server's chat
                               template decides what it does with it: llama-cpp-python's
                               `gemma` format drops system messages)

A setting that does not apply to a caller (ASYA_OPENAI_STREAM for Embeddings, say) is ignored
with a warning in the log at start, so one ConfigMap can serve several callers.

Input, from the payload (which must be a JSON object):

    Chat         the template if set; else `messages`, a non-empty list of
                 {"role": ..., "content": ...}; else `prompt`, a string sent as one user
                 message
    Completions  the template if set; else `prompt`, a string
    Embeddings   the template if set; else `input`, a string or a non-empty list of strings

An optional `llm` object overrides request parameters for this one payload; it may hold
only model, max_tokens, temperature, top_p, stop, seed, presence_penalty and
frequency_penalty (Embeddings: only model).

Output: the payload with every field kept, plus
    Chat, Completions  <output field> (the generated text), `usage` (the server's token
                       counts, or null when it sent none) and `finish_reason`
    Embeddings         <output field> (one vector for a string input, a list of vectors in
                       input order for a list) and `usage`

Failures raise asya_callers.errors. Permanent: InvalidInput (the payload cannot be made into
a request) and BadRequest (the server's 4xx, e.g. a prompt over the context length).
Transient: RateLimited (429), ServerError (5xx, or an answer without the expected fields),
Unreachable (no connection) and Timeout (no answer in time).
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

from asya_callers.client import ModelClient
from asya_callers.errors import InvalidInput, ServerError
from asya_callers.payloads import fill_template, require_field, require_object
from asya_callers.settings import Settings, redact_url

__all__ = ["Chat", "Completions", "Embeddings"]

log = logging.getLogger("asya.callers.openai")

PREFIX = "ASYA_OPENAI_"
DEFAULT_TIMEOUT_S = 120.0
# How much of an unexpected answer goes into an error message.
SHOWN_ANSWER = 300


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_stop(value: Any) -> bool:
    return isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(item, str) for item in value)
    )


# What each key of `payload["llm"]` may hold, and how that is said in an error.
GENERATION_PARAMETERS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "model": (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
    "max_tokens": (lambda v: _is_integer(v) and v >= 1, "a whole number >= 1"),
    "temperature": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "top_p": (lambda v: _is_number(v) and 0 <= v <= 1, "a number from 0 to 1"),
    "stop": (_is_stop, "a string or a list of strings"),
    "seed": (_is_integer, "a whole number"),
    "presence_penalty": (_is_number, "a number"),
    "frequency_penalty": (_is_number, "a number"),
}
EMBEDDING_PARAMETERS = {"model": GENERATION_PARAMETERS["model"]}


class _OpenAICaller:
    """What the three callers share: the server, the key, the template and `llm` overrides."""

    name: ClassVar[str]
    path: ClassVar[str]
    default_output: ClassVar[str] = "completion"
    parameters: ClassVar[dict[str, tuple[Callable[[Any], bool], str]]] = GENERATION_PARAMETERS
    # Settings of other callers that would be silently ignored here.
    not_applicable: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self.settings = settings = Settings(PREFIX)
        # Ignored with a warning, not refused: one ConfigMap of server settings (envFrom)
        # often serves a chat actor and an embedding actor alike.
        for key in self.not_applicable:
            if settings.text(key) is not None:
                log.warning("%s does not apply to %s and is ignored", settings.name(key), self.name)
        base = settings.url(
            "BASE_URL", "the OpenAI-compatible server, e.g. http://vllm.models:8000"
        )
        self.url = _api_root(base) + self.path
        self.model = settings.text("MODEL")
        api_key = settings.text("API_KEY")
        self.client = ModelClient(
            timeout=settings.duration("TIMEOUT", DEFAULT_TIMEOUT_S),
            headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
            secrets=[api_key] if api_key else [],
        )
        self.template = settings.template("PROMPT_TEMPLATE")
        self.output_field = settings.text("OUTPUT_FIELD") or self.default_output

    def request(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The request's parameters other than its input: env defaults, then `llm`."""
        body: dict[str, Any] = {"model": self.model} if self.model is not None else {}
        body.update(self.defaults())
        body.update(self.overrides(payload))
        return body

    def defaults(self) -> dict[str, Any]:
        return {}

    def overrides(self, payload: dict[str, Any]) -> dict[str, Any]:
        if "llm" not in payload:
            return {}
        llm = payload["llm"]
        allowed = ", ".join(self.parameters)
        if not isinstance(llm, dict):
            raise InvalidInput(
                f"{self.name}: payload field 'llm' must be an object of request parameters "
                f"({allowed}), got {type(llm).__name__}"
            )
        for key, value in llm.items():
            if key not in self.parameters:
                raise InvalidInput(
                    f"{self.name}: payload field 'llm' has the key {key!r}, which is not a "
                    f"parameter it may override; allowed: {allowed}"
                )
            valid, meaning = self.parameters[key]
            if not valid(value):
                raise InvalidInput(
                    f"{self.name}: payload field 'llm.{key}' must be {meaning}, got {value!r}"
                )
        return dict(llm)

    def filled_template(self, payload: dict[str, Any]) -> str | None:
        if self.template is None:
            return None
        return fill_template(self.template, payload, self.settings.name("PROMPT_TEMPLATE"))

    def answer_error(self, what: str, answer: Any) -> ServerError:
        shown = self.client.scrub(repr(answer)[:SHOWN_ANSWER])
        return ServerError(
            f"{self.name}: POST {redact_url(self.url)} answered without {what}: {shown}"
        )


class _Generator(_OpenAICaller):
    """Chat and Completions: text generation, whole or streamed as FLY token events."""

    text_path: ClassVar[str]  # where the text is in an answer, for errors

    def __init__(self) -> None:
        super().__init__()
        self.max_tokens = self.settings.integer("MAX_TOKENS", None)
        self.temperature = self.settings.number("TEMPERATURE", None)
        self.stream = self.settings.flag("STREAM", False)

    def defaults(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return body

    def prompt_input(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The input part of the request body, from the payload."""
        raise NotImplementedError

    def text_of(self, choice: dict[str, Any]) -> Any:
        """The text of a whole answer's first choice (None when it has none)."""
        raise NotImplementedError

    def piece_of(self, choice: dict[str, Any]) -> Any:
        """The text a streamed chunk's first choice adds (None when it adds none)."""
        raise NotImplementedError

    async def handle(self, payload: Any) -> AsyncIterator[Any]:
        payload = require_object(payload, self.name)
        body = {**self.request(payload), **self.prompt_input(payload)}
        if self.stream:
            async for item in self._streamed(payload, body):
                yield item
            return
        answer = await self.client.post_json(self.url, body)
        choice = _first_choice(answer)
        text = self.text_of(choice) if choice is not None else None
        if choice is None or not isinstance(text, str):
            raise self.answer_error(self.text_path, answer)
        yield self.output(payload, text, answer.get("usage"), choice.get("finish_reason"))

    async def _streamed(self, payload: dict[str, Any], body: dict[str, Any]) -> AsyncIterator[Any]:
        # Without stream_options the OpenAI API sends no usage when streaming; servers that
        # do not know the option (llama-cpp-python) ignore it.
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        pieces: list[str] = []
        usage: Any = None
        finish_reason: Any = None
        chunks = 0
        async for event in self.client.stream_events(self.url, body):
            if not isinstance(event, dict):
                raise self.answer_error("an object in a streamed event", event)
            if "error" in event:
                raise ServerError(
                    f"{self.name}: the server failed while streaming: "
                    f"{self.client.scrub(repr(event['error'])[:SHOWN_ANSWER])}"
                )
            if event.get("usage") is not None:
                usage = event["usage"]
            choice = _first_choice(event)
            if choice is None:
                continue  # the usage-only last chunk has no choices
            chunks += 1
            piece = self.piece_of(choice)
            if isinstance(piece, str) and piece:
                pieces.append(piece)
                yield "FLY", {"type": "token", "text": piece}
            if choice.get("finish_reason") is not None:
                finish_reason = choice["finish_reason"]
        if chunks == 0:
            raise ServerError(
                f"{self.name}: POST {redact_url(self.url)} streamed no choices (a server may "
                "fail after it has answered 200; its log says why)"
            )
        yield self.output(payload, "".join(pieces), usage, finish_reason)

    def output(
        self, payload: dict[str, Any], text: str, usage: Any, finish_reason: Any
    ) -> dict[str, Any]:
        return {
            **payload,
            self.output_field: text,
            "usage": usage,
            "finish_reason": finish_reason,
        }


class Chat(_Generator):
    """`asya_callers.openai.Chat.handle`: POST {base}/v1/chat/completions."""

    name = "asya_callers.openai.Chat"
    path = "/v1/chat/completions"
    text_path = "choices[0].message.content"

    def __init__(self) -> None:
        super().__init__()
        self.system_prompt = self.settings.text("SYSTEM_PROMPT")

    def prompt_input(self, payload: dict[str, Any]) -> dict[str, Any]:
        filled = self.filled_template(payload)
        if filled is not None:
            messages = [{"role": "user", "content": filled}]
        elif "messages" in payload:
            messages = self._messages(payload["messages"])
        else:
            prompt = require_field(
                payload, "prompt", self.name,
                "give the input as 'messages' (a list of {role, content} objects), as "
                "'prompt' (a string), or set ASYA_OPENAI_PROMPT_TEMPLATE to build it from "
                "other fields",
            )  # fmt: skip
            messages = [{"role": "user", "content": _prompt_text(prompt, self.name)}]
        if self.system_prompt is not None:
            messages = [{"role": "system", "content": self.system_prompt}, *messages]
        return {"messages": messages}

    def _messages(self, messages: Any) -> list[dict[str, Any]]:
        shape = 'e.g. [{"role": "user", "content": "Hello"}]'
        if not isinstance(messages, list) or not messages:
            got = "an empty list" if messages == [] else type(messages).__name__
            raise InvalidInput(
                f"{self.name}: payload field 'messages' must be a non-empty list of "
                f"{{role, content}} objects ({shape}), got {got}"
            )
        for index, message in enumerate(messages):
            where = f"{self.name}: payload field 'messages[{index}]'"
            if not isinstance(message, dict):
                raise InvalidInput(
                    f"{where} must be a {{role, content}} object ({shape}), got "
                    f"{type(message).__name__}"
                )
            role = message.get("role")
            if not isinstance(role, str) or not role:
                raise InvalidInput(
                    f"{where} needs a 'role' string (system, user or assistant), got {role!r}"
                )
            # A list is OpenAI's content parts (text and images); servers check the parts.
            if not isinstance(message.get("content"), str | list):
                raise InvalidInput(
                    f"{where} needs a 'content' string (or a list of content parts), got "
                    f"{message.get('content')!r}"
                )
        return messages

    def text_of(self, choice: dict[str, Any]) -> Any:
        message = choice.get("message")
        return message.get("content") if isinstance(message, dict) else None

    def piece_of(self, choice: dict[str, Any]) -> Any:
        delta = choice.get("delta")
        return delta.get("content") if isinstance(delta, dict) else None


class Completions(_Generator):
    """`asya_callers.openai.Completions.handle`: POST {base}/v1/completions."""

    name = "asya_callers.openai.Completions"
    path = "/v1/completions"
    text_path = "choices[0].text"
    not_applicable = ("SYSTEM_PROMPT",)

    def prompt_input(self, payload: dict[str, Any]) -> dict[str, Any]:
        filled = self.filled_template(payload)
        if filled is not None:
            return {"prompt": filled}
        prompt = require_field(
            payload, "prompt", self.name,
            "the text to continue; or set ASYA_OPENAI_PROMPT_TEMPLATE to build it from other "
            "fields",
        )  # fmt: skip
        return {"prompt": _prompt_text(prompt, self.name)}

    def text_of(self, choice: dict[str, Any]) -> Any:
        return choice.get("text")

    piece_of = text_of


class Embeddings(_OpenAICaller):
    """`asya_callers.openai.Embeddings.handle`: POST {base}/v1/embeddings."""

    name = "asya_callers.openai.Embeddings"
    path = "/v1/embeddings"
    default_output = "embedding"
    parameters = EMBEDDING_PARAMETERS
    not_applicable = ("MAX_TOKENS", "TEMPERATURE", "STREAM", "SYSTEM_PROMPT")

    async def handle(self, payload: Any) -> dict[str, Any]:
        payload = require_object(payload, self.name)
        filled = self.filled_template(payload)
        text = self._input(payload) if filled is None else filled
        answer = await self.client.post_json(self.url, {**self.request(payload), "input": text})
        count = 1 if isinstance(text, str) else len(text)
        vectors = self._vectors(answer, count)
        return {
            **payload,
            self.output_field: vectors[0] if isinstance(text, str) else vectors,
            "usage": answer.get("usage"),
        }

    def _input(self, payload: dict[str, Any]) -> str | list[str]:
        value = require_field(
            payload, "input", self.name,
            "a string or a list of strings to embed; or set ASYA_OPENAI_PROMPT_TEMPLATE to "
            "build it from other fields",
        )  # fmt: skip
        if isinstance(value, str):
            return value
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return value
        raise InvalidInput(
            f"{self.name}: payload field 'input' must be a string or a non-empty list of "
            f"strings, got {_describe(value)}"
        )

    def _vectors(self, answer: Any, count: int) -> list[list[float]]:
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list) or len(data) != count:
            raise self.answer_error(f"'data' holding {count} embedding(s)", answer)
        by_index: dict[int, list[float]] = {}
        for position, item in enumerate(data):
            if not isinstance(item, dict):
                raise self.answer_error("an object per item of 'data'", answer)
            # `index` says which input a vector belongs to; servers may answer out of order.
            index = item.get("index", position)
            vector = item.get("embedding")
            if not isinstance(vector, list) or not vector or not all(map(_is_number, vector)):
                raise self.answer_error(
                    f"a list of numbers as data[{position}].embedding", _abridged(answer)
                )
            if not _is_integer(index) or not 0 <= index < count or index in by_index:
                raise self.answer_error(
                    f"a distinct index from 0 to {count - 1} in each item of 'data'",
                    _abridged(answer),
                )
            by_index[index] = vector
        return [by_index[i] for i in range(count)]


def _api_root(base: str) -> str:
    """The server's root: users write the OpenAI SDK's base_url, which ends in /v1."""
    base = base.rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base


def _first_choice(answer: Any) -> dict[str, Any] | None:
    if not isinstance(answer, dict):
        return None
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    first: dict[str, Any] = choices[0]
    return first


def _prompt_text(prompt: Any, caller: str) -> str:
    if not isinstance(prompt, str):
        raise InvalidInput(
            f"{caller}: payload field 'prompt' must be a string, got {_describe(prompt)}"
        )
    return prompt


def _describe(value: Any) -> str:
    if isinstance(value, list):
        return (
            "an empty list"
            if not value
            else "a list holding " + ", ".join(sorted({type(v).__name__ for v in value}))
        )
    return type(value).__name__


def _abridged(answer: Any) -> Any:
    """An embeddings answer with its vectors cut short, so an error shows its shape."""
    if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
        return answer
    data = [
        {**item, "embedding": item["embedding"][:3]}
        if isinstance(item, dict) and isinstance(item.get("embedding"), list)
        else item
        for item in answer["data"]
    ]
    return {**answer, "data": data}
