"""asya_callers.openai without a server: settings, and how a payload becomes a request body.

What llama.cpp cannot show (it drops Gemma's system messages and ignores `model`) is checked
here on the body the caller would send; what it answers is tests/callers/test_openai.py's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from asya_callers.errors import ConfigError, InvalidInput
from asya_callers.openai import Chat, Completions, Embeddings

SETTINGS = (
    *("BASE_URL", "MODEL", "API_KEY", "TIMEOUT", "MAX_TOKENS", "TEMPERATURE"),
    *("PROMPT_TEMPLATE", "SYSTEM_PROMPT", "OUTPUT_FIELD", "STREAM"),
)
BASE = "http://vllm.models:8000"

Configure = Callable[..., None]


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch) -> Configure:
    """Set ASYA_OPENAI_<NAME> from keyword arguments, every other setting unset."""

    def apply(**values: str) -> None:
        for name in SETTINGS:
            monkeypatch.delenv(f"ASYA_OPENAI_{name}", raising=False)
        values.setdefault("BASE_URL", BASE)
        for name, value in values.items():
            monkeypatch.setenv(f"ASYA_OPENAI_{name}", value)

    return apply


def chat_body(payload: dict[str, Any]) -> dict[str, Any]:
    chat = Chat()
    return {**chat.request(payload), **chat.prompt_input(payload)}


@pytest.mark.parametrize(
    "base", [BASE, f"{BASE}/", f"{BASE}/v1", f"{BASE}/v1/", "http://gw/openai/v1"]
)
def test_the_base_url_may_be_given_with_or_without_v1(configure: Configure, base: str) -> None:
    configure(BASE_URL=base)
    root = base.rstrip("/").removesuffix("/v1")

    assert Chat().url == f"{root}/v1/chat/completions"
    assert Completions().url == f"{root}/v1/completions"
    assert Embeddings().url == f"{root}/v1/embeddings"


def test_only_settings_that_are_set_go_into_the_request(configure: Configure) -> None:
    configure()
    assert chat_body({"prompt": "hi"}) == {"messages": [{"role": "user", "content": "hi"}]}

    configure(MODEL="qwen2.5-7b", MAX_TOKENS="64", TEMPERATURE="0.2")
    assert chat_body({"prompt": "hi"}) == {
        "model": "qwen2.5-7b",
        "max_tokens": 64,
        "temperature": 0.2,
        "messages": [{"role": "user", "content": "hi"}],
    }


def test_llm_overrides_the_env_defaults_for_one_payload(configure: Configure) -> None:
    configure(MODEL="big", MAX_TOKENS="64", TEMPERATURE="0.2")
    llm = {
        "model": "small",
        "max_tokens": 5,
        "temperature": 0,
        "top_p": 0.9,
        "stop": ["\n"],
        "seed": 7,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
    }

    body = Completions().request({"prompt": "x", "llm": llm})

    assert body == llm


@pytest.mark.parametrize(
    ("llm", "message"),
    [
        ({"temprature": 0.1}, "'temprature', which is not a parameter it may override"),
        ({"logit_bias": {}}, "allowed: model, max_tokens, temperature, top_p, stop, seed"),
        ("fast", "must be an object of request parameters"),
        ({"max_tokens": 0}, "'llm.max_tokens' must be a whole number >= 1, got 0"),
        ({"max_tokens": True}, "'llm.max_tokens' must be a whole number >= 1"),
        ({"temperature": "hot"}, "'llm.temperature' must be a number >= 0"),
        ({"top_p": 1.5}, "'llm.top_p' must be a number from 0 to 1"),
        ({"stop": ["a", 1]}, "'llm.stop' must be a string or a list of strings"),
        ({"model": ""}, "'llm.model' must be a non-empty string"),
    ],
)
def test_a_bad_llm_object_is_invalid_input_saying_what_is_allowed(
    configure: Configure, llm: Any, message: str
) -> None:
    configure()

    with pytest.raises(InvalidInput, match=r"asya_callers\.openai\.Chat") as caught:
        chat_body({"prompt": "hi", "llm": llm})

    assert message in str(caught.value)


def test_embeddings_take_only_a_model_from_llm(configure: Configure) -> None:
    configure()

    assert Embeddings().request({"llm": {"model": "bge"}}) == {"model": "bge"}
    with pytest.raises(InvalidInput, match=r"'max_tokens'.*allowed: model$"):
        Embeddings().request({"llm": {"max_tokens": 5}})


def test_the_template_wins_over_messages_and_prompt(configure: Configure) -> None:
    configure(PROMPT_TEMPLATE="Summarize for {audience}:\n{text}")
    payload = {"audience": "a child", "text": "Tides.", "prompt": "ignored", "messages": []}

    assert Chat().prompt_input(payload) == {
        "messages": [{"role": "user", "content": "Summarize for a child:\nTides."}]
    }
    assert Completions().prompt_input(payload) == {"prompt": "Summarize for a child:\nTides."}


def test_messages_win_over_prompt_and_keep_their_extra_fields(configure: Configure) -> None:
    configure()
    messages = [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4", "name": "calc"},
        {"role": "user", "content": [{"type": "text", "text": "And 3+3?"}]},
    ]

    assert Chat().prompt_input({"messages": messages, "prompt": "ignored"}) == {
        "messages": messages
    }


def test_the_system_prompt_goes_first_whatever_the_input(configure: Configure) -> None:
    system = {"role": "system", "content": "Answer in French."}
    configure(SYSTEM_PROMPT="Answer in French.")
    assert Chat().prompt_input({"prompt": "hi"})["messages"] == [
        system,
        {"role": "user", "content": "hi"},
    ]
    conversation = [{"role": "user", "content": "yo"}]
    assert Chat().prompt_input({"messages": conversation})["messages"] == [system, *conversation]

    configure(SYSTEM_PROMPT="Answer in French.", PROMPT_TEMPLATE="Say {word}")
    assert Chat().prompt_input({"word": "hi"})["messages"] == [
        system,
        {"role": "user", "content": "Say hi"},
    ]


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([], "'messages' must be a non-empty list of {role, content} objects"),
        ("hello", "got str"),
        ([{"role": "user", "content": "a"}, "b"], "'messages[1]' must be a {role, content}"),
        ([{"content": "a"}], "'messages[0]' needs a 'role' string"),
        ([{"role": "user"}], "'messages[0]' needs a 'content' string"),
        ([{"role": "user", "content": 5}], "got 5"),
    ],
)
def test_malformed_messages_are_invalid_input_pointing_at_the_item(
    configure: Configure, messages: Any, message: str
) -> None:
    configure()

    with pytest.raises(InvalidInput) as caught:
        Chat().prompt_input({"messages": messages})

    assert message in str(caught.value)


def test_no_input_at_all_explains_the_three_ways_to_give_one(configure: Configure) -> None:
    configure()

    with pytest.raises(InvalidInput) as caught:
        Chat().prompt_input({"text": "hi", "lang": "en"})

    text = str(caught.value)
    assert "no field 'prompt'" in text
    assert "'messages'" in text
    assert "ASYA_OPENAI_PROMPT_TEMPLATE" in text
    assert "'lang', 'text'" in text  # what the payload has instead


@pytest.mark.parametrize("caller", [Chat, Completions])
def test_a_prompt_that_is_not_a_string_is_invalid_input(
    configure: Configure, caller: type[Chat | Completions]
) -> None:
    configure()

    with pytest.raises(InvalidInput, match="'prompt' must be a string, got a list holding str"):
        caller().prompt_input({"prompt": ["a", "b"]})


@pytest.mark.parametrize(
    ("value", "message"),
    [([], "got an empty list"), (["a", 2], "got a list holding int, str"), (3, "got int")],
)
async def test_embeddings_input_must_be_a_string_or_strings(
    configure: Configure, value: Any, message: str
) -> None:
    configure()

    with pytest.raises(InvalidInput, match=message):
        await Embeddings().handle({"input": value})


async def first_result(caller: Chat | Completions | Embeddings, payload: Any) -> Any:
    # Chat's and Completions' handle is an async generator, Embeddings' a coroutine.
    if isinstance(caller, Embeddings):
        return await caller.handle(payload)
    return await anext(caller.handle(payload))


@pytest.mark.parametrize("caller", [Chat, Completions, Embeddings])
async def test_a_payload_that_is_not_an_object_is_invalid_input(
    configure: Configure, caller: type[Chat | Completions | Embeddings]
) -> None:
    configure()
    instance = caller()

    with pytest.raises(InvalidInput, match="needs a JSON object payload, got list"):
        await first_result(instance, ["hi"])


@pytest.mark.parametrize(
    ("caller", "env", "message"),
    [
        (Chat, {"BASE_URL": ""}, "ASYA_OPENAI_BASE_URL is required"),
        (Chat, {"BASE_URL": "vllm:8000"}, "ASYA_OPENAI_BASE_URL='vllm:8000' is not an http"),
        (Chat, {"TIMEOUT": "soon"}, "ASYA_OPENAI_TIMEOUT='soon' is not a duration"),
        (Chat, {"MAX_TOKENS": "0"}, "ASYA_OPENAI_MAX_TOKENS='0' must be at least 1"),
        (Chat, {"TEMPERATURE": "warm"}, "ASYA_OPENAI_TEMPERATURE='warm' is not a number"),
        (Chat, {"STREAM": "maybe"}, "ASYA_OPENAI_STREAM='maybe' is not a boolean"),
        (Chat, {"PROMPT_TEMPLATE": "Say {}"}, "ASYA_OPENAI_PROMPT_TEMPLATE is not a valid"),
    ],
)
def test_bad_settings_are_config_errors_naming_the_variable(
    configure: Configure,
    caller: type[Chat | Completions | Embeddings],
    env: dict[str, str],
    message: str,
) -> None:
    configure(**env)

    with pytest.raises(ConfigError) as caught:
        caller()

    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("caller", "env", "ignored"),
    [
        (Completions, {"SYSTEM_PROMPT": "Be brief."}, "ASYA_OPENAI_SYSTEM_PROMPT"),
        (Embeddings, {"STREAM": "true", "MAX_TOKENS": "5"}, "ASYA_OPENAI_STREAM"),
        (Embeddings, {"TEMPERATURE": "0"}, "ASYA_OPENAI_TEMPERATURE"),
    ],
)
def test_settings_of_other_callers_are_ignored_with_a_warning(
    configure: Configure,
    caller: type[Completions | Embeddings],
    env: dict[str, str],
    ignored: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    configure(**env)

    with caplog.at_level("WARNING", logger="asya.callers.openai"):
        instance = caller()

    assert f"{ignored} does not apply to {caller().name} and is ignored" in caplog.text
    body = instance.request({"input": "x", "prompt": "x"})
    assert "max_tokens" not in body
    assert "temperature" not in body


def test_the_output_field_defaults_per_caller_and_may_be_renamed(configure: Configure) -> None:
    configure()
    assert (Chat().output_field, Embeddings().output_field) == ("completion", "embedding")

    configure(OUTPUT_FIELD="summary")
    assert Chat().output_field == "summary"
