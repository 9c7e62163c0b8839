"""charts/asya-crew: x-sink and x-sump as AsyncActors the CRD admits, which the operator's
renderer turns into valid, restricted workloads on the queues every actor reports to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from asya_crew.main import ROLES
from asya_operator import config as operator_config
from asya_operator import render as operator_render
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
    values_file,
    values_files,
)
from tests.support.schemas import CrdValidator, validate

FILES = values_files("crew")
CASES = [pytest.param({}, id="default"), *(pytest.param(values_file(f), id=f.stem) for f in FILES)]
BAD = sorted((VALUES / "bad" / "crew").glob("*.yaml"))
# The crew's actor name -> its role in asya_crew.main.ROLES.
ACTORS = {names.SINK: "sink", names.SUMP: "sump"}
CRD = CrdValidator.from_file(CHART_CRD_PATH)


def rendered(values: dict[str, Any]) -> list[Obj]:
    return render(CREW, values, CREW_NAMESPACE)


def actors(values: dict[str, Any]) -> dict[str, Obj]:
    found = {a["metadata"]["name"]: a for a in of_kind(rendered(values), "AsyncActor")}
    assert set(found) == set(ACTORS)
    return found


def operator_config_for(stem: str) -> operator_config.OperatorConfig:
    """The configuration the operator chart writes for the same transport's values file
    (the default crew values go with the rabbitmq one)."""
    path = VALUES / "operator" / f"{'rabbitmq' if stem == 'default' else stem}.yaml"
    objects = render(OPERATOR, values_file(path), OPERATOR_NAMESPACE)
    return operator_config.parse(yaml.safe_load(one(objects, "ConfigMap")["data"]["operator.yaml"]))


PAIRED = [pytest.param("default", {}, id="default")] + [
    pytest.param(f.stem, values_file(f), id=f.stem) for f in FILES
]


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
    actor = actors({})[names.SINK]
    actor["spec"]["scaling"]["queueLenght"] = 5
    assert CRD.errors(actor)
    actor = actors({})[names.SINK]
    actor["spec"]["replicas"] = 2  # refused by a CEL rule while scaling is on
    assert any("replicas is only allowed" in e for e in CRD.errors(actor))


@pytest.mark.parametrize("values", CASES)
def test_actors_run_the_crew_handlers_with_their_stores(values: dict[str, Any]) -> None:
    stores = chart(CREW).merge_values(values)["stores"]
    by_role = {"sink": stores["results"], "sump": stores["sump"]}
    for name, actor in actors(values).items():
        role = ACTORS[name]
        handler, variable = ROLES[role]
        spec = actor["spec"]
        assert spec["handler"] == handler
        assert spec["image"] == "ghcr.io/asya-dev/asya:0.1.0"
        assert env_of(spec)[variable]["value"] == by_role[role]
        assert spec.get("transport") == (values.get("transport") or None)


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
    assert not of_kind(rendered({}), "ServiceAccount")
    for name, actor in actors({}).items():
        assert "serviceAccountName" not in actor["spec"]
        _, variable = ROLES[ACTORS[name]]
        assert [v["name"] for v in actor["spec"]["env"]] == [variable]


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
        target = env.SINK_QUEUE if name == names.SINK else env.SUMP_QUEUE
        assert sidecar[target]["value"] == own


@pytest.mark.parametrize(("stem", "values"), PAIRED)
def test_runtime_gets_the_store_settings(stem: str, values: dict[str, Any]) -> None:
    for name, objects in through_the_operator(stem, values).items():
        deployment = one(objects, "Deployment")
        runtime = containers(deployment)[RUNTIME_CONTAINER]
        handler, variable = ROLES[ACTORS[name]]
        assert env_of(runtime)[env.HANDLER]["value"] == handler
        assert variable in env_of(runtime)
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
        assert [i for i in actor["spec"]["env"] if i["name"] == env.GATEWAY_URL] == url_entry(
            crew_url
        ), name
    for name, objects in through_the_operator(stem, values).items():
        runtime, sidecar = gateway_urls(objects)
        assert runtime == url_entry(crew_url or operator_url), name
        assert sidecar == url_entry(operator_url), name


def test_crew_gateway_url_wins_for_the_handlers_only() -> None:
    # The operator's values name a gateway; the crew's point elsewhere.
    assert operator_config_for("rabbitmq").gateway is not None
    values = {"gateway": {"url": "http://other-gateway.asya.svc:8081"}}
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


# ------------------------------------------------------------------------ bad values


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_values_fail_naming_the_field(path: Path) -> None:
    values = values_file(path)
    with pytest.raises((helm.HelmValuesError, helm.HelmRenderError)) as caught:
        rendered(values)
    assert expected_error(path) in str(caught.value)
