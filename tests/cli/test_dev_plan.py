from __future__ import annotations

import json
from pathlib import Path

from asya_cli import dev_plan
from asya_cli.dev_plan import DevSettings
from asya_cli.manifests import ActorManifest

SETTINGS = DevSettings(
    transport="local",
    namespace="dev",
    state_dir=Path("/state"),
    socket_root=Path("/s"),
    workdir=Path("/work"),
    python="/py",
    runtime_file=Path("/rt/runtime.py"),
)


def test_every_actor_and_the_crew_get_a_runtime_and_a_sidecar() -> None:
    actors = [
        ActorManifest(
            name="prep",
            handler="steps.prep",
            source="f",
            concurrency=4,
            env={"MODEL": "m"},
            actor_timeout="30s",
        ),
        ActorManifest(name="infer", handler="m.M.p", source="f"),
    ]

    specs = dev_plan.plan(actors, SETTINGS, base_env={"PATH": "/bin"}, ports=[1, 2, 3, 4, 5])

    assert [s.name for s in specs] == [
        "prep/runtime",
        "infer/runtime",
        "x-sink/runtime",
        "x-sump/runtime",
        "x-join/runtime",
        "prep/sidecar",
        "infer/sidecar",
        "x-sink/sidecar",
        "x-sump/sidecar",
        "x-join/sidecar",
    ]
    by_name = {s.name: s for s in specs}
    runtime = by_name["prep/runtime"]
    assert runtime.argv == ("/py", "/rt/runtime.py")
    assert runtime.cwd == "/work"
    assert runtime.env["ASYA_HANDLER"] == "steps.prep"
    assert runtime.env["ASYA_RUNTIME_CONCURRENCY"] == "4"
    assert runtime.env["MODEL"] == "m"
    assert runtime.env["PATH"] == "/bin"
    sidecar = by_name["prep/sidecar"]
    assert sidecar.env["ASYA_ACTOR"] == "prep"
    assert sidecar.env["ASYA_CONCURRENCY"] == "4"
    assert sidecar.env["ASYA_ACTOR_TIMEOUT"] == "30s"
    assert sidecar.env["ASYA_SOCKET_DIR"] == runtime.env["ASYA_SOCKET_DIR"] == "/s/prep"
    assert sidecar.env["ASYA_STATE_DIR"] == "/state"
    assert sidecar.env["ASYA_NAMESPACE"] == "dev"
    assert "MODEL" not in sidecar.env  # spec.env is the handler's, not the sidecar's
    assert [s.health_port for s in specs if s.role == "sidecar"] == [1, 2, 3, 4, 5]
    assert by_name["x-sink/runtime"].argv == ("/py", "-m", "asya_crew", "sink")
    assert by_name["x-sink/runtime"].env["ASYA_RESULT_STORE"] == "file:///state/results"
    assert by_name["x-sump/runtime"].env["ASYA_SUMP_STORE"] == "file:///state/sump"
    join = by_name["x-join/runtime"].env
    assert by_name["x-join/runtime"].argv == ("/py", "-m", "asya_crew", "join")
    assert join["ASYA_JOIN_STORE"] == "sqlite:////state/join.db"
    # x-join publishes joined envelopes itself: it needs the transport the sidecars use.
    assert (join["ASYA_TRANSPORT"], join["ASYA_NAMESPACE"]) == ("local", "dev")
    assert join["ASYA_STATE_DIR"] == "/state"
    retries = json.loads(by_name["x-join/sidecar"].env["ASYA_RESILIENCY"])
    assert retries == dev_plan.HOLDING_RESILIENCY
    assert "ASYA_RESILIENCY" not in by_name["x-sink/sidecar"].env
    assert "x-pause/runtime" not in by_name  # nothing could resume it without a gateway


def test_sidecar_settings_in_an_actors_env_reach_its_sidecar_as_on_a_cluster() -> None:
    actor = ActorManifest(
        name="draft",
        handler="asya_callers.openai.Chat.handle",
        source="f",
        env={
            "ASYA_EVENTS_URL": "http://127.0.0.1:9000/events",
            "ASYA_LOG_LEVEL": "DEBUG",
            "ASYA_LOG_FORMAT": "json",
            "ASYA_OPENAI_BASE_URL": "http://llm",
        },
    )

    specs = {s.name: s for s in dev_plan.plan([actor], SETTINGS, base_env={}, ports=[1, 2, 3, 4])}

    sidecar, sink = specs["draft/sidecar"].env, specs["x-sink/sidecar"].env
    assert sidecar["ASYA_EVENTS_URL"] == "http://127.0.0.1:9000/events"
    assert sidecar["ASYA_LOG_LEVEL"] == "DEBUG"
    assert sidecar["ASYA_LOG_FORMAT"] == "text"  # `asya dev` prints every process as text
    assert "ASYA_OPENAI_BASE_URL" not in sidecar  # the handler's, not the sidecar's
    assert "ASYA_EVENTS_URL" not in sink


def test_with_a_gateway_it_runs_first_and_every_sidecar_and_the_crew_report_to_it() -> None:
    actor = ActorManifest(name="prep", handler="steps.prep", source="f")
    gateway = dev_plan.GatewayPlan(port=8080, internal_port=9001, flows=Path("/p/flows.yaml"))

    specs = dev_plan.plan([actor], SETTINGS, base_env={"PATH": "/bin"},
                          ports=[1, 2, 3, 4, 5], gateway=gateway)  # fmt: skip

    first = specs[0]
    assert first.name == "gateway/gateway"
    assert first.argv == (
        "/py", "-m", "asya_cli", "gateway", "--host", "127.0.0.1", "--port", "8080",
        "--internal-port", "9001", "--store", "sqlite:////state/gateway.db",
        "--flows", "/p/flows.yaml",
    )  # fmt: skip
    assert first.health_port == 8080
    assert first.env["ASYA_TRANSPORT"] == "local"
    assert first.env["ASYA_NAMESPACE"] == "dev"
    assert first.env["ASYA_STATE_DIR"] == "/state"
    crew = ("x-sink", "x-sump", "x-join", "x-pause")
    reporters = [s for s in specs if s.role == "sidecar" or s.actor in crew]
    assert len(reporters) == 9
    assert {s.env.get("ASYA_GATEWAY_URL") for s in reporters} == {"http://127.0.0.1:9001"}
    # A user's handler has nothing to report.
    runtime = next(s for s in specs if s.name == "prep/runtime")
    assert "ASYA_GATEWAY_URL" not in runtime.env


def test_a_gateway_may_keep_its_tasks_in_another_store() -> None:
    gateway = dev_plan.GatewayPlan(port=8080, internal_port=9001, store="postgresql://db/asya")

    specs = dev_plan.plan([], SETTINGS, base_env={}, ports=[1, 2, 3, 4], gateway=gateway)

    argv = specs[0].argv
    assert argv[argv.index("--store") + 1] == "postgresql://db/asya"


def test_without_a_gateway_nothing_reports() -> None:
    actor = ActorManifest(name="prep", handler="steps.prep", source="f")

    specs = dev_plan.plan([actor], SETTINGS, base_env={}, ports=[1, 2, 3, 4])

    assert all("ASYA_GATEWAY_URL" not in s.env for s in specs)
    assert "gateway" not in {s.role for s in specs}
