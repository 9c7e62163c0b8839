"""asya_callers.inference_v2.Infer against a real Seldon MLServer serving an iris classifier
(tests/support/mlserver.py), in-process, in a real runtime, and behind a real sidecar.

A scripted HTTP server stands in only where MLServer will not answer as needed: a readiness
endpoint that says 503, and an answer that echoes the API key back."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from asya_callers.errors import BadRequest, ConfigError, InvalidInput
from asya_callers.inference_v2 import Infer
from tests.support.mlserver import IRIS_ROWS, MLServer
from tests.support.pipeline import StartPipeline, actor
from tests.support.runtime import RuntimeFactory
from tests.support.scripted_server import Answer, ScriptedServer
from tests.support.services import free_port

HANDLER = "asya_callers.inference_v2.Infer.handle"
SETTINGS = (
    *("BASE_URL", "MODEL", "VERSION", "INPUTS", "OUTPUTS", "OUTPUT_FIELD"),
    *("API_KEY", "TIMEOUT", "READY_TIMEOUT"),
)
API_KEY = "v2-secret-0123456789abcdef"
# What the iris model predicts for IRIS_ROWS: setosa, versicolor, virginica.
IRIS_CLASSES = [[0], [1], [2]]


@pytest.fixture
def iris_env(monkeypatch: pytest.MonkeyPatch, mlserver: MLServer) -> MLServer:
    """The caller set up for the session's MLServer: model iris, payload field `rows`."""
    for name in SETTINGS:
        monkeypatch.delenv(f"ASYA_V2_{name}", raising=False)
    monkeypatch.setenv("ASYA_V2_BASE_URL", mlserver.url)
    monkeypatch.setenv("ASYA_V2_MODEL", "iris")
    monkeypatch.setenv("ASYA_V2_INPUTS", "rows")
    return mlserver


def requests_for(server: MLServer, model: str) -> int:
    """How many infer requests for `model` MLServer's access log shows (its recent tail)."""
    return server.output().count(f'"POST /v2/models/{model}/infer HTTP/1.1"')


# ---------------------------------------------------------------- in-process, real server


async def test_rows_go_as_one_tensor_and_the_outputs_come_back_shaped(
    iris_env: MLServer,
) -> None:
    result = await Infer().handle({"rows": IRIS_ROWS, "ticket": 7})

    assert result == {
        "rows": IRIS_ROWS,
        "ticket": 7,
        "outputs": {"predict": {"data": IRIS_CLASSES, "shape": [3, 1], "datatype": "INT64"}},
    }


