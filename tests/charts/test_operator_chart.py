"""charts/asya-operator: lint, render with every values file, and check what it installs:
valid objects, least-privilege RBAC, a restricted pod, and a configuration file the operator
accepts."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asya_operator import config as operator_config
from asya_operator import crd
from tests.charts.charts import (
    OPERATOR,
    OPERATOR_NAMESPACE,
    VALUES,
    Grant,
    Obj,
    assert_restricted,
    chart,
    expected_error,
    grants,
    of_kind,
    one,
    pod_templates,
    render,
    values_file,
    values_files,
)
from tests.support.schemas import validate

FILES = values_files("operator")
CASES = [pytest.param({}, id="default"), *(pytest.param(values_file(f), id=f.stem) for f in FILES)]
BAD = sorted((VALUES / "bad" / "operator").glob("*.yaml"))


def rendered(values: dict[str, Any]) -> list[Obj]:
    return render(OPERATOR, values, OPERATOR_NAMESPACE)


def values_of(stem: str) -> dict[str, Any]:
    return values_file(VALUES / "operator" / f"{stem}.yaml")


def container(objects: list[Obj]) -> Obj:
    (found,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    result: Obj = found
    return result


def env_of(objects: list[Obj]) -> dict[str, Obj]:
    return {item["name"]: item for item in container(objects).get("env", [])}


def operator_yaml(objects: list[Obj]) -> str:
    text: str = one(objects, "ConfigMap")["data"]["operator.yaml"]
    return text


def loaded(objects: list[Obj], tmp_path: Path) -> operator_config.OperatorConfig:
    path = tmp_path / "operator.yaml"
    path.write_text(operator_yaml(objects))
    return operator_config.load(path)


# ---------------------------------------------------------------------- chart, lint, CRD


def test_chart_metadata() -> None:
    metadata = chart(OPERATOR).metadata
    assert metadata["apiVersion"] == "v2"
    assert (metadata["name"], metadata["version"], metadata["appVersion"]) == (
        "asya-operator",
        "0.1.0",
        "0.1.0",
    )


@pytest.mark.parametrize("values", CASES)
def test_lint_is_clean(values: dict[str, Any]) -> None:
    report = helm.lint(OPERATOR, values, strict=True, namespace=OPERATOR_NAMESPACE)
    assert report["errors"] == []
    # Severity 2 and 3 are warnings and errors; 1 is advice ("icon is recommended").
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_crd_copy_is_the_generated_crd() -> None:
    assert crd.CHART_CRD_PATH == OPERATOR / "crds" / "asyncactor.yaml"
    assert crd.CHART_CRD_PATH.read_text() == crd.render(), (
        "charts/asya-operator/crds/asyncactor.yaml is out of date: run `make crds`"
    )
    assert crd.CHART_BINDING_CRD_PATH.read_text() == crd.render_binding(), (
        "charts/asya-operator/crds/asyabinding.yaml is out of date: run `make crds`"
    )
    shipped = {item["name"]: item["data"] for item in chart(OPERATOR).crds}
    assert shipped == {
        "crds/asyncactor.yaml": crd.render(),
        "crds/asyabinding.yaml": crd.render_binding(),
    }
    documents = [yaml.safe_load(shipped[name]) for name in sorted(shipped)]
    assert documents == [crd.build_binding_crd(), crd.build_crd()]
    validate(documents)


def test_crd_check_covers_the_chart_copy(tmp_path: Path) -> None:
    main, copy = tmp_path / "crds.yaml", tmp_path / "chart.yaml"
    assert crd.main(["--output", str(main), "--output", str(copy)]) == 0
    assert main.read_text() == copy.read_text() == crd.render()
    copy.write_text(copy.read_text().replace("maxItems: 64", "maxItems: 65"))
    assert crd.main(["--check", "--output", str(main), "--output", str(copy)]) == 1


# --------------------------------------------------------------------- rendered objects


@pytest.mark.parametrize("values", CASES)
def test_every_object_is_valid(values: dict[str, Any]) -> None:
    objects = rendered(values)
    # No schema for the Prometheus Operator's CRD here: its shape is checked apart.
    validate(o for o in objects if o["kind"] != "ServiceMonitor")
    for obj in objects:
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"], obj["metadata"]


def test_default_installs_exactly_these_objects() -> None:
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in rendered({}))
    assert kinds == [
        ("ClusterRole", "asya-operator"),
        ("ClusterRole", "asya-operator-jobs"),
        ("ClusterRoleBinding", "asya-operator"),
        ("ClusterRoleBinding", "asya-operator-jobs"),
        ("ConfigMap", "asya-operator"),
        ("Deployment", "asya-operator"),
        ("Service", "asya-operator"),
        ("ServiceAccount", "asya-operator"),
    ]


@pytest.mark.parametrize("values", CASES)
def test_pod_is_restricted(values: dict[str, Any]) -> None:
    pods = pod_templates(rendered(values))
    assert list(pods) == ["Deployment/asya-operator"]
    for where, pod in pods.items():
        assert_restricted(pod, where)


@pytest.mark.parametrize("values", CASES)
def test_one_replica_recreated_without_peering(values: dict[str, Any]) -> None:
    deployment = one(rendered(values), "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    # The operator itself turns peering off; the chart adds no peering objects or RBAC.
    for grant in grants(rendered(values)):
        assert grant.group not in ("kopf.dev", "zalando.org"), grant


def test_command_watches_every_namespace_by_default() -> None:
    objects = rendered({})
    command = container(objects)["command"]
    assert command[:4] == ["asya", "operator", "--config", "/etc/asya/operator.yaml"]
    assert "-A" in command
    assert "-n" not in command
    assert "--verbose" not in command
    mounts = {m["mountPath"]: m for m in container(objects)["volumeMounts"]}
    assert mounts["/etc/asya"]["readOnly"] is True
    assert env_of(objects)["ASYA_OPERATOR_CONFIG"]["value"] == "/etc/asya/operator.yaml"


def test_command_names_each_watched_namespace() -> None:
    command = container(rendered(values_of("namespaced")))["command"]
    assert "-A" not in command
    pairs = [command[i + 1] for i, arg in enumerate(command) if arg == "-n"]
    assert pairs == ["team-a", "team-b", "asya-crew"]
    assert "--verbose" in command


@pytest.mark.parametrize("values", CASES)
def test_liveness_probe_matches_the_liveness_endpoint(values: dict[str, Any]) -> None:
    objects = rendered(values)
    main = container(objects)
    command = main["command"]
    url = command[command.index("--liveness") + 1]
    assert url == "http://0.0.0.0:8080/healthz"
    ports = {p["name"]: p for p in main["ports"]}
    assert ports["health"]["containerPort"] == 8080
    for probe in ("livenessProbe", "readinessProbe"):
        assert main[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    service = one(objects, "Service")
    targets = {p["name"]: p["targetPort"] for p in service["spec"]["ports"]}
    assert targets["health"] == "health"
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


@pytest.mark.parametrize("values", [*CASES, {"metricsPort": 9100, "service": {"metricsPort": 80}}])
def test_metrics_port_is_the_one_the_operator_serves(values: dict[str, Any]) -> None:
    objects = rendered(values)
    main = container(objects)
    command = main["command"]
    served = int(command[command.index("--metrics-port") + 1])
    assert served == values.get("metricsPort", 8081)
    ports = {p["name"]: p for p in main["ports"]}
    assert sorted(ports) == ["health", "metrics"]
    assert ports["metrics"]["containerPort"] == served
    service = one(objects, "Service")
    (metrics,) = [p for p in service["spec"]["ports"] if p["name"] == "metrics"]
    assert metrics["targetPort"] == "metrics"
    assert metrics["port"] == values.get("service", {}).get("metricsPort", 8081)


def test_service_monitor_scrapes_the_metrics_port() -> None:
    objects = rendered(values_of("namespaced"))
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    assert endpoint["path"] == "/metrics"
    assert "metrics" in [p["name"] for p in service["spec"]["ports"]]
    assert not of_kind(rendered({}), "ServiceMonitor")


def test_disruption_budget_never_blocks_a_drain() -> None:
    budget = one(rendered(values_of("namespaced")), "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in budget["spec"]
    assert not of_kind(rendered({}), "PodDisruptionBudget")


def test_pod_settings_reach_the_pod() -> None:
    values = values_of("namespaced")
    deployment = one(rendered(values), "Deployment")
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["annotations"]["team"] == "platform"
    assert pod["metadata"]["labels"]["cost-center"] == "ml"
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName"):
        assert pod["spec"][key] == values[key], key
    assert pod["spec"]["imagePullSecrets"] == [{"name": "ghcr-pull"}]
    assert pod["spec"]["containers"][0]["image"] == "ghcr.io/asya-dev/asya:0.1.1"
    assert env_of([deployment])["HTTPS_PROXY"]["value"] == "http://proxy.internal:3128"


def test_image_tag_defaults_to_the_app_version() -> None:
    assert container(rendered({}))["image"] == "ghcr.io/asya-dev/asya:0.1.0"


# ------------------------------------------------------------------ configuration file


@pytest.mark.parametrize("values", CASES)
def test_configuration_is_accepted_by_the_operator(values: dict[str, Any], tmp_path: Path) -> None:
    config = loaded(rendered(values), tmp_path)
    # The transports are the values' own, key for key.
    transports = values.get("transports", {})
    assert config.transports == operator_config.parse({"transports": transports}).transports
    assert config.default_transport == (values.get("defaultTransport") or None)
    assert config.namespaces == values.get("watchNamespaces", [])
    assert config.crew_namespace == (values.get("crewNamespace") or None)
    assert config.operator_namespace == OPERATOR_NAMESPACE
    assert config.queue_refresh_seconds == values.get("queueRefreshSeconds", 30)
    url = values.get("gateway", {}).get("url")
    assert config.gateway == (operator_config.Gateway(url=url) if url else None)


def test_gateway_url_is_passed_on_only_when_set() -> None:
    text = operator_yaml(rendered(values_of("rabbitmq")))
    assert yaml.safe_load(text)["gateway"] == {
        "url": "http://asya-gateway-internal.asya-gateway.svc:8081"
    }
    # Unset or empty: no `gateway` key at all, so actors render as they did without one.
    for values in ({}, {"gateway": {"url": ""}}):
        assert "gateway" not in yaml.safe_load(operator_yaml(rendered(values)))


def test_notes_say_where_actors_report() -> None:
    def notes(values: dict[str, Any]) -> str:
        templates = chart(OPERATOR).render(
            values, name="asya-operator", namespace=OPERATOR_NAMESPACE
        )
        text: str = templates["asya-operator/templates/NOTES.txt"]
        return text

    assert "actors report to http://asya-gateway-internal.asya-gateway.svc:8081" in notes(
        values_of("rabbitmq")
    )
    assert "install charts/asya-gateway, then set gateway.url" in notes({})


def test_sidecar_defaults_to_the_operator_image(tmp_path: Path) -> None:
    config = loaded(rendered({}), tmp_path)
    assert config.sidecar.image == container(rendered({}))["image"]
    assert config.sidecar == operator_config.Sidecar(image=config.sidecar.image)


def test_sidecar_settings_are_passed_on(tmp_path: Path) -> None:
    config = loaded(rendered(values_of("rabbitmq")), tmp_path)
    assert config.sidecar.image == "registry.example/asya-sidecar:0.1.0-patched"
    assert config.sidecar.image_pull_policy == "Always"
    assert config.sidecar.resources == {
        "requests": {"cpu": "200m", "memory": "96Mi"},
        "limits": {"memory": "384Mi"},
    }


def test_configuration_change_rolls_the_pod() -> None:
    def checksum(values: dict[str, Any]) -> str:
        objects = rendered(values)
        annotation: str = one(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"][
            "checksum/config"
        ]
        return annotation

    base = checksum({})
    assert base == checksum({"podAnnotations": {"unrelated": "change"}})
    assert base != checksum({"queueRefreshSeconds": 31})
    assert base != checksum(values_of("sqs"))
    assert base != checksum({"gateway": {"url": "http://gateway.asya.svc:8081"}})
    # The annotation is the digest of the whole rendered ConfigMap (metadata included).
    text = render_configmap({})
    assert base == hashlib.sha256(text.encode()).hexdigest()


def render_configmap(values: dict[str, Any]) -> str:
    templates = chart(OPERATOR).render(values, name="asya-operator", namespace=OPERATOR_NAMESPACE)
    return templates["asya-operator/templates/configmap.yaml"]


# Each field of a transport, with values on both sides of the operator's own checks.
TRANSPORT_FIELDS = {
    "url": st.sampled_from(
        ["amqp://rabbitmq:5672/", "amqps://mq.example:5671/vhost", "amqp://asya:pw@rabbitmq/"]
    ),
    "queueType": st.sampled_from(["quorum", "classic", "stream"]),
    "region": st.sampled_from(["eu-west-1", ""]),
    "accountId": st.sampled_from(["123456789012", "12345", 123456789012]),
    "endpoint": st.sampled_from(["http://localstack:4566"]),
    "visibilityTimeout": st.sampled_from([0, 1, 43200, 43201]),
    "project": st.sampled_from(["my-project", ""]),
    "emulatorHost": st.sampled_from(["emulator:8085"]),
    "ackDeadline": st.sampled_from([9, 10, 600, 601]),
    "dlq": st.sampled_from(
        [{}, {"maxDeliveries": 4}, {"maxDeliveries": 5}, {"maxDeliveries": 100}, {"max": 5}]
    ),
    "credentials": st.sampled_from(
        [
            {},
            {"secretRef": {"name": "creds"}},
            {"secretRef": {"name": "creds", "keys": {"url": "u"}}},
            {"podIdentity": {"provider": "aws"}},
            {"podIdentity": {"provider": "aws", "roleArn": "arn:aws:iam::123456789012:role/k"}},
            {"podIdentity": {"provider": "gcp"}},
            {"secretRef": {"name": "creds"}, "podIdentity": {"provider": "aws"}},
        ]
    ),
}


def _of_type(kind: str, usual: list[str], optional: list[str]) -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries(
        {"type": st.just(kind), **{k: TRANSPORT_FIELDS[k] for k in usual}},
        optional={k: TRANSPORT_FIELDS[k] for k in optional},
    )


transports = st.one_of(
    _of_type("rabbitmq", [], ["url", "queueType", "credentials"]),
    _of_type("sqs", ["region", "accountId", "credentials"], ["endpoint", "visibilityTimeout"]),
    _of_type("sqs", ["region", "accountId"], ["credentials", "dlq"]),
    _of_type("pubsub", ["project"], ["emulatorHost", "ackDeadline", "dlq", "credentials"]),
    # Anything, fields of the other types included.
    st.fixed_dictionaries(
        {"type": st.sampled_from(["rabbitmq", "sqs", "pubsub"])}, optional=TRANSPORT_FIELDS
    ),
)


SECRET_KEYS = {
    "rabbitmq": {"url"},
    "sqs": {"accessKeyId", "secretAccessKey"},
    "pubsub": {"credentials"},
}
POD_IDENTITY = {"sqs": "aws", "pubsub": "gcp"}


def stricter_on_purpose(transport: dict[str, Any]) -> bool:
    """What the operator's model takes and the chart refuses at once: a pod identity of the
    other cloud (the renderer refuses it later, per actor), and Secret key names the
    transport never reads (a misspelling would silently fall back to the default name)."""
    credentials = transport.get("credentials", {})
    provider = credentials.get("podIdentity", {}).get("provider")
    if provider is not None and provider != POD_IDENTITY.get(transport["type"]):
        return True
    keys = set(credentials.get("secretRef", {}).get("keys", {}))
    return not keys <= SECRET_KEYS[transport["type"]]


@settings(
    max_examples=200,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(transport=transports)
def test_values_schema_accepts_what_the_operator_accepts(transport: dict[str, Any]) -> None:
    values = {"transports": {"mq": transport}}
    try:
        objects = rendered(values)
    except helm.HelmValuesError:
        objects = None
    try:
        operator_config.parse(values)
        parsed = True
    except operator_config.OperatorConfigError:
        parsed = False
    if objects is not None:
        # Whatever installs starts the operator, with the very transport of the values.
        config = operator_config.parse(yaml.safe_load(operator_yaml(objects)))
        assert config.transports == operator_config.parse(values).transports
    else:
        assert not parsed or stricter_on_purpose(transport), transport


# ------------------------------------------------------------------------------- RBAC

OPERATOR_RULES = {
    ("asya.sh", "asyncactors", "get"),
    ("asya.sh", "asyncactors", "list"),
    ("asya.sh", "asyncactors", "watch"),
    ("asya.sh", "asyncactors", "patch"),
    ("asya.sh", "asyncactors/status", "patch"),
    ("", "events", "create"),
    ("", "configmaps", "get"),
    ("", "configmaps", "create"),
    ("", "configmaps", "patch"),
    ("apps", "deployments", "get"),
    ("apps", "deployments", "create"),
    ("apps", "deployments", "patch"),
    *(
        ("keda.sh", resource, verb)
        for resource in ("scaledobjects", "triggerauthentications")
        for verb in ("get", "create", "patch", "delete")
    ),
    # AsyaBindings (docs/bindings.md): the resource, and what deciding how to bind reads.
    *(("asya.sh", "asyabindings", verb) for verb in ("get", "list", "watch", "patch")),
    ("asya.sh", "asyabindings/status", "patch"),
    ("", "services", "list"),
    ("autoscaling", "horizontalpodautoscalers", "list"),
    ("keda.sh", "scaledobjects", "list"),
    ("serving.kserve.io", "inferenceservices", "get"),
    ("ray.io", "rayservices", "get"),
    ("kaito.sh", "workspaces", "get"),
    # The job watcher (templates/rbac-jobs.yaml): the four batch-job kinds, nothing else.
    *(
        (group, resource, verb)
        for group, resource in (
            ("batch", "jobs"),
            ("batch.volcano.sh", "jobs"),
            ("kubeflow.org", "pytorchjobs"),
            ("trainer.kubeflow.org", "trainjobs"),
        )
        for verb in ("get", "list", "watch", "patch", "delete")
    ),
}


@pytest.mark.parametrize("values", CASES)
def test_no_wildcards_in_any_rule(values: dict[str, Any]) -> None:
    roles = [o for o in rendered(values) if o["kind"] in ("Role", "ClusterRole")]
    assert roles
    for role in roles:
        assert "aggregationRule" not in role
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert not any("*" in item for item in rule.get(key, [])), (key, rule)
            assert "nonResourceURLs" not in rule


def test_default_grants_exactly_what_the_operator_calls() -> None:
    found = grants(rendered({}))
    assert {g.kind for g in found} == {"ClusterRole"}
    assert {(g.group, g.resource, g.verb) for g in found} == OPERATOR_RULES
    assert all(g.names == () for g in found)


def test_watched_namespaces_get_roles_and_no_cluster_role() -> None:
    objects = rendered(values_of("namespaced"))
    assert not of_kind(objects, "ClusterRole")
    assert not of_kind(objects, "ClusterRoleBinding")
    found = grants(objects)
    for namespace in ("team-a", "team-b", "asya-crew"):
        here = {(g.group, g.resource, g.verb) for g in found if g.namespace == namespace}
        assert here == OPERATOR_RULES, namespace
    for binding in of_kind(objects, "RoleBinding"):
        (subject,) = binding["subjects"]
        assert subject == {
            "kind": "ServiceAccount",
            "name": "asya-operator",
            "namespace": OPERATOR_NAMESPACE,
        }


def rabbitmq_secrets(values: dict[str, Any]) -> set[str]:
    """The Secrets the operator reads through the API: rabbitmq URLs (with the password)."""
    return {
        t["credentials"]["secretRef"]["name"]
        for t in values.get("transports", {}).values()
        if t["type"] == "rabbitmq" and "secretRef" in t.get("credentials", {})
    }


@pytest.mark.parametrize("values", CASES)
def test_secrets_are_readable_only_by_name_in_the_operator_namespace(
    values: dict[str, Any],
) -> None:
    objects = rendered(values)
    secret_grants = {g for g in grants(objects) if g.resource == "secrets"}
    needed = rabbitmq_secrets(values)
    if not needed:
        assert secret_grants == set()
        return
    assert secret_grants == {
        Grant("Role", OPERATOR_NAMESPACE, "", "secrets", "get", tuple(sorted(needed)))
    }
    assert not [o for o in objects if o["kind"] == "Secret"]


def test_secret_variant_grants_one_more_role() -> None:
    found = grants(rendered(values_of("rabbitmq")))
    extra = {g for g in found if g.kind == "Role"}
    assert extra == {Grant("Role", OPERATOR_NAMESPACE, "", "secrets", "get", ("rabbitmq-asya",))}
    assert {(g.group, g.resource, g.verb) for g in found - extra} == OPERATOR_RULES


def test_rbac_can_be_left_to_the_platform() -> None:
    objects = rendered({"rbac": {"create": False}, "serviceAccount": {"create": False}})
    assert not [o for o in objects if "Role" in o["kind"] or o["kind"] == "ServiceAccount"]
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "default"


# ------------------------------------------------------------------ cloud credentials


def test_sqs_secret_becomes_the_pod_aws_identity() -> None:
    objects = rendered(values_of("sqs"))
    env = env_of(objects)
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"] == {
        "secretKeyRef": {"name": "aws-asya", "key": "id"}
    }
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "aws-asya", "key": "key"}
    }
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in env
    # Default key names when the Secret uses them.
    env = env_of(rendered(values_of("namespaced")))
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["key"] == "accessKeyId"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "secretAccessKey"


def test_pubsub_secret_is_mounted_as_the_google_key_file() -> None:
    objects = rendered(values_of("pubsub"))
    path = env_of(objects)["GOOGLE_APPLICATION_CREDENTIALS"]["value"]
    directory, file = path.rsplit("/", 1)
    (mount,) = [m for m in container(objects)["volumeMounts"] if m["mountPath"] == directory]
    assert mount["readOnly"] is True
    volumes = {
        v["name"]: v for v in one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    }
    secret = volumes[mount["name"]]["secret"]
    assert secret["secretName"] == "pubsub-asya"
    assert secret["items"] == [{"key": "key.json", "path": file}]
    # Readable by the pod's group (fsGroup) only, not by every user.
    assert secret["defaultMode"] == 0o440
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(env_of(objects))


@pytest.mark.parametrize(
    ("stem", "annotation", "value"),
    [
        (
            "sqs-pod-identity",
            "eks.amazonaws.com/role-arn",
            "arn:aws:iam::123456789012:role/asya-operator",
        ),
        (
            "pubsub-pod-identity",
            "iam.gke.io/gcp-service-account",
            "asya-operator@my-project.iam.gserviceaccount.com",
        ),
    ],
)
def test_pod_identity_goes_on_the_service_account(stem: str, annotation: str, value: str) -> None:
    objects = rendered(values_of(stem))
    account = one(objects, "ServiceAccount")
    assert account["metadata"]["annotations"] == {annotation: value}
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    env = env_of(objects)
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "GOOGLE_APPLICATION_CREDENTIALS"} & (
        set(env)
    )
    assert [v["name"] for v in pod["volumes"]] == ["config", "tmp"]


@pytest.mark.parametrize("values", CASES)
def test_no_credential_is_ever_a_literal(values: dict[str, Any]) -> None:
    for item in env_of(rendered(values)).values():
        if item["name"].startswith("AWS_"):
            assert "value" not in item, item


# ------------------------------------------------------------------------ bad values


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_values_fail_naming_the_field(path: Path) -> None:
    values = values_file(path)
    with pytest.raises((helm.HelmValuesError, helm.HelmRenderError)) as caught:
        rendered(values)
    assert expected_error(path) in str(caught.value)
    if caught.type is helm.HelmValuesError:
        # `helm lint -f` reports schema problems too (but only logs a template's `fail`).
        report = helm.lint(OPERATOR, values, namespace=OPERATOR_NAMESPACE)
        assert any(expected_error(path) in error for error in report["errors"]), report
