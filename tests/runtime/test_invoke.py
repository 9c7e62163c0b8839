"""POST /invoke against a real runtime: handler kinds, results, errors, payload fidelity."""

from __future__ import annotations

import json

import pytest

from .conftest import RuntimeFactory, envelope

ECHO_HANDLERS = [
    "kinds.echo",
    "kinds.async_echo",
    "kinds.gen_echo",
    "kinds.async_gen_echo",
]


@pytest.mark.parametrize("handler", ECHO_HANDLERS)
def test_every_kind_returns_one_frame_with_route_and_headers_unchanged(
    start_runtime: RuntimeFactory, handler: str
) -> None:
    runtime = start_runtime(handler)
    sent = envelope({"text": "hello", "n": [1, 2.5, None, True]})

    response = runtime.client.post("/invoke", json=sent)

    assert response.status_code == 200, response.text
    assert response.json() == {
        "frames": [{"payload": sent["payload"], "route": sent["route"], "headers": sent["headers"]}]
    }


@pytest.mark.parametrize(
    "handler",
    ["kinds.Model.predict", "kinds.Model.apredict", "kinds.Model.stream", "kinds.Model.astream"],
)
def test_class_methods_use_one_instance_built_once(
    start_runtime: RuntimeFactory, handler: str
) -> None:
    runtime = start_runtime(handler)

    answers = [runtime.invoke({"i": i}).json()["frames"][0]["payload"] for i in range(3)]

    assert [a["instances"] for a in answers] == [1, 1, 1]
    assert [a["calls"] for a in answers] == [1, 2, 3]


def test_callable_instance_with_async_call(start_runtime: RuntimeFactory) -> None:
    runtime = start_runtime("kinds.instance")

    response = runtime.invoke({"x": 1})

    assert response.json()["frames"][0]["payload"] == {"called": True, "echo": {"x": 1}}


def test_dotted_module_path_resolves_the_longest_importable_prefix(
    start_runtime: RuntimeFactory,
) -> None:
    runtime = start_runtime("pkg.steps.Tokenizer.split")

    response = runtime.invoke({"text": "to be or not"})

    assert response.json()["frames"][0]["payload"] == {"words": ["to", "be", "or", "not"]}


def test_list_result_fans_out_one_frame_per_item(start_runtime: RuntimeFactory) -> None:
    runtime = start_runtime("results.fan_out")

    response = runtime.invoke({"n": 3})

    frames = response.json()["frames"]
    assert [f["payload"] for f in frames] == [{"part": 0}, {"part": 1}, {"part": 2}]
    assert all(f["route"]["next"] == ["post", "store"] for f in frames)


@pytest.mark.parametrize(
    "handler", ["results.nothing", "results.empty_list", "results.gen_nothing"]
)
def test_no_result_answers_204_without_body(start_runtime: RuntimeFactory, handler: str) -> None:
    runtime = start_runtime(handler)

    response = runtime.invoke({"x": 1})

    assert response.status_code == 204
    assert response.content == b""


def test_scalar_result_is_one_frame(start_runtime: RuntimeFactory) -> None:
    runtime = start_runtime("results.scalar")

    assert runtime.invoke({}).json()["frames"][0]["payload"] == 42


@pytest.mark.parametrize(
    ("handler", "named"), [("results.not_json", "set"), ("results.not_finite", "nan")]
)
def test_result_that_is_not_json_is_a_processing_error_naming_it(
    start_runtime: RuntimeFactory, handler: str, named: str
) -> None:
    runtime = start_runtime(handler)

    response = runtime.invoke({})

    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "processing_error"
    assert "not JSON-serialisable" in body["details"]["message"]
    assert named in body["details"]["message"].lower()


def test_generator_that_returns_a_value_is_refused(start_runtime: RuntimeFactory) -> None:
    runtime = start_runtime("results.gen_returns_value")

    body = runtime.invoke({}).json()

    assert body["error"] == "processing_error"
    assert "returned a value" in body["details"]["message"]


def test_handler_exception_reports_type_mro_message_and_traceback(
    start_runtime: RuntimeFactory,
) -> None:
    runtime = start_runtime("failing.quota")

    response = runtime.invoke({"model": "llama"})

    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "processing_error"
    details = body["details"]
    assert details["type"] == "failing.QuotaError"
    assert details["mro"] == [
        "failing.QuotaError",
        "failing.ProviderError",
        "Exception",
        "BaseException",
    ]
    assert details["message"] == "quota exceeded for model llama"
    # The traceback starts at the handler, not inside the runtime's machinery.
    assert details["traceback"].startswith("Traceback")
    assert "failing.py" in details["traceback"]
    assert "runtime.py" not in details["traceback"]


