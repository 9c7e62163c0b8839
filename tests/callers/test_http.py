"""asya_callers.http.Post and the shared client, against a real HTTP server on loopback."""

from __future__ import annotations

import email.utils
import time
from pathlib import Path

import pytest

from asya_callers.errors import (
    BadRequest,
    ConfigError,
    InvalidInput,
    RateLimited,
    ServerError,
    Timeout,
    Unreachable,
)
from asya_callers.http import Post
from tests.support.pipeline import StartPipeline, actor
from tests.support.runtime import RuntimeFactory
from tests.support.scripted_server import Answer, ScriptedServer
from tests.support.services import free_port

TOKEN = "sk-test-0123456789abcdef"


@pytest.fixture
def post_env(monkeypatch: pytest.MonkeyPatch, scripted_server: ScriptedServer) -> ScriptedServer:
    for name in ("BODY_FIELD", "OUTPUT_FIELD", "TIMEOUT", "HEADERS", "BEARER_TOKEN"):
        monkeypatch.delenv(f"ASYA_HTTP_{name}", raising=False)
    monkeypatch.setenv("ASYA_HTTP_URL", f"{scripted_server.url}/classify")
    return scripted_server


async def test_the_whole_payload_is_posted_and_the_answer_added_under_response(
    post_env: ScriptedServer,
) -> None:
    post_env.script("/classify", Answer(body={"label": "spam", "score": 0.9}))

    result = await Post().handle({"text": "win a prize", "lang": "en"})

    assert result == {
        "text": "win a prize",
        "lang": "en",
        "response": {"label": "spam", "score": 0.9},
    }
    assert post_env.requests[0].body == {"text": "win a prize", "lang": "en"}
    assert post_env.requests[0].headers["Content-Type"] == "application/json"


