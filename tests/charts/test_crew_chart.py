"""charts/asya-crew: x-sink, x-sump, x-join and x-pause as AsyncActors the CRD admits, which
the operator's renderer turns into valid, restricted workloads on the queues every actor
reports to."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

import asya_transports as transports
from asya_cli.dev_plan import HOLDING_RESILIENCY
from asya_crew import join as crew_join
from asya_crew import pause as crew_pause
from asya_crew.main import ROLES
from asya_operator import config as operator_config
from asya_operator import render as operator_render
from asya_operator import transport_env
from asya_operator.crd import CHART_CRD_PATH
from asya_operator.models import RUNTIME_CONTAINER, SIDECAR_CONTAINER, AsyncActor
from asya_shared import env, names
from tests.charts.charts import (
    CREW,
    CREW_NAMESPACE,
    OPERATOR,
    OPERATOR_NAMESPACE,
    VALUES,
    Obj,
    assert_restricted,
    chart,
    expected_error,
    of_kind,
    one,
    pod_templates,
    render,
    render_templates,
    values_file,
    values_files,
)
from tests.support.schemas import CrdValidator, validate

FILES = values_files("crew")
# The least a user gives: nothing. The stores default to files in the pods' /tmp (x-join's to
# a SQLite file, for its one pod), and x-pause, which needs a gateway, is off.
MINIMAL: dict[str, Any] = {}
CASES = [
    pytest.param(MINIMAL, id="default"),
    *(pytest.param(values_file(f), id=f.stem) for f in FILES),
]
BAD = sorted((VALUES / "bad" / "crew").glob("*.yaml"))
# The crew's actor name -> its role in asya_crew.main.ROLES (and its key in the values).
ACTORS = {names.SINK: "sink", names.SUMP: "sump", names.JOIN: "join", names.PAUSE: "pause"}
CRD = CrdValidator.from_file(CHART_CRD_PATH)


def rendered(values: dict[str, Any]) -> list[Obj]:
    return render(CREW, values, CREW_NAMESPACE)


def enabled(values: dict[str, Any]) -> set[str]:
    """The crew actors the values switch on: x-sink and x-sump always."""
    merged = chart(CREW).merge_values(values)
    return {name for name, role in ACTORS.items() if merged[role].get("enabled", True)}


def actors(values: dict[str, Any]) -> dict[str, Obj]:
    found = {a["metadata"]["name"]: a for a in of_kind(rendered(values), "AsyncActor")}
    assert set(found) == enabled(values)
    return found


def operator_config_for(stem: str) -> operator_config.OperatorConfig:
    """The configuration the operator chart writes for the same transport's values file
    (the default crew values go with the rabbitmq one)."""
    path = VALUES / "operator" / f"{'rabbitmq' if stem == 'default' else stem}.yaml"
    objects = render(OPERATOR, values_file(path), OPERATOR_NAMESPACE)
    return operator_config.parse(yaml.safe_load(one(objects, "ConfigMap")["data"]["operator.yaml"]))


# (the operator values file's stem, the crew values)
PAIRS = [("default", MINIMAL), *((f.stem, values_file(f)) for f in FILES)]
PAIRED = [pytest.param(stem, values, id=stem) for stem, values in PAIRS]
# What a test of the holding policy compares with, typed for the lookups below.
HOLDING: dict[str, Any] = HOLDING_RESILIENCY


def env_of(container: Obj) -> dict[str, Obj]:
    return {item["name"]: item for item in container.get("env", [])}


def containers(deployment: Obj) -> dict[str, Obj]:
    pod = deployment["spec"]["template"]["spec"]
    return {c["name"]: c for c in [*pod.get("initContainers", []), *pod["containers"]]}


# ------------------------------------------------------------------------ chart and lint


def test_chart_metadata() -> None:
    metadata = chart(CREW).metadata
    assert metadata["apiVersion"] == "v2"
    assert (metadata["name"], metadata["version"], metadata["appVersion"]) == (
        "asya-crew",
        "0.1.0",
        "0.1.0",
    )


@pytest.mark.parametrize("values", CASES)
def test_lint_is_clean(values: dict[str, Any]) -> None:
    report = helm.lint(CREW, values, strict=True, namespace=CREW_NAMESPACE)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


# ------------------------------------------------------------------ the AsyncActors


@pytest.mark.parametrize("values", CASES)
def test_actors_are_admitted_by_the_crd(values: dict[str, Any]) -> None:
    for name, actor in actors(values).items():
        assert actor["apiVersion"] == "asya.sh/v1alpha1"
        assert actor["metadata"]["namespace"] == CREW_NAMESPACE
        assert CRD.errors(actor) == [], name
        parsed = AsyncActor.from_object(actor)
        assert parsed.actor == name


def test_the_crd_check_would_catch_a_bad_actor() -> None:
    actor = actors(MINIMAL)[names.SINK]
    actor["spec"]["scaling"]["queueLenght"] = 5
    assert CRD.errors(actor)
    actor = actors(MINIMAL)[names.SINK]
    actor["spec"]["replicas"] = 2  # refused by a CEL rule while scaling is on
    assert any("replicas is only allowed" in e for e in CRD.errors(actor))


@pytest.mark.parametrize("values", CASES)
def test_actors_run_the_crew_handlers_with_their_stores(values: dict[str, Any]) -> None:
    merged = chart(CREW).merge_values(values)
    stores = merged["stores"]
    by_role = {"sink": stores["results"], "sump": stores["sump"], "join": stores["join"]}
    for name, actor in actors(values).items():
        role = ACTORS[name]
        handler, variable = ROLES[role]
        spec = actor["spec"]
        assert spec["handler"] == handler
        assert spec["image"] == "ghcr.io/asya-dev/asya:0.1.0"
        assert spec.get("transport") == (values.get("transport") or None)
        if variable is None:  # x-pause keeps nothing itself: the gateway does
            assert not {env.JOIN_STORE, env.RESULT_STORE, env.SUMP_STORE} & set(env_of(spec))
            continue
        secret = merged[role].get("storeSecretRef")
        if secret:
            assert env_of(spec)[variable]["valueFrom"] == {
                "secretKeyRef": {"name": secret["name"], "key": secret.get("key", "url")}
            }
        else:
            assert env_of(spec)[variable]["value"] == by_role[role]


@pytest.mark.parametrize("values", CASES)
def test_other_objects_are_valid(values: dict[str, Any]) -> None:
    others = [o for o in rendered(values) if o["kind"] != "AsyncActor"]
    validate(others)
    assert {o["kind"] for o in others} <= {"ServiceAccount"}


def test_s3_keys_come_from_the_secret() -> None:
    spec = actors(values_file(VALUES / "crew" / "sqs.yaml"))[names.SINK]["spec"]
    variables = env_of(spec)
    assert variables["AWS_ACCESS_KEY_ID"]["valueFrom"] == {
        "secretKeyRef": {"name": "crew-s3", "key": "id"}
    }
    assert variables["AWS_SECRET_ACCESS_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "crew-s3", "key": "key"}
    }
    assert variables["AWS_REGION"]["value"] == "eu-west-1"
    assert env.S3_ENDPOINT not in variables
    spec = actors(values_file(VALUES / "crew" / "rabbitmq.yaml"))[names.SUMP]["spec"]
    variables = env_of(spec)
    assert variables[env.S3_ENDPOINT]["value"] == "http://minio.storage.svc:9000"
    assert variables["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["key"] == "accessKeyId"
    assert variables["ASYA_LOG_LEVEL"]["value"] == "DEBUG"


def test_s3_through_pod_identity_uses_the_chart_service_account() -> None:
    objects = rendered(values_file(VALUES / "crew" / "sqs-pod-identity.yaml"))
    account = one(objects, "ServiceAccount")
    assert account["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/asya-crew"
    }
    for actor in of_kind(objects, "AsyncActor"):
        spec = actor["spec"]
        assert spec["serviceAccountName"] == account["metadata"]["name"]
        assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(env_of(spec))
        assert spec["queue"] == {"deletionPolicy": "Retain"}


def test_default_has_no_credentials_and_no_service_account() -> None:
    assert not of_kind(rendered(MINIMAL), "ServiceAccount")
    for name, actor in actors(MINIMAL).items():
        assert "serviceAccountName" not in actor["spec"]
        _, variable = ROLES[ACTORS[name]]
        expected = [] if variable is None else [variable]
        assert [v["name"] for v in actor["spec"].get("env", [])] == expected


# ------------------------------------------------- through the operator's renderer


def through_the_operator(stem: str, values: dict[str, Any]) -> dict[str, list[Obj]]:
    config = operator_config_for(stem)
    return {
        name: operator_render.render(AsyncActor.from_object(actor), config)
        for name, actor in actors(values).items()
    }


@pytest.mark.parametrize(("stem", "values"), PAIRED)
def test_operator_renders_valid_restricted_workloads(stem: str, values: dict[str, Any]) -> None:
    for name, objects in through_the_operator(stem, values).items():
        validate(objects)
        for where, pod in pod_templates(objects).items():
            assert_restricted(pod, f"{name} {where}")


@pytest.mark.parametrize(("stem", "values"), PAIRED)
def test_crew_consumes_the_queues_every_actor_reports_to(stem: str, values: dict[str, Any]) -> None:
    # The operator chart's crewNamespace is where this chart is installed.
    assert operator_config_for(stem).crew_namespace == CREW_NAMESPACE
    for name, objects in through_the_operator(stem, values).items():
        sidecar = env_of(containers(one(objects, "Deployment"))[SIDECAR_CONTAINER])
        own = sidecar[env.QUEUE]["value"]
        assert own == names.queue_name(CREW_NAMESPACE, name)
        if name in names.CREW:
            target = env.SINK_QUEUE if name == names.SINK else env.SUMP_QUEUE
            assert sidecar[target]["value"] == own
        # Every sidecar, the crew's own included, knows this crew's holding queues, whether or
        # not these values run x-join and x-pause.
        assert sidecar[env.JOIN_QUEUE]["value"] == names.queue_name(CREW_NAMESPACE, names.JOIN)
        assert sidecar[env.PAUSE_QUEUE]["value"] == names.queue_name(CREW_NAMESPACE, names.PAUSE)


@pytest.mark.parametrize(("stem", "values"), PAIRED)
def test_runtime_gets_the_store_settings(stem: str, values: dict[str, Any]) -> None:
    for name, objects in through_the_operator(stem, values).items():
        deployment = one(objects, "Deployment")
        runtime = containers(deployment)[RUNTIME_CONTAINER]
        handler, variable = ROLES[ACTORS[name]]
        assert env_of(runtime)[env.HANDLER]["value"] == handler
        assert variable is None or variable in env_of(runtime)
        assert runtime["image"] == "ghcr.io/asya-dev/asya:0.1.0"


@pytest.mark.parametrize(("stem", "values"), PAIRED)
def test_scaling_follows_the_values(stem: str, values: dict[str, Any]) -> None:
    merged = chart(CREW).merge_values(values)
    for name, objects in through_the_operator(stem, values).items():
        settings = merged[ACTORS[name]]
        deployment = one(objects, "Deployment")
        if settings["scaling"]["enabled"]:
            scaled = one(objects, "ScaledObject")["spec"]
            assert scaled["minReplicaCount"] == settings["scaling"]["minReplicas"]
            assert scaled["maxReplicaCount"] == settings["scaling"]["maxReplicas"]
            assert "replicas" not in deployment["spec"]
        else:
            assert not of_kind(objects, "ScaledObject")
            assert deployment["spec"]["replicas"] == settings["replicas"]


def gateway_urls(objects: list[Obj]) -> tuple[list[Obj], list[Obj]]:
    """The ASYA_GATEWAY_URL entries of the runtime and of the sidecar."""
    found = containers(one(objects, "Deployment"))
    return (
        [i for i in found[RUNTIME_CONTAINER]["env"] if i["name"] == env.GATEWAY_URL],
        [i for i in found[SIDECAR_CONTAINER]["env"] if i["name"] == env.GATEWAY_URL],
    )


def url_entry(url: str | None) -> list[Obj]:
    return [] if url is None else [{"name": env.GATEWAY_URL, "value": url}]


@pytest.mark.parametrize(("stem", "values"), PAIRED)
def test_crew_reports_to_the_gateway(stem: str, values: dict[str, Any]) -> None:
    # x-sink reports each task's final status, x-sump the failures: the handlers need the
    # URL (this chart's, else the operator's), the sidecars the operator's.
    crew_url = chart(CREW).merge_values(values)["gateway"]["url"] or None
    gateway = operator_config_for(stem).gateway
    operator_url = gateway.url if gateway is not None else None
    for name, actor in actors(values).items():
        assert [
            i for i in actor["spec"].get("env", []) if i["name"] == env.GATEWAY_URL
        ] == url_entry(crew_url), name
    for name, objects in through_the_operator(stem, values).items():
        runtime, sidecar = gateway_urls(objects)
        assert runtime == url_entry(crew_url or operator_url), name
        assert sidecar == url_entry(operator_url), name


def test_crew_gateway_url_wins_for_the_handlers_only() -> None:
    # The operator's values name a gateway; the crew's point elsewhere.
    assert operator_config_for("rabbitmq").gateway is not None
    values = {**MINIMAL, "gateway": {"url": "http://other-gateway.asya.svc:8081"}}
    for objects in through_the_operator("rabbitmq", values).values():
        runtime, sidecar = gateway_urls(objects)
        assert runtime == url_entry("http://other-gateway.asya.svc:8081")
        assert sidecar == url_entry("http://asya-gateway-internal.asya-gateway.svc:8081")


def test_pod_template_settings_reach_the_pod() -> None:
    values = values_file(VALUES / "crew" / "pubsub.yaml")
    for objects in through_the_operator("pubsub", values).values():
        pod = one(objects, "Deployment")["spec"]["template"]
        assert pod["metadata"]["annotations"]["team"] == "ml-platform"
        assert pod["spec"]["affinity"] == values["affinity"]
        assert containers(one(objects, "Deployment"))[RUNTIME_CONTAINER]["imagePullPolicy"] == (
            "Always"
        )


# ------------------------------------------------------------- x-join and x-pause


@pytest.mark.parametrize("values", CASES)
def test_holding_actors_get_the_policy_asya_dev_gives_them(values: dict[str, Any]) -> None:
    for name, actor in actors(values).items():
        if name in names.HOLDING:
            assert actor["spec"]["resiliency"] == HOLDING_RESILIENCY, name
        else:
            assert "resiliency" not in actor["spec"], name


@pytest.mark.parametrize(("stem", "values"), PAIRED)
def test_holding_actors_sidecars_retry_what_may_come_back(
    stem: str, values: dict[str, Any]
) -> None:
    for name, objects in through_the_operator(stem, values).items():
        if name not in names.HOLDING:
            continue
        sidecar = env_of(containers(one(objects, "Deployment"))[SIDECAR_CONTAINER])
        policy = json.loads(sidecar[env.RESILIENCY]["value"])
        assert policy["rules"] == HOLDING["rules"]
        assert policy["policies"]["refused"]["maxAttempts"] == 1
        default = policy["policies"]["default"]
        expected = HOLDING["policies"]["default"]
        assert {k: default[k] for k in expected} == expected


JOINING = [pytest.param(s, v, id=s) for s, v in PAIRS if names.JOIN in enabled(v)]


@pytest.mark.parametrize(("stem", "values"), JOINING)
def test_x_join_publishes_on_its_sidecars_transport(stem: str, values: dict[str, Any]) -> None:
    objects = through_the_operator(stem, values)[names.JOIN]
    found = containers(one(objects, "Deployment"))
    runtime, sidecar = env_of(found[RUNTIME_CONTAINER]), env_of(found[SIDECAR_CONTAINER])
    config = operator_config_for(stem)
    transport = config.transports[config.transport_name(values.get("transport") or None) or ""]
    for variable in transport_env.variables(transport):
        # The same entry as the sidecar's: the same broker, a Secret's key as a reference.
        assert runtime[variable.name] == sidecar[variable.name], variable.name
        if isinstance(variable.value, transport_env.FromSecret):
            assert "secretKeyRef" in runtime[variable.name]["valueFrom"]
    assert runtime[env.TRANSPORT] == sidecar[env.TRANSPORT]
    assert (
        runtime[env.NAMESPACE]
        == sidecar[env.NAMESPACE]
        == {
            "name": env.NAMESPACE,
            "value": CREW_NAMESPACE,
        }
    )
    mounts = {m["mountPath"] for m in found[RUNTIME_CONTAINER]["volumeMounts"]}
    assert transport_env.GCP_CREDENTIALS_DIR in mounts or (
        "GOOGLE_APPLICATION_CREDENTIALS" not in runtime
    )
    # What x-join makes of it: its own settings loader, and the transport built from them.
    environ = {k: v.get("value", "from-a-secret") for k, v in runtime.items()}
    if env.RABBITMQ_URL in environ and "value" not in runtime[env.RABBITMQ_URL]:
        environ[env.RABBITMQ_URL] = "amqp://user:secret@rabbitmq.mq:5672/"
    settings = crew_join.settings_from(environ)
    assert settings.namespace == CREW_NAMESPACE
    assert transports.create(settings.transport, environ).name == transport.type


def test_join_settings_reach_x_join() -> None:
    spec = actors(values_file(VALUES / "crew" / "rabbitmq.yaml"))[names.JOIN]["spec"]
    variables = env_of(spec)
    assert variables[env.JOIN_STORE]["valueFrom"] == {
        "secretKeyRef": {"name": "asya-join-store", "key": "url"}
    }
    expected = {env.JOIN_SWEEP_INTERVAL: "2s", env.JOIN_LEASE: "1m30s", env.JOIN_KEEP_DONE: "2h"}
    assert {name: variables[name]["value"] for name in expected} == expected
    # x-join's own loader takes them.
    environ = {k: v.get("value", "postgresql://pg/asya") for k, v in variables.items()}
    settings = crew_join.settings_from(
        {**environ, env.TRANSPORT: "rabbitmq", env.NAMESPACE: CREW_NAMESPACE}
    )
    assert (settings.sweep_interval, settings.lease, settings.keep_done) == (2.0, 90.0, 7200.0)
    # The S3 settings are x-sink's and x-sump's: x-join's AWS variables are the transport's.
    assert not {env.S3_ENDPOINT, "AWS_ACCESS_KEY_ID", "AWS_REGION"} & set(variables)


PAUSING = [pytest.param(s, v, id=s) for s, v in PAIRS if names.PAUSE in enabled(v)]


@pytest.mark.parametrize(("stem", "values"), PAUSING)
def test_x_pause_has_the_gateway_url(stem: str, values: dict[str, Any]) -> None:
    objects = through_the_operator(stem, values)[names.PAUSE]
    runtime = env_of(containers(one(objects, "Deployment"))[RUNTIME_CONTAINER])
    gateway = operator_config_for(stem).gateway
    merged = chart(CREW).merge_values(values)
    # The crew's own URL, else the operator's.
    expected = merged["gateway"]["url"] or (gateway.url if gateway is not None else None)
    assert expected
    assert runtime[env.GATEWAY_URL]["value"] == expected
    timeout = merged["pause"]["timeout"]
    if timeout:
        assert runtime[env.PAUSE_TIMEOUT]["value"] == timeout
    else:
        assert env.PAUSE_TIMEOUT not in runtime


def test_some_cases_cover_each_holding_actor() -> None:
    # The parametrised tests above filter their cases: make sure none ran empty.
    assert {p.id for p in JOINING} >= {"default", "rabbitmq", "sqs", "pubsub", "pubsub-emulator"}
    assert {p.id for p in PAUSING} >= {"rabbitmq", "pubsub"}
    # x-pause needs a gateway: the defaults leave it off.
    assert "default" not in {p.id for p in PAUSING}
    # Some cases scale x-join to several pods, on PostgreSQL: a literal URL and a Secret.
    several = {
        stem: merged["stores"]["join"] if not merged["join"]["storeSecretRef"] else "secret"
        for stem, merged in ((s, chart(CREW).merge_values(v)) for s, v in PAIRS)
        if merged["join"]["enabled"]
        and merged["join"]["scaling"]["enabled"]
        and merged["join"]["scaling"]["maxReplicas"] > 1
    }
    assert several.get("sqs", "").startswith("postgresql://"), several
    assert several.get("pubsub") == "secret", several


def test_pause_timeout_is_one_x_pause_accepts() -> None:
    spec = actors(values_file(VALUES / "crew" / "rabbitmq.yaml"))[names.PAUSE]["spec"]
    environ = {item["name"]: item["value"] for item in spec["env"]}
    environ[env.GATEWAY_URL] = "http://asya-gateway-internal.asya-gateway.svc:8081"
    assert crew_pause.Pause(environ).default_timeout == 72 * 3600


def test_x_pause_without_any_gateway_url_is_refused_by_the_operator() -> None:
    # The sqs operator values name no gateway; neither do these crew values.
    assert operator_config_for("sqs").gateway is None
    values = {**values_file(VALUES / "crew" / "sqs.yaml"), "pause": {"enabled": True}}
    pause = actors(values)[names.PAUSE]
    with pytest.raises(operator_render.RenderError, match=r"pause\.enabled: false"):
        operator_render.render(AsyncActor.from_object(pause), operator_config_for("sqs"))
    # With the crew's own gateway.url it runs.
    values["gateway"] = {"url": "http://asya-gateway-internal.asya-gateway.svc:8081"}
    pause = actors(values)[names.PAUSE]
    validate(operator_render.render(AsyncActor.from_object(pause), operator_config_for("sqs")))


def test_without_values_the_chart_runs_one_x_join_on_sqlite_and_no_x_pause() -> None:
    found = actors({})
    assert set(found) == {names.SINK, names.SUMP, names.JOIN}
    spec = found[names.JOIN]["spec"]
    assert env_of(spec)[env.JOIN_STORE] == {
        "name": env.JOIN_STORE,
        "value": "sqlite:///tmp/asya/join.db",
    }
    # One pod, fixed: the SQLite file serves only the pod it lives in.
    assert spec["replicas"] == 1
    assert spec["scaling"]["enabled"] is False
    objects = through_the_operator("default", {})[names.JOIN]
    assert one(objects, "Deployment")["spec"]["replicas"] == 1
    assert not of_kind(objects, "ScaledObject")
    notes = render_templates(CREW, {}, CREW_NAMESPACE)["asya-crew/templates/NOTES.txt"]
    assert "SQLite join store" in notes
    assert names.PAUSE not in notes
    # Without x-join, only x-sink and x-sump.
    assert set(actors({"join": {"enabled": False}})) == {names.SINK, names.SUMP}


def test_an_emptied_join_store_is_refused_naming_the_ways_out() -> None:
    with pytest.raises(helm.HelmRenderError) as caught:
        rendered({"stores": {"join": ""}})
    message = str(caught.value)
    for hint in ("join.storeSecretRef", "stores.join", "join.enabled: false", "single replica"):
        assert hint in message
    # Emptied, with x-join off, it installs.
    assert set(actors({"stores": {"join": ""}, "join": {"enabled": False}})) == {
        names.SINK,
        names.SUMP,
    }


def test_a_store_secret_wins_over_stores_join() -> None:
    # Both given, even the SQLite default with several pods: the Secret's URL is the store.
    for store in ("postgresql://postgres.db.svc/asya_join", "sqlite:///tmp/asya/join.db"):
        values = {
            "stores": {"join": store},
            "join": {
                "storeSecretRef": {"name": "asya-join-store", "key": "dsn"},
                "scaling": {"enabled": True, "maxReplicas": 4},
            },
        }
        spec = actors(values)[names.JOIN]["spec"]
        (entry,) = [i for i in spec["env"] if i["name"] == env.JOIN_STORE]
        assert entry == {
            "name": env.JOIN_STORE,
            "valueFrom": {"secretKeyRef": {"name": "asya-join-store", "key": "dsn"}},
        }, store
        assert spec["scaling"]["maxReplicas"] == 4
        notes = render_templates(CREW, values, CREW_NAMESPACE)["asya-crew/templates/NOTES.txt"]
        assert "Secret asya-join-store (key dsn)" in notes
        assert store not in notes
        assert "SQLite join store" not in notes


def test_a_sqlite_join_store_with_one_pod_installs() -> None:
    values = values_file(VALUES / "crew" / "pubsub-emulator.yaml")
    spec = actors(values)[names.JOIN]["spec"]
    assert env_of(spec)[env.JOIN_STORE]["value"] == "sqlite:///tmp/asya/join.db"
    assert spec["replicas"] == 1
    notes = render_templates(CREW, values, CREW_NAMESPACE)["asya-crew/templates/NOTES.txt"]
    assert "SQLite join store" in notes


def readme_defaults() -> dict[str, str]:
    """The README values table's rows that name one value: its key -> the default it states
    (the first code span of the default column)."""
    found: dict[str, str] = {}
    for line in (CREW / "README.md").read_text().splitlines():
        match = re.match(r"\| `([\w.]+)` \| `([^`]*)`", line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def as_written(value: Any) -> str:
    """A default as the README writes it: YAML for booleans and empty maps, `""` for empty."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value == "":
        return '""'
    if value == {}:
        return "{}"
    return str(value)


def test_readme_states_the_chart_defaults() -> None:
    defaults = chart(CREW).merge_values({})
    stated = readme_defaults()
    # The defaults changed with x-join and x-pause: the table must say so.
    assert {"stores.join", "join.enabled", "join.scaling.enabled", "pause.enabled"} <= set(stated)
    for key, text in stated.items():
        value: Any = defaults
        for part in key.split("."):
            assert isinstance(value, dict), f"README names {key}, but {part} is inside a scalar"
            assert part in value, f"README names {key}, which values.yaml does not have"
            value = value[part]
        assert text == as_written(value), f"README states {key}: {text}, values.yaml: {value!r}"


# ------------------------------------------------------------------------ bad values


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_values_fail_naming_the_field(path: Path) -> None:
    values = values_file(path)
    with pytest.raises((helm.HelmValuesError, helm.HelmRenderError)) as caught:
        rendered(values)
    assert expected_error(path) in str(caught.value)