def test_an_error_carrying_retry_after_seconds_reports_them(
    start_runtime: RuntimeFactory,
) -> None:
    runtime = start_runtime("failing.throttled")

    said = runtime.invoke({"retry_after": 7}).json()["details"]
    unsaid = runtime.invoke({"retry_after": "soon"}).json()["details"]
    negative = runtime.invoke({"retry_after": -1}).json()["details"]

    assert said["retry_after"] == 7.0
    assert said["type"] == "failing.Throttled"
    assert "retry_after" not in unsaid
    assert "retry_after" not in negative


def test_async_handler_exception(start_runtime: RuntimeFactory) -> None:
    runtime = start_runtime("failing.async_value_error")

    details = runtime.invoke({"value": 7}).json()["details"]

    assert details["type"] == "ValueError"
    assert details["mro"] == ["ValueError", "Exception", "BaseException"]
    assert details["message"] == "bad value 7"


def test_generator_failing_after_a_yield_sends_no_partial_frames(
    start_runtime: RuntimeFactory,
) -> None:
    runtime = start_runtime("failing.gen_fails_after_yield")

    response = runtime.invoke({})

    assert response.status_code == 500
    assert "frames" not in response.json()
    assert response.json()["details"]["type"] == "RuntimeError"


def test_handler_calling_sys_exit_is_an_error_not_a_crash(start_runtime: RuntimeFactory) -> None:
    runtime = start_runtime("failing.exits")

    first = runtime.invoke({})
    second = runtime.invoke({})

    assert first.json()["details"]["type"] == "SystemExit"
    assert second.status_code == 500
    assert runtime.proc.poll() is None


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe\x00", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (json.dumps({"route": {"curr": "a"}, "payload": 1}).encode(), "id"),
        (json.dumps({"id": "x", "payload": 1}).encode(), "route"),
        (json.dumps({"id": "x", "route": {"curr": "a"}}).encode(), "payload"),
        (json.dumps({"id": "x", "route": {"next": []}, "payload": 1}).encode(), "route.curr"),
        (
            json.dumps({"id": "x", "route": {"curr": "a", "next": "b"}, "payload": 1}).encode(),
            "route.next",
        ),
        (
            json.dumps({"id": "x", "route": {"curr": "a"}, "payload": 1, "headers": []}).encode(),
            "headers",
        ),
    ],
)
def test_request_that_is_not_an_envelope_is_a_parsing_error(
    start_runtime: RuntimeFactory, body: bytes, fragment: str
) -> None:
    runtime = start_runtime("kinds.echo")

    response = runtime.client.post(
        "/invoke", content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    answer = response.json()
    assert answer["error"] == "msg_parsing_error"
    assert fragment in answer["details"]["message"]
    # The runtime stays up for the next, well-formed request.
    assert runtime.invoke({"ok": True}).status_code == 200


def test_ten_megabyte_payload_round_trips_unchanged(start_runtime: RuntimeFactory) -> None:
    runtime = start_runtime("kinds.async_echo")
    blob = "x" * (10 * 1024 * 1024)

    response = runtime.invoke({"blob": blob})

    assert response.status_code == 200
    assert response.json()["frames"][0]["payload"]["blob"] == blob


def test_non_ascii_payload_round_trips_unchanged(start_runtime: RuntimeFactory) -> None:
    runtime = start_runtime("kinds.echo")
    text = "naïve café — 日本語 — עברית — emoji 🧪🚀 — e\u0301 — \u0000 nul"
    sent = envelope({"text": text, "ключ": "значение"}, headers={"note": "ünïcode"})

    response = runtime.client.post("/invoke", json=sent)

    frame = response.json()["frames"][0]
    assert frame["payload"] == sent["payload"]
    assert frame["headers"]["note"] == "ünïcode"
    # Sent as UTF-8 on the wire, not as \u escapes.
    assert "日本語".encode() in response.content


def test_unknown_fields_do_not_disturb_the_call(start_runtime: RuntimeFactory) -> None:
    runtime = start_runtime("kinds.echo")
    sent = envelope({"a": 1}, extra_field={"kept": "by the sidecar"}, parent_id="root")

    response = runtime.client.post("/invoke", json=sent)

    assert response.json()["frames"][0]["payload"] == {"a": 1}


@pytest.mark.parametrize(
    "handler",
    ["kinds.wrapped_coroutine", "kinds.wrapped_async_generator", "kinds.wrapped_generator"],
)
def test_a_plain_function_returning_a_coroutine_or_generator_is_finished_like_one(
    start_runtime: RuntimeFactory, handler: str
) -> None:
    # Served on the thread-per-connection path (the callable is sync); the coroutine and
    # the async generator are finished on the runtime's event loop.
    runtime = start_runtime(handler)
    sent = envelope({"text": "wrapped"})

    response = runtime.client.post("/invoke", json=sent)

    assert response.status_code == 200, response.text
    assert [frame["payload"] for frame in response.json()["frames"]] == [{"text": "wrapped"}]
