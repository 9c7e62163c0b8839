"""The crew's runtimes: every crew handler reports to the gateway, x-join publishes on its
sidecar's transport, and x-pause is refused where no gateway could ever resume it."""

from __future__ import annotations

from typing import Any

import pytest

import asya_transports as transports
from asya_crew import join as crew_join
from asya_operator import config as operator_config
from asya_operator.models import RUNTIME_CONTAINER, SIDECAR_CONTAINER
from asya_operator.render import RenderError, publishes, render
from asya_shared import env, names
from tests.operator.test_render import (
    CONFIG,
    GATEWAY_URL,
    RUNTIME,
    TRANSPORTS,
    WITH_GATEWAY,
    all_containers,
    assert_no_literal_credentials,
    assert_restricted,
    env_of,
    gateway_entries,
    literal_env,
    make_actor,
    pod_spec,
)
from tests.support.schemas import validate

IMAGE = "ghcr.io/asya-dev/asya:0.1.0"
HANDLERS = {
    names.SINK: "asya_crew.sink.Sink.handle",
    names.SUMP: "asya_crew.sump.Sump.handle",
    names.JOIN: "asya_crew.join.Join.handle",
    names.PAUSE: "asya_crew.pause.Pause.handle",
}
# What the chart gives x-join besides what the operator adds.
JOIN_STORE = [{"name": env.JOIN_STORE, "value": "postgresql://pg.asya-crew.svc/asya"}]


def crew_actor(name: str, namespace: str = "asya-crew", **spec: Any) -> Any:
    spec.setdefault("handler", HANDLERS[name])
    spec.setdefault("image", IMAGE)
    return make_actor(name, namespace, **spec)