async def test_requested_outputs_come_back_keyed_by_name(
    iris_env: MLServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASYA_V2_INPUTS", "rows:FP32")
    monkeypatch.setenv("ASYA_V2_OUTPUTS", "predict_proba,predict")

    outputs = (await Infer().handle({"rows": IRIS_ROWS}))["outputs"]

    assert set(outputs) == {"predict", "predict_proba"}
    proba = outputs["predict_proba"]
    assert proba["shape"] == [3, 3]
    assert proba["datatype"] == "FP64"
    assert [len(row) for row in proba["data"]] == [3, 3, 3]
    for species, row in enumerate(proba["data"]):
        assert sum(row) == pytest.approx(1.0)
        assert row.index(max(row)) == species
    assert outputs["predict"]["data"] == IRIS_CLASSES


async def test_the_json_form_sends_a_flat_field_as_a_named_tensor_of_the_given_shape(
    iris_env: MLServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = [{"field": "flat", "name": "features", "datatype": "FP32", "shape": [-1, 4]}]
    monkeypatch.setenv("ASYA_V2_INPUTS", json.dumps(spec))
    monkeypatch.setenv("ASYA_V2_OUTPUT_FIELD", "species")
    flat = [value for row in IRIS_ROWS[::-1] for value in row]

    result = await Infer().handle({"flat": flat})

    assert result["species"]["predict"]["data"] == IRIS_CLASSES[::-1]
    assert "outputs" not in result


async def test_a_single_row_is_a_one_row_tensor(iris_env: MLServer) -> None:
    result = await Infer().handle({"rows": [IRIS_ROWS[2]]})

    assert result["outputs"]["predict"] == {"data": [[2]], "shape": [1, 1], "datatype": "INT64"}


async def test_concurrent_calls_on_one_caller_each_get_their_own_answer(
    iris_env: MLServer,
) -> None:
    caller = Infer()
    payloads = [{"rows": [IRIS_ROWS[i % 3]] * (i + 1)} for i in range(6)]

    results = await asyncio.gather(*(caller.handle(p) for p in payloads))

    for i, result in enumerate(results):
        assert result["outputs"]["predict"]["data"] == [[i % 3]] * (i + 1)


async def test_a_payload_that_makes_no_tensor_is_invalid_input_before_any_request(
    iris_env: MLServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = Infer()
    monkeypatch.setenv("ASYA_V2_INPUTS", '[{"field": "flat", "shape": [-1, 4]}]')
    flat = Infer()
    before = requests_for(iris_env, "iris")

    with pytest.raises(InvalidInput, match=r"'flat' has 7 value\(s\).*not a multiple of 4"):
        await flat.handle({"flat": [5.1, 3.5, 1.4, 0.2, 7.0, 3.2, 4.7]})
    with pytest.raises(InvalidInput, match=r"'rows' is ragged: rows\[1\] has 3 item\(s\)"):
        await rows.handle({"rows": [[5.1, 3.5, 1.4, 0.2], [7.0, 3.2, 4.7]]})
    with pytest.raises(InvalidInput, match=r"no field 'rows' \(ASYA_V2_INPUTS names it"):
        await rows.handle({"features": IRIS_ROWS})

    assert requests_for(iris_env, "iris") == before


async def test_a_version_goes_into_the_path_and_an_unknown_one_is_a_bad_request(
    iris_env: MLServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The session server serves iris as version v1 (tests/support/mlserver.py).
    monkeypatch.setenv("ASYA_V2_VERSION", "v1")
    result = await Infer().handle({"rows": IRIS_ROWS})
    monkeypatch.setenv("ASYA_V2_VERSION", "v9")

    with pytest.raises(BadRequest, match=r"/v2/models/iris/versions/v9/infer.*HTTP 404") as info:
        await Infer().handle({"rows": IRIS_ROWS})

    assert result["outputs"]["predict"]["data"] == IRIS_CLASSES
    assert "Model iris with version v9 not found" in str(info.value)
    assert '"POST /v2/models/iris/versions/v1/infer HTTP/1.1" 200' in iris_env.output()


async def test_an_unknown_model_is_a_bad_request_with_the_servers_message(
    iris_env: MLServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not checked at start: the server is ready, and only the call finds the model missing.
    monkeypatch.setenv("ASYA_V2_MODEL", "lilac")
    caller = Infer()

    with pytest.raises(BadRequest, match=r"HTTP 404\): Model lilac not found") as info:
        await caller.handle({"rows": IRIS_ROWS})

    assert info.value.status == 404


async def test_a_request_the_model_refuses_is_a_bad_request_with_the_servers_message(
    iris_env: MLServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASYA_V2_OUTPUTS", "embedding")

    with pytest.raises(BadRequest, match=r"HTTP 400\): SKLearnModel only supports 'predict'"):
        await Infer().handle({"rows": IRIS_ROWS})


# ------------------------------------------------------------------------------ readiness


def test_a_server_that_never_answers_stops_the_runtime_at_start(
    start_runtime: RuntimeFactory,
) -> None:
    base = f"http://127.0.0.1:{free_port()}"
    runtime = start_runtime(
        HANDLER,
        env={
            "ASYA_V2_BASE_URL": base,
            "ASYA_V2_MODEL": "iris",
            "ASYA_V2_INPUTS": "rows",
            "ASYA_V2_READY_TIMEOUT": "2s",
        },
        wait=False,
    )

    code, stderr = runtime.wait_exit(timeout=30)

    assert code == 3
    assert f"the V2 server at {base}/v2/health/ready was not ready after waiting 2." in stderr
    assert "ASYA_V2_READY_TIMEOUT=2s" in stderr
    assert "ConnectError" in stderr


def test_the_runtime_waits_for_a_server_that_starts_after_it(
    start_runtime: RuntimeFactory, mlserver: MLServer, tmp_path: Path
) -> None:
    late = MLServer(tmp_path / "late", mlserver.models)
    runtime = start_runtime(
        HANDLER,
        env={
            "ASYA_V2_BASE_URL": late.url,
            "ASYA_V2_MODEL": "iris",
            "ASYA_V2_INPUTS": "rows",
            "ASYA_V2_READY_TIMEOUT": "120s",
        },
        wait=False,
    )
    try:
        late.start()
        runtime.wait_ready()

        answer = runtime.invoke({"rows": IRIS_ROWS}).json()
    finally:
        late.stop()

    assert answer["frames"][0]["payload"]["outputs"]["predict"]["data"] == IRIS_CLASSES
    assert '"GET /v2/health/ready HTTP/1.1" 200' in late.output()


def v2_env(monkeypatch: pytest.MonkeyPatch, base_url: str) -> None:
    for name in SETTINGS:
        monkeypatch.delenv(f"ASYA_V2_{name}", raising=False)
    monkeypatch.setenv("ASYA_V2_BASE_URL", base_url)
    monkeypatch.setenv("ASYA_V2_MODEL", "iris")
    monkeypatch.setenv("ASYA_V2_INPUTS", "rows")
    monkeypatch.setenv("ASYA_V2_API_KEY", API_KEY)


def test_readiness_is_polled_until_the_server_says_ready(
    monkeypatch: pytest.MonkeyPatch, scripted_server: ScriptedServer
) -> None:
    v2_env(monkeypatch, scripted_server.url)
    scripted_server.script("/v2/health/ready", Answer(503, {}), Answer(503, {}))

    Infer()

    probes = [r for r in scripted_server.requests if r.path == "/v2/health/ready"]
    assert len(probes) == 3  # two 503s, then the default 200
    assert probes[2].at - probes[0].at >= 0.9  # ~0.5 s apart: polled, not hammered
    assert all(p.headers["Authorization"] == f"Bearer {API_KEY}" for p in probes)


def test_a_server_that_stays_unready_is_named_with_its_last_answer_without_the_key(
    monkeypatch: pytest.MonkeyPatch, scripted_server: ScriptedServer
) -> None:
    v2_env(monkeypatch, scripted_server.url)
    monkeypatch.setenv("ASYA_V2_READY_TIMEOUT", "1s")
    refusal = Answer(503, {"error": f"loading; your key {API_KEY} is fine"})
    scripted_server.script("/v2/health/ready", *[refusal] * 20)

    with pytest.raises(ConfigError) as info:
        Infer()

    message = str(info.value)
    assert f"{scripted_server.url}/v2/health/ready was not ready after waiting 1." in message
    assert "last answer: HTTP 503" in message
    assert "your key *** is fine" in message
    assert API_KEY not in message


async def test_the_api_key_is_sent_but_never_shown_in_an_error(
    monkeypatch: pytest.MonkeyPatch, scripted_server: ScriptedServer
) -> None:
    v2_env(monkeypatch, scripted_server.url)
    scripted_server.script("/v2/models/iris/infer", Answer(401, {"error": f"bad key {API_KEY}"}))

    with pytest.raises(BadRequest) as info:
        await Infer().handle({"rows": IRIS_ROWS})

    [call] = [r for r in scripted_server.requests if r.path.endswith("/infer")]
    assert call.headers["Authorization"] == f"Bearer {API_KEY}"
    assert call.body == {
        "inputs": [
            {
                "name": "rows",
                "shape": [3, 4],
                "datatype": "FP64",
                "data": [value for row in IRIS_ROWS for value in row],
            }
        ]
    }
    assert "bad key ***" in str(info.value)
    assert API_KEY not in str(info.value)


# -------------------------------------------------------------------- behind a real sidecar


@pytest.mark.parametrize("transport_kind", ["local"], indirect=True)
async def test_an_unknown_model_fails_at_once_even_where_transient_errors_are_retried(
    start_pipeline: StartPipeline, mlserver: MLServer
) -> None:
    policy = {
        "policies": {
            "transient": {"maxAttempts": 5, "backoff": "constant", "initialDelay": "0.2s"}
        },
        "rules": [{"errors": ["asya_callers.errors.Transient"], "policy": "transient"}],
    }
    common = {"ASYA_V2_BASE_URL": mlserver.url, "ASYA_V2_INPUTS": "rows"}
    pipeline = await start_pipeline(
        [
            actor("score", HANDLER, env={**common, "ASYA_V2_MODEL": "iris"}, resiliency=policy),
            actor("retired", HANDLER, env={**common, "ASYA_V2_MODEL": "irises"}, resiliency=policy),
        ]
    )

    scored = await pipeline.send(["score"], {"rows": IRIS_ROWS})
    refused = await pipeline.send(["retired"], {"rows": IRIS_ROWS})
    results = await pipeline.results([scored, refused])

    ok, failed = results[scored], results[refused]
    assert ok["status"]["phase"] == "succeeded"
    assert ok["payload"]["outputs"]["predict"]["data"] == IRIS_CLASSES
    assert failed["status"]["phase"] == "failed"
    assert failed["status"]["attempt"] == 1
    assert failed["status"]["error"]["type"] == "asya_callers.errors.BadRequest"
    assert "asya_callers.errors.Permanent" in failed["status"]["error"]["mro"]
    assert "Model irises not found" in failed["status"]["error"]["message"]
    assert requests_for(mlserver, "irises") == 1