async def test_body_and_output_fields_pick_what_is_sent_and_where_the_answer_goes(
    post_env: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASYA_HTTP_BODY_FIELD", "request")
    monkeypatch.setenv("ASYA_HTTP_OUTPUT_FIELD", "label")
    post_env.script("/classify", Answer(body="ham"))

    result = await Post().handle({"request": {"inputs": ["hi"]}, "keep": 1})

    assert post_env.requests[0].body == {"inputs": ["hi"]}
    assert result == {"request": {"inputs": ["hi"]}, "keep": 1, "label": "ham"}


async def test_output_field_dot_makes_the_answer_the_new_payload(
    post_env: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASYA_HTTP_OUTPUT_FIELD", ".")
    post_env.script("/classify", Answer(body=[1, 2, 3]))

    assert await Post().handle({"x": 1}) == [1, 2, 3]


async def test_an_answer_that_is_not_json_is_kept_as_text(post_env: ScriptedServer) -> None:
    post_env.script(
        "/classify", Answer(body=b"plain words", headers={"Content-Type": "text/plain"})
    )

    assert (await Post().handle({}))["response"] == "plain words"


async def test_a_missing_body_field_names_the_field_and_what_the_payload_has(
    post_env: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASYA_HTTP_BODY_FIELD", "request")

    with pytest.raises(InvalidInput, match=r"no field 'request'.*fields 'other'"):
        await Post().handle({"other": 1})
    assert post_env.requests == []


async def test_429_is_rate_limited_with_the_servers_retry_after(post_env: ScriptedServer) -> None:
    post_env.script(
        "/classify",
        Answer(429, {"error": {"message": "too many requests"}}, {"Retry-After": "7"}),
    )

    with pytest.raises(RateLimited, match="too many requests") as info:
        await Post().handle({})

    assert info.value.retry_after == 7.0
    assert info.value.status == 429


async def test_retry_after_as_an_http_date_is_turned_into_seconds(
    post_env: ScriptedServer,
) -> None:
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    post_env.script("/classify", Answer(429, {}, {"Retry-After": later}))

    with pytest.raises(RateLimited) as info:
        await Post().handle({})

    assert info.value.retry_after is not None
    assert 25 <= info.value.retry_after <= 30


@pytest.mark.parametrize(
    ("status", "error"),
    [(500, ServerError), (503, ServerError), (404, BadRequest), (422, BadRequest)],
)
async def test_statuses_map_to_typed_errors(
    post_env: ScriptedServer, status: int, error: type[Exception]
) -> None:
    post_env.script("/classify", Answer(status, {"detail": "nope"}))

    with pytest.raises(error, match=rf"HTTP {status}.*nope"):
        await Post().handle({})


async def test_a_refused_connection_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASYA_HTTP_URL", f"http://127.0.0.1:{free_port()}/")

    with pytest.raises(Unreachable) as info:
        await Post().handle({})

    assert isinstance(info.value, ConnectionError)


async def test_a_server_slower_than_the_timeout_is_a_timeout(
    post_env: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASYA_HTTP_TIMEOUT", "0.3")
    post_env.script("/classify", Answer(body={}, delay=1.5))

    with pytest.raises(Timeout, match=r"within 0.3s") as info:
        await Post().handle({})

    assert isinstance(info.value, TimeoutError)


async def test_the_bearer_token_is_sent_but_never_shown_in_an_error(
    post_env: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASYA_HTTP_BEARER_TOKEN", TOKEN)
    post_env.script("/classify", Answer(401, {"error": f"bad key {TOKEN}"}))

    with pytest.raises(BadRequest) as info:
        await Post().handle({})

    assert post_env.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in str(info.value)
    assert "bad key ***" in str(info.value)


def test_a_url_with_a_password_is_not_shown_in_config_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ASYA_HTTP_URL", "ftp://user:hunter2@host/")

    with pytest.raises(ConfigError, match="ASYA_HTTP_URL") as info:
        Post()

    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ASYA_HTTP_URL", "", "ASYA_HTTP_URL is required"),
        ("ASYA_HTTP_HEADERS", "{not json", "ASYA_HTTP_HEADERS is not valid JSON"),
        ("ASYA_HTTP_HEADERS", '{"X-N": 1}', "ASYA_HTTP_HEADERS must be a JSON object of strings"),
        ("ASYA_HTTP_TIMEOUT", "soon", "ASYA_HTTP_TIMEOUT='soon' is not a duration"),
    ],
)
def test_bad_settings_stop_the_caller_at_start_naming_the_variable(
    post_env: ScriptedServer, monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ConfigError, match=message):
        Post()


# ------------------------------------------------------- in the runtime, behind a sidecar


def test_a_rate_limit_reaches_the_sidecar_as_a_transient_error_with_retry_after(
    start_runtime: RuntimeFactory, scripted_server: ScriptedServer
) -> None:
    scripted_server.script("/", Answer(429, {}, {"Retry-After": "4"}))
    runtime = start_runtime(
        "asya_callers.http.Post.handle", env={"ASYA_HTTP_URL": scripted_server.url}
    )

    details = runtime.invoke({"q": 1}).json()["details"]

    assert details["type"] == "asya_callers.errors.RateLimited"
    assert "asya_callers.errors.Transient" in details["mro"]
    assert details["retry_after"] == 4.0


def test_calls_reuse_one_pooled_connection(
    start_runtime: RuntimeFactory, scripted_server: ScriptedServer
) -> None:
    runtime = start_runtime(
        "asya_callers.http.Post.handle", env={"ASYA_HTTP_URL": scripted_server.url}
    )

    for i in range(5):
        assert runtime.invoke({"i": i}).status_code == 200

    assert len({request.client_port for request in scripted_server.requests}) == 1


def test_a_missing_url_stops_the_runtime_at_start_naming_the_variable(
    start_runtime: RuntimeFactory,
) -> None:
    runtime = start_runtime("asya_callers.http.Post.handle", wait=False)

    code, stderr = runtime.wait_exit()

    assert code == 3
    assert "ASYA_HTTP_URL is required" in stderr


@pytest.mark.parametrize("transport_kind", ["local"], indirect=True)
async def test_a_retry_waits_as_long_as_the_server_asked(
    start_pipeline: StartPipeline, scripted_server: ScriptedServer, tmp_path: Path
) -> None:
    # The policy alone would retry after 0.1 s; the server asks for 2 s.
    scripted_server.script("/", Answer(429, {}, {"Retry-After": "2"}), Answer(body="ok"))
    policy = {
        "policies": {
            "transient": {"maxAttempts": 3, "backoff": "constant", "initialDelay": "0.1s"}
        },
        "rules": [{"errors": ["asya_callers.errors.Transient"], "policy": "transient"}],
    }
    pipeline = await start_pipeline(
        [
            actor(
                "model",
                "asya_callers.http.Post.handle",
                env={"ASYA_HTTP_URL": scripted_server.url},
                resiliency=policy,
            )
        ]
    )

    envelope_id = await pipeline.send(["model"], {"text": "hi"})
    result = await pipeline.result(envelope_id)

    assert result["status"]["phase"] == "succeeded"
    assert result["status"]["attempt"] == 2
    assert result["payload"]["response"] == "ok"
    first, second = scripted_server.requests
    assert second.at - first.at >= 1.9