def runtime_and_sidecar(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    containers = all_containers(objects)
    return containers[RUNTIME_CONTAINER], containers[SIDECAR_CONTAINER]


def transport_variables(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The container's entries for the transport (which ones, the configuration decides)."""
    sidecar_only = {
        env.ACTOR, env.QUEUE, env.SINK_QUEUE, env.SUMP_QUEUE, env.JOIN_QUEUE, env.PAUSE_QUEUE,
        env.SOCKET_DIR, env.CONCURRENCY,
        env.ACTOR_TIMEOUT, env.RESILIENCY, env.SHUTDOWN_TIMEOUT, env.METRICS_PORT,
        env.GATEWAY_URL,
    }  # fmt: skip
    runtime_only = {env.HANDLER, env.RUNTIME_CONCURRENCY, env.JOIN_STORE}
    return {
        name: item
        for name, item in env_of(container).items()
        if name not in sidecar_only | runtime_only
    }


def scaling_for(transport: str) -> dict[str, Any]:
    # The emulator has no metrics for KEDA: fixed replicas only.
    return {"enabled": transport != "pubsub-emulator"}


# ------------------------------------------------------------------------------- x-join


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
def test_x_join_publishes_on_exactly_its_sidecars_transport(transport: str) -> None:
    actor = crew_actor(
        names.JOIN, transport=transport, scaling=scaling_for(transport), env=JOIN_STORE
    )
    objects = render(actor, WITH_GATEWAY, runtime_source=RUNTIME)
    validate(objects)
    assert_restricted(objects)
    assert_no_literal_credentials(objects)
    runtime, sidecar = runtime_and_sidecar(objects)
    # The same entries, Secrets as the same references: one broker, one set of credentials.
    on_runtime = transport_variables(runtime)
    assert on_runtime == transport_variables(sidecar)
    assert {env.TRANSPORT, env.NAMESPACE} <= set(on_runtime)
    assert env_of(runtime)[env.TRANSPORT]["value"] == TRANSPORTS[transport]["type"]
    assert env_of(runtime)[env.NAMESPACE]["value"] == "asya-crew"
    for item in on_runtime.values():
        if "valueFrom" in item:
            assert set(item["valueFrom"]) == {"secretKeyRef"}, item
    # A key file the sidecar reads from a mounted Secret is mounted for the handler too.
    mounts = {m["mountPath"]: m for m in runtime["volumeMounts"]}
    for mount in sidecar["volumeMounts"]:
        if mount["name"] == "asya-gcp-credentials":
            assert mounts[mount["mountPath"]] == mount
    # x-join's own loader accepts what it got, and the transport builds from it.
    environ = literal_env(runtime)
    settings = crew_join.settings_from(environ)
    assert (settings.transport, settings.namespace) == (TRANSPORTS[transport]["type"], "asya-crew")
    assert transports.create(settings.transport, environ).name == settings.transport


def test_x_join_gets_the_pubsub_key_file_it_is_told_of() -> None:
    actor = crew_actor(names.JOIN, transport="pubsub-secret", env=JOIN_STORE)
    runtime, _ = runtime_and_sidecar(render(actor, CONFIG, runtime_source=RUNTIME))
    path = env_of(runtime)["GOOGLE_APPLICATION_CREDENTIALS"]["value"]
    (mount,) = [m for m in runtime["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    assert mount == {
        "name": "asya-gcp-credentials",
        "mountPath": path.rsplit("/", 1)[0],
        "readOnly": True,
    }


def test_x_join_without_a_gateway_still_gets_its_transport() -> None:
    actor = crew_actor(names.JOIN, transport="rabbitmq-secret", env=JOIN_STORE)
    runtime, _ = runtime_and_sidecar(render(actor, CONFIG, runtime_source=RUNTIME))
    variables = env_of(runtime)
    assert gateway_entries(runtime) == []
    assert variables[env.RABBITMQ_URL]["valueFrom"] == {
        "secretKeyRef": {"name": "rabbitmq-creds", "key": "url"}
    }
    assert variables[env.TRANSPORT]["value"] == "rabbitmq"


def test_x_join_spec_env_wins_once() -> None:
    own = [*JOIN_STORE, {"name": env.RABBITMQ_QUEUE_TYPE, "value": "classic"}]
    actor = crew_actor(names.JOIN, transport="rabbitmq-url", env=own)
    objects = render(actor, CONFIG, runtime_source=RUNTIME)
    validate(objects)
    runtime, sidecar = runtime_and_sidecar(objects)
    names_seen = [item["name"] for item in runtime["env"]]
    assert len(names_seen) == len(set(names_seen)), names_seen
    assert env_of(runtime)[env.RABBITMQ_QUEUE_TYPE]["value"] == "classic"
    assert env_of(sidecar)[env.RABBITMQ_QUEUE_TYPE]["value"] == "quorum"


@pytest.mark.parametrize("crew", [*names.CREW, names.PAUSE])
def test_only_x_join_gets_the_transport(crew: str) -> None:
    assert not publishes(crew)
    runtime, _ = runtime_and_sidecar(
        render(crew_actor(crew, transport="sqs-secret"), WITH_GATEWAY, runtime_source=RUNTIME)
    )
    assert set(env_of(runtime)) == {
        env.HANDLER,
        env.SOCKET_DIR,
        env.RUNTIME_CONCURRENCY,
        env.GATEWAY_URL,
    }
    assert [m["name"] for m in runtime["volumeMounts"]] == [
        "asya-socket",
        "asya-runtime",
        "asya-runtime-tmp",
    ]


def test_an_ordinary_actor_is_no_crew_actor() -> None:
    # Not the crew's name: nothing of the crew's, whatever the handler.
    for name in ("joiner", "x-joins", "infer"):
        actor = make_actor(name, handler=HANDLERS[names.JOIN], transport="pubsub-secret")
        runtime, _ = runtime_and_sidecar(render(actor, WITH_GATEWAY, runtime_source=RUNTIME))
        assert set(env_of(runtime)) == {env.HANDLER, env.SOCKET_DIR, env.RUNTIME_CONCURRENCY}
        assert len(runtime["volumeMounts"]) == 3


# ---------------------------------------------------------------------- the gateway URL


@pytest.mark.parametrize("crew", names.RESERVED)
def test_every_crew_handler_reports_to_the_gateway(crew: str) -> None:
    expected = [{"name": env.GATEWAY_URL, "value": GATEWAY_URL}]
    objects = render(crew_actor(crew, env=JOIN_STORE), WITH_GATEWAY, runtime_source=RUNTIME)
    validate(objects)
    runtime, sidecar = runtime_and_sidecar(objects)
    assert gateway_entries(runtime) == expected
    assert gateway_entries(sidecar) == expected
    # The crew's own spec.env wins for its handler, once; the sidecar keeps the operator's.
    own = [{"name": env.GATEWAY_URL, "value": "http://other.asya.svc:8081"}]
    runtime, sidecar = runtime_and_sidecar(
        render(crew_actor(crew, env=own), WITH_GATEWAY, runtime_source=RUNTIME)
    )
    assert gateway_entries(runtime) == own
    assert gateway_entries(sidecar) == expected


# ------------------------------------------------------------------------------ x-pause


def test_x_pause_without_any_gateway_is_refused_naming_what_to_set() -> None:
    plain = operator_config.parse({"transports": TRANSPORTS, "defaultTransport": "rabbitmq-url"})
    assert plain.gateway is None
    with pytest.raises(RenderError) as caught:
        render(crew_actor(names.PAUSE), plain, runtime_source=RUNTIME)
    message = str(caught.value)
    assert "x-pause" in message
    assert "gateway.url" in message
    assert env.GATEWAY_URL in message
    assert "pause.enabled: false" in message


@pytest.mark.parametrize(
    "spec",
    [
        {"env": [{"name": env.GATEWAY_URL, "value": "http://gw.asya.svc:8081"}]},
        # The URL may come from a ConfigMap the operator cannot see into.
        {"envFrom": [{"configMapRef": {"name": "asya-gateway-url"}}]},
    ],
    ids=["env", "envFrom"],
)
def test_x_pause_with_its_own_gateway_url_renders(spec: dict[str, Any]) -> None:
    objects = render(crew_actor(names.PAUSE, **spec), CONFIG, runtime_source=RUNTIME)
    validate(objects)
    runtime, sidecar = runtime_and_sidecar(objects)
    assert gateway_entries(runtime) == spec.get("env", [])
    assert gateway_entries(sidecar) == []


def test_the_refusal_is_for_x_pause_only() -> None:
    for crew in (*names.CREW, names.JOIN):
        render(crew_actor(crew, env=JOIN_STORE), CONFIG, runtime_source=RUNTIME)
    render(make_actor("pause", handler=HANDLERS[names.PAUSE]), CONFIG, runtime_source=RUNTIME)
    assert pod_spec(render(crew_actor(names.PAUSE), WITH_GATEWAY, runtime_source=RUNTIME))
