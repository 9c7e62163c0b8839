"""charts/asya-gateway: lint, render with every values file, and check what it installs: valid
objects, a restricted pod, a command the gateway's CLI takes, the store, the API keys and the
flows where the gateway looks for them, the transport settings the actors' sidecars use, two
Services, an Ingress for the public one only, and a NetworkPolicy that admits reports from
the pods the operator renders (the crew's included) and from nothing else."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import asya_transports as transports
from asya_cli.main import build_parser
from asya_gateway import flows as gateway_flows
from asya_gateway.store import urls as store_urls
from asya_operator import config as operator_config
from asya_operator import render as operator_render
from asya_operator import transport_env
from asya_operator.models import SIDECAR_CONTAINER, AsyncActor
from asya_shared import env, names
from tests.charts.charts import (
    CHARTS,
    CREW,
    CREW_NAMESPACE,
    GATEWAY,
    GATEWAY_NAMESPACE,
    OPERATOR,
    OPERATOR_NAMESPACE,
    VALUES,
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

FILES = values_files("gateway")
CASES = [pytest.param(values_file(f), id=f.stem) for f in FILES]
BAD = sorted((VALUES / "bad" / "gateway").glob("*.yaml"))
# The least an install needs: a broker, and API keys or an explicit "no auth".
MINIMAL: dict[str, Any] = {
    "transport": {"type": "rabbitmq", "url": "amqp://rabbitmq.mq.svc:5672/"},
    "auth": {"insecure": True},
}
PUBLIC_PORT, INTERNAL_PORT = 8080, 8081
# What the chart itself puts into the environment, apart from the transport's variables.
OWN_ENV = {
    env.TRANSPORT,
    env.NAMESPACE,
    "ASYA_GATEWAY_STORE",
    "ASYA_GATEWAY_API_KEYS_FILE",
    "ASYA_GATEWAY_FLOWS",
    "ASYA_SUMP_STORE",
}


def rendered(values: dict[str, Any]) -> list[Obj]:
    return render(GATEWAY, values, GATEWAY_NAMESPACE)


def values_of(stem: str) -> dict[str, Any]:
    return values_file(VALUES / "gateway" / f"{stem}.yaml")


def merged(values: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = chart(GATEWAY).merge_values(values)
    return result


def pod(objects: list[Obj]) -> Obj:
    spec: Obj = one(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


def container(objects: list[Obj]) -> Obj:
    (found,) = pod(objects)["containers"]
    result: Obj = found
    return result


def env_of(objects: list[Obj]) -> dict[str, Obj]:
    return {item["name"]: item for item in container(objects)["env"]}


def volumes(objects: list[Obj]) -> dict[str, Obj]:
    return {v["name"]: v for v in pod(objects)["volumes"]}


def mounts(objects: list[Obj]) -> dict[str, Obj]:
    return {m["name"]: m for m in container(objects)["volumeMounts"]}


def services(objects: list[Obj]) -> dict[str, Obj]:
    return {s["metadata"]["name"]: s for s in of_kind(objects, "Service")}


def pod_labels(objects: list[Obj]) -> dict[str, str]:
    labels: dict[str, str] = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


def cli_args(objects: list[Obj]) -> Any:
    """The container's command as `asya` itself parses it."""
    command = container(objects)["command"]
    assert command[:2] == ["asya", "gateway"]
    return build_parser().parse_args(command[1:])


def notes(values: dict[str, Any]) -> str:
    templates = chart(GATEWAY).render(values, name=GATEWAY.name, namespace=GATEWAY_NAMESPACE)
    text: str = templates["asya-gateway/templates/NOTES.txt"]
    return text


# ---------------------------------------------------------------------- chart and lint


def test_chart_metadata() -> None:
    metadata = chart(GATEWAY).metadata
    assert metadata["apiVersion"] == "v2"
    assert (metadata["name"], metadata["version"], metadata["appVersion"]) == (
        "asya-gateway",
        "0.1.0",
        "0.1.0",
    )


@pytest.mark.parametrize("values", [pytest.param(MINIMAL, id="minimal"), *CASES])
def test_lint_is_clean(values: dict[str, Any]) -> None:
    report = helm.lint(GATEWAY, values, strict=True, namespace=GATEWAY_NAMESPACE)
    assert report["errors"] == []
    # Severity 2 and 3 are warnings and errors; 1 is advice ("icon is recommended").
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_defaults_name_what_an_install_must_choose() -> None:
    # No broker and no keys are safe to guess: the chart asks instead of crash-looping.
    with pytest.raises(helm.HelmRenderError, match="transport: the broker the gateway"):
        rendered({})
    with pytest.raises(helm.HelmRenderError, match=r"auth\.existingSecret: the gateway listens"):
        rendered({"transport": MINIMAL["transport"]})
    assert rendered(MINIMAL)


# --------------------------------------------------------------------- rendered objects


@pytest.mark.parametrize("values", [pytest.param(MINIMAL, id="minimal"), *CASES])
def test_every_object_is_valid(values: dict[str, Any]) -> None:
    objects = rendered(values)
    validate(objects)
    for obj in objects:
        assert obj["metadata"]["namespace"] == GATEWAY_NAMESPACE, obj["metadata"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/component"] == "gateway"


def test_minimal_installs_exactly_these_objects() -> None:
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in rendered(MINIMAL))
    assert kinds == [
        ("Deployment", "asya-gateway"),
        ("NetworkPolicy", "asya-gateway"),
        ("Service", "asya-gateway"),
        ("Service", "asya-gateway-internal"),
    ]


def test_full_install_adds_flows_ingress_and_budget() -> None:
    kinds = sorted(
        (o["kind"], o["metadata"]["name"]) for o in rendered(values_of("rabbitmq-postgresql"))
    )
    assert kinds == [
        ("ConfigMap", "asya-gateway-flows"),
        ("Deployment", "asya-gateway"),
        ("Ingress", "asya-gateway"),
        ("NetworkPolicy", "asya-gateway"),
        ("PodDisruptionBudget", "asya-gateway"),
        ("Service", "asya-gateway"),
        ("Service", "asya-gateway-internal"),
    ]


@pytest.mark.parametrize("values", [pytest.param(MINIMAL, id="minimal"), *CASES])
def test_pod_is_restricted(values: dict[str, Any]) -> None:
    pods = pod_templates(rendered(values))
    assert list(pods) == ["Deployment/asya-gateway"]
    for where, spec in pods.items():
        assert_restricted(spec, where)
        # The gateway never calls the Kubernetes API, and the chart grants it nothing.
        assert spec["automountServiceAccountToken"] is False
    assert grants(rendered(values)) == set()


def test_long_release_names_still_fit() -> None:
    name = "a-release-name-that-is-long-enough-to-reach-the-limit-of-63-characters"
    templates = chart(GATEWAY).render(MINIMAL, name=name, namespace=GATEWAY_NAMESPACE)
    objects = [
        doc
        for path, text in templates.items()
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]
    validate(objects)
    internal = [s for s in services(objects) if s.endswith("-internal")]
    assert len(internal) == 1
    assert len(internal[0]) <= 63


# ------------------------------------------------------------------ command and probes


@pytest.mark.parametrize("values", [pytest.param(MINIMAL, id="minimal"), *CASES])
def test_command_is_one_the_gateway_cli_takes(values: dict[str, Any]) -> None:
    objects = rendered(values)
    args = cli_args(objects)
    assert (args.host, int(args.port), int(args.internal_port)) == (
        "0.0.0.0",
        PUBLIC_PORT,
        INTERNAL_PORT,
    )
    settings_ = merged(values)
    # Without API keys the gateway refuses the pod network unless told: --insecure exactly then.
    assert bool(args.insecure) is (not settings_["auth"]["existingSecret"])
    command = container(objects)["command"]
    if settings_["retention"]:
        assert command[command.index("--retention") + 1] == settings_["retention"]
    else:
        assert "--retention" not in command
    # The store, the keys and the flows come from the environment, never the command line.
    assert "--store" not in command
    assert "--flows" not in command


@pytest.mark.parametrize(
    "retention",
    ["7d", "0.5d", "36h", "90m", "1h30m", "3600", "250ms", "0d", "0s", "0", "1d12h", "7 days", "d"],
)
def test_values_schema_accepts_exactly_the_retentions_the_cli_takes(retention: str) -> None:
    try:
        objects: list[Obj] | None = rendered({**MINIMAL, "retention": retention})
    except helm.HelmValuesError:
        objects = None
    parser = build_parser()
    try:
        parser.parse_args(["gateway", "--retention", retention])
        takes = True
    except SystemExit:
        takes = False
    assert (objects is not None) == takes
    if objects is not None:
        cli_args(objects)


@pytest.mark.parametrize("values", [pytest.param(MINIMAL, id="minimal"), *CASES])
def test_ports_probes_and_services_agree(values: dict[str, Any]) -> None:
    objects = rendered(values)
    main = container(objects)
    args = cli_args(objects)
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert ports == {"http": int(args.port), "internal": int(args.internal_port)}
    assert main["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}

    found = services(objects)
    assert set(found) == {"asya-gateway", "asya-gateway-internal"}
    public, internal = found["asya-gateway"], found["asya-gateway-internal"]
    for service in (public, internal):
        assert service["spec"]["selector"].items() <= pod_labels(objects).items()
    (public_port,) = public["spec"]["ports"]
    assert public_port["targetPort"] == "http"
    assert public_port["port"] == merged(values)["service"]["port"]
    assert public["spec"]["type"] == merged(values)["service"]["type"]
    (internal_port,) = internal["spec"]["ports"]
    assert internal_port["targetPort"] == "internal"
    assert internal_port["port"] == merged(values)["service"]["internalPort"]
    # Reports never leave the cluster, whatever the public Service is.
    assert internal["spec"]["type"] == "ClusterIP"
    # A broker outage makes pods unready for submissions, not deaf to reports.
    assert internal["spec"]["publishNotReadyAddresses"] is True
    assert "publishNotReadyAddresses" not in public["spec"]


def test_image_and_pod_settings() -> None:
    objects = rendered(MINIMAL)
    assert container(objects)["image"] == "ghcr.io/asya-dev/asya:0.1.0"
    values = values_of("rabbitmq-postgresql")
    objects = rendered(values)
    template = one(objects, "Deployment")["spec"]["template"]
    assert container(objects)["image"] == "ghcr.io/asya-dev/asya:0.1.1"
    assert template["metadata"]["labels"]["cost-center"] == "ml"
    assert template["metadata"]["annotations"]["prometheus.io/port"] == str(PUBLIC_PORT)
    for key in ("nodeSelector", "tolerations", "priorityClassName", "imagePullSecrets"):
        assert template["spec"][key] == values[key], key
    assert env_of(objects)["ASYA_LOG_LEVEL"] == {"name": "ASYA_LOG_LEVEL", "value": "DEBUG"}


# ------------------------------------------------------------------------------- store


def test_default_store_is_sqlite_on_an_emptydir_of_one_recreated_pod() -> None:
    objects = rendered(MINIMAL)
    url = env_of(objects)["ASYA_GATEWAY_STORE"]["value"]
    path = store_urls.sqlite_path(url)
    # The file lies on the data volume: the root filesystem is read-only.
    assert path.is_absolute()
    assert path.parent == Path(mounts(objects)["data"]["mountPath"])
    assert volumes(objects)["data"] == {"name": "data", "emptyDir": {}}
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not of_kind(objects, "PersistentVolumeClaim")


def test_sqlite_on_a_claim_of_the_chart() -> None:
    objects = rendered(values_of("sqlite-persistent"))
    url = env_of(objects)["ASYA_GATEWAY_STORE"]["value"]
    assert url == "sqlite:////var/lib/asya-gateway/tasks.sqlite3"
    assert store_urls.sqlite_path(url).parent == Path(mounts(objects)["data"]["mountPath"])
    claim = one(objects, "PersistentVolumeClaim")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert volumes(objects)["data"]["persistentVolumeClaim"] == {
        "claimName": claim["metadata"]["name"]
    }
    # The volume is written by the pod's group.
    assert pod(objects)["securityContext"]["fsGroup"] == 65532


def test_sqlite_on_an_existing_claim() -> None:
    objects = rendered(values_of("pubsub-emulator"))
    assert not of_kind(objects, "PersistentVolumeClaim")
    assert volumes(objects)["data"]["persistentVolumeClaim"] == {"claimName": "gateway-data"}


@pytest.mark.parametrize("stem", ["rabbitmq-postgresql", "sqs", "pubsub"])
def test_postgresql_url_comes_from_the_secret(stem: str) -> None:
    values = values_of(stem)
    objects = rendered(values)
    store = merged(values)["store"]
    assert env_of(objects)["ASYA_GATEWAY_STORE"] == {
        "name": "ASYA_GATEWAY_STORE",
        "valueFrom": {
            "secretKeyRef": {"name": store["existingSecret"], "key": store["existingSecretKey"]}
        },
    }
    assert "data" not in volumes(objects)
    assert "data" not in mounts(objects)
    deployment = one(objects, "Deployment")
    # Replicas share the database: an ordinary rolling update.
    assert "strategy" not in deployment["spec"]
    assert deployment["spec"]["replicas"] == merged(values)["replicaCount"]


def test_disruption_budget_keeps_all_but_one() -> None:
    objects = rendered(values_of("rabbitmq-postgresql"))
    budget = one(objects, "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels(objects).items()
    assert not of_kind(rendered(MINIMAL), "PodDisruptionBudget")


# -------------------------------------------------------------------------------- auth


@pytest.mark.parametrize("stem", ["rabbitmq-postgresql", "sqs", "pubsub", "sqs-pod-identity"])
def test_api_keys_file_is_the_mounted_secret(stem: str) -> None:
    values = values_of(stem)
    objects = rendered(values)
    auth = merged(values)["auth"]
    path = Path(env_of(objects)["ASYA_GATEWAY_API_KEYS_FILE"]["value"])
    mount = mounts(objects)["api-keys"]
    assert mount["readOnly"] is True
    assert path.parent == Path(mount["mountPath"])
    secret = volumes(objects)["api-keys"]["secret"]
    assert secret["secretName"] == auth["existingSecret"]
    assert secret["items"] == [{"key": auth["existingSecretKey"], "path": path.name}]
    # Readable by the pod's group (fsGroup) only.
    assert secret["defaultMode"] == 0o440


def test_without_keys_auth_is_off_only_when_asked() -> None:
    objects = rendered(MINIMAL)
    assert "ASYA_GATEWAY_API_KEYS_FILE" not in env_of(objects)
    assert "api-keys" not in volumes(objects)
    assert "--insecure" in container(objects)["command"]
    assert "OFF (--insecure)" in notes(MINIMAL)


# ------------------------------------------------------------------------------- flows


def test_flows_are_the_file_the_gateway_loads(tmp_path: Path) -> None:
    values = values_of("rabbitmq-postgresql")
    objects = rendered(values)
    config_map = one(objects, "ConfigMap")
    path = Path(env_of(objects)["ASYA_GATEWAY_FLOWS"]["value"])
    mount = mounts(objects)["flows"]
    assert mount["readOnly"] is True
    assert path.parent == Path(mount["mountPath"])
    assert volumes(objects)["flows"]["configMap"] == {"name": config_map["metadata"]["name"]}
    assert set(config_map["data"]) == {path.name}
    # Written where the pod would see it, and read by the gateway's own loader.
    (tmp_path / path.name).write_text(config_map["data"][path.name])
    loaded = gateway_flows.load_flows(tmp_path / path.name)
    assert list(loaded) == ["triage", "echo.v2"]
    triage, echo = loaded["triage"], loaded["echo.v2"]
    assert triage.route == ("classify", "respond")
    assert triage.timeout == 300
    assert triage.input_schema == values["flows"][0]["input_schema"]
    assert triage.description == values["flows"][0]["description"]
    assert (echo.route, echo.timeout) == (("echo",), 30)


def test_no_flows_no_config_map() -> None:
    objects = rendered(MINIMAL)
    assert not of_kind(objects, "ConfigMap")
    assert "ASYA_GATEWAY_FLOWS" not in env_of(objects)
    assert "flows" not in volumes(objects)


def test_a_flows_change_rolls_the_pods() -> None:
    def checksum(values: dict[str, Any]) -> str | None:
        template = one(rendered(values), "Deployment")["spec"]["template"]
        found: str | None = template["metadata"].get("annotations", {}).get("checksum/flows")
        return found

    values = values_of("rabbitmq-postgresql")
    base = checksum(values)
    assert base is not None
    assert base == checksum({**values, "podAnnotations": {"unrelated": "change"}})
    changed = json.loads(json.dumps(values))
    changed["flows"][1]["timeout"] = 31
    assert base != checksum(changed)


# Values of each flow field, the likely and the doubtful; which ones the gateway takes is
# for its own loader to say (the oracle below), not for these lists.
USUAL: dict[str, list[Any]] = {
    "name": ["triage", "echo.v2", "A_b-c", "x" * 100],
    "route": [["a"], ["classify", "respond"], ["a" * 63]],
    "description": ["", "Classify a ticket."],
    "timeout": ["5m", "30s", "1h30m", "250ms", "1.5m", "0.5", "90", 30, 2.5],
    "input_schema": [{"type": "object"}, {}, {"type": "object", "required": ["text"]}],
}
DOUBTFUL: dict[str, list[Any]] = {
    "name": ["x" * 101, "-lead", "", "has space", 5, "a/b"],
    "route": [[], ["Bad"], ["a" * 64], ["-a"], "a", [1]],
    "description": [5, ["text"]],
    "timeout": ["0s", "0", "0.0", "00", 0, -1, "5 min", "5d", "", True],
    "input_schema": ["object", [1], 5],
    "inputSchema": [{"type": "object"}],
}


@st.composite
def flow_entries(draw: st.DrawFn) -> dict[str, Any]:
    """A flow with usual values and at most one doubtful one, so that each example tests one
    thing the schema must decide as the gateway does."""
    entry = {key: draw(st.sampled_from(USUAL[key])) for key in ("name", "route")}
    for key in ("description", "timeout", "input_schema"):
        if draw(st.booleans()):
            entry[key] = draw(st.sampled_from(USUAL[key]))
    doubtful = draw(st.sampled_from([None, *DOUBTFUL]))
    if doubtful is not None:
        entry[doubtful] = draw(st.sampled_from(DOUBTFUL[doubtful]))
    return entry


@settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(entries=st.lists(flow_entries(), min_size=1, max_size=2))
def test_values_schema_accepts_exactly_the_flows_the_gateway_loads(
    entries: list[dict[str, Any]],
) -> None:
    try:
        objects: list[Obj] | None = rendered({**MINIMAL, "flows": entries})
    except (helm.HelmValuesError, helm.HelmRenderError):
        objects = None
    try:
        expected = gateway_flows.parse_flows({"flows": entries}, "values")
    except gateway_flows.FlowsError:
        expected = None
    if objects is None:
        assert expected is None, entries
        return
    # What installs starts the gateway, with the very flows of the values. (Whether an
    # input_schema is itself a valid JSON Schema the gateway checks at start; every value
    # drawn here is one.)
    assert expected is not None, entries
    text = one(objects, "ConfigMap")["data"]["flows.yaml"]
    assert gateway_flows.parse_flows(yaml.safe_load(text), "configmap") == expected


# --------------------------------------------------------------------------- transport


def operator_transport(values: dict[str, Any]) -> operator_config.TransportConfig:
    """The gateway's transport read by the operator's own model. Only KEDA's queue URL uses
    an SQS accountId, so the gateway does not ask for one; a stand-in fills it here."""
    raw = dict(merged(values)["transport"])
    if raw["type"] == "sqs":
        raw.setdefault("accountId", "000000000000")
    return operator_config.parse({"transports": {"t": raw}}).transports["t"]


def as_env_var(variable: transport_env.Variable) -> Obj:
    value = variable.value
    if isinstance(value, transport_env.FromSecret):
        ref = {"name": value.secret, "key": value.key}
        return {"name": variable.name, "valueFrom": {"secretKeyRef": ref}}
    return {"name": variable.name, "value": value}


def literal_environ(items: list[Obj]) -> dict[str, str]:
    """The environment with secret-sourced values replaced by stand-ins."""
    found = {}
    for item in items:
        if "value" in item:
            found[item["name"]] = item["value"]
        elif item["name"] == env.RABBITMQ_URL:
            found[item["name"]] = "amqp://user:secret@rabbitmq.mq:5672/"
        else:
            found[item["name"]] = "from-a-secret"
    return found


@pytest.mark.parametrize("values", [pytest.param(MINIMAL, id="minimal"), *CASES])
def test_transport_settings_are_the_ones_sidecars_get(values: dict[str, Any]) -> None:
    objects = rendered(values)
    extra = {item["name"] for item in merged(values)["extraEnv"]}
    items = [i for i in container(objects)["env"] if i["name"] not in OWN_ENV | extra]
    transport = operator_transport(values)
    # The list the operator writes into every sidecar of this transport, item for item.
    assert items == [as_env_var(v) for v in transport_env.variables(transport)]
    assert env_of(objects)[env.TRANSPORT]["value"] == transport.type
    # ... and a broker the transport package builds from it.
    environ = literal_environ(container(objects)["env"])
    assert transports.create(transport.type, environ).name == transport.type


@pytest.mark.parametrize(
    ("stem", "namespace"),
    [("sqlite-persistent", GATEWAY_NAMESPACE), ("rabbitmq-postgresql", "team-a")],
)
def test_tasks_go_to_the_queue_the_actor_consumes(stem: str, namespace: str) -> None:
    values = values_of(stem)
    environ = literal_environ(container(rendered(values))["env"])
    assert environ[env.NAMESPACE] == namespace
    config = operator_config.parse({"transports": {"t": merged(values)["transport"]}})
    actor = AsyncActor.from_object(
        {
            "metadata": {"name": "classify", "namespace": namespace},
            "spec": {"handler": "model.predict", "image": "registry.example/classify:1"},
        }
    )
    queue = operator_render.plan(actor, config).queue
    assert names.queue_name(environ[env.NAMESPACE], "classify") == queue


def test_pubsub_key_is_mounted_where_the_variable_points() -> None:
    objects = rendered(values_of("pubsub"))
    path = Path(env_of(objects)["GOOGLE_APPLICATION_CREDENTIALS"]["value"])
    mount = mounts(objects)["gcp-credentials"]
    assert mount["readOnly"] is True
    assert path.parent == Path(mount["mountPath"])
    secret = volumes(objects)["gcp-credentials"]["secret"]
    assert secret["secretName"] == "pubsub-asya"
    assert secret["items"] == [{"key": "key.json", "path": path.name}]
    assert secret["defaultMode"] == 0o440
    assert "gcp-credentials" not in volumes(rendered(values_of("pubsub-emulator")))


@pytest.mark.parametrize(
    ("stem", "annotation", "value"),
    [
        (
            "sqs-pod-identity",
            "eks.amazonaws.com/role-arn",
            "arn:aws:iam::123456789012:role/asya-gateway",
        ),
        (
            "pubsub-emulator",
            "iam.gke.io/gcp-service-account",
            "asya-gateway@demo-project.iam.gserviceaccount.com",
        ),
    ],
)
def test_pod_identity_goes_on_the_service_account(stem: str, annotation: str, value: str) -> None:
    objects = rendered(values_of(stem))
    account = one(objects, "ServiceAccount")
    assert account["metadata"]["annotations"] == {annotation: value}
    assert account["automountServiceAccountToken"] is False
    assert pod(objects)["serviceAccountName"] == account["metadata"]["name"]
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(env_of(objects))
    # Without one, the namespace's default account (and no object).
    assert "serviceAccountName" not in pod(rendered(MINIMAL))
    assert not of_kind(rendered(MINIMAL), "ServiceAccount")


CREDENTIAL_IN_URL = re.compile(r"://[^/@\s]*:[^/@\s]*@")


@pytest.mark.parametrize("values", [pytest.param(MINIMAL, id="minimal"), *CASES])
def test_no_credential_is_ever_a_literal(values: dict[str, Any]) -> None:
    for item in container(rendered(values))["env"]:
        if item["name"].startswith("AWS_") and item["name"] != "AWS_REGION":
            assert "value" not in item, item
        assert not CREDENTIAL_IN_URL.search(item.get("value", "")), item


def test_transport_schema_is_the_operators() -> None:
    """One transport entry, one shape: what the operator chart takes, the gateway takes (an
    SQS accountId is optional here, and the type is checked by the template's message)."""
    ours = json.loads((GATEWAY / "values.schema.json").read_text())["definitions"]
    theirs = json.loads((OPERATOR / "values.schema.json").read_text())["definitions"]
    for name in ("rabbitmq", "pubsub", "dlq", "secretKey", "dnsSubdomain", "dnsLabel"):
        assert ours[name] == theirs[name], name
    sqs = dict(theirs["sqs"], required=["region", "credentials"])
    assert ours["sqs"] == sqs
    transport = {k: v for k, v in theirs["transport"].items() if k != "required"}
    assert ours["transport"] == transport


# ------------------------------------------------------------------- ingress and policy


def test_ingress_routes_to_the_public_service_only() -> None:
    objects = rendered(values_of("rabbitmq-postgresql"))
    ingress = one(objects, "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [
        {"hosts": ["gateway.example.com"], "secretName": "gateway-example-tls"}
    ]
    backends = [
        path["backend"]["service"]
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]
    assert backends == [{"name": "asya-gateway", "port": {"name": "http"}}]
    ports = {p["name"] for p in services(objects)["asya-gateway"]["spec"]["ports"]}
    assert ports == {"http"}
    # By default only the task API: /healthz, /readyz and /metrics stay in the cluster.
    (rule,) = ingress["spec"]["rules"]
    assert [p["path"] for p in rule["http"]["paths"]] == ["/v1"]
    assert not of_kind(rendered(MINIMAL), "Ingress")


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    """A Kubernetes LabelSelector applied to labels ({} selects everything)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = (
            expression["key"],
            expression["operator"],
            expression.get("values", []),
        )
        matched = {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not matched:
            return False
    return True


def admits(policy: Obj, *, namespace: str, labels: dict[str, str], port: int) -> bool:
    """Whether a NetworkPolicy lets a pod (namespace, labels) reach `port` of the pods it
    selects, by the NetworkPolicy rules: a rule without ports covers every port, one
    without `from` every source; a peer without namespaceSelector means the policy's own
    namespace; namespaces carry their kubernetes.io/metadata.name label."""
    for rule in policy["spec"].get("ingress", []):
        ports = rule.get("ports")
        if ports and not any(p["port"] == port for p in ports):
            continue
        peers = rule.get("from")
        if not peers:
            return True
        for peer in peers:
            if "ipBlock" in peer:
                continue
            spaces = peer.get("namespaceSelector")
            if spaces is None:
                in_namespace = namespace == policy["metadata"]["namespace"]
            else:
                in_namespace = selects(spaces, {"kubernetes.io/metadata.name": namespace})
            if in_namespace and selects(peer.get("podSelector", {}), labels):
                return True
    return False


GATEWAY_URL = "http://asya-gateway-internal.asya-gateway.svc:8081"
OPERATOR_CONFIG = operator_config.parse(
    {
        "transports": {"mq": {"type": "rabbitmq", "url": "amqp://rabbitmq.mq.svc:5672/"}},
        "gateway": {"url": GATEWAY_URL},
        "crewNamespace": CREW_NAMESPACE,
    }
)


def actor_pod_labels(namespace: str, **spec: Any) -> dict[str, str]:
    """The labels of the pods the operator renders for an actor."""
    spec = {"handler": "model.predict", "image": "registry.example/model:1", **spec}
    actor = AsyncActor.from_object(
        {"metadata": {"name": "model", "namespace": namespace}, "spec": spec}
    )
    deployment = one(operator_render.render(actor, OPERATOR_CONFIG), "Deployment")
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def crew_pod_labels() -> list[dict[str, str]]:
    """The pods of the whole crew: x-sink, x-sump, x-join and x-pause. x-pause is off by
    default; where a gateway runs it is on, and it is the crew actor that most needs the
    internal port."""
    values = {"pause": {"enabled": True}}
    found: dict[str, dict[str, str]] = {}
    for actor in of_kind(render(CREW, values, CREW_NAMESPACE), "AsyncActor"):
        objects = operator_render.render(AsyncActor.from_object(actor), OPERATOR_CONFIG)
        found[actor["metadata"]["name"]] = one(objects, "Deployment")["spec"]["template"][
            "metadata"
        ]["labels"]
    assert set(found) == {names.SINK, names.SUMP, names.JOIN, names.PAUSE}
    return list(found.values())


def policy_of(values: dict[str, Any]) -> Obj:
    objects = rendered(values)
    policy = one(objects, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert selects(policy["spec"]["podSelector"], pod_labels(objects))
    return policy


def test_internal_port_admits_actor_and_crew_pods_only() -> None:
    policy = policy_of(MINIMAL)
    # The user's own pod labels cannot take the operator's label away, or fake its absence.
    template = {"metadata": {"labels": {"asya.sh/actor": "spoofed", "team": "a"}}}
    actors = [
        actor_pod_labels("team-a"),
        actor_pod_labels("team-b", template=template),
        *crew_pod_labels(),
    ]
    for labels in actors:
        for namespace in ("team-a", "team-b", CREW_NAMESPACE):
            assert admits(policy, namespace=namespace, labels=labels, port=INTERNAL_PORT)
    others = [
        pod_labels(rendered(MINIMAL)),
        {"app": "web"},
        {"app.kubernetes.io/name": "asya-actor"},
        {},
    ]
    for labels in others:
        assert not admits(policy, namespace="team-a", labels=labels, port=INTERNAL_PORT), labels
        assert not admits(policy, namespace=GATEWAY_NAMESPACE, labels=labels, port=INTERNAL_PORT)
        # The public port is open to the cluster by default.
        assert admits(policy, namespace="team-a", labels=labels, port=PUBLIC_PORT)
    # Nothing else on the pod is reachable.
    assert not admits(policy, namespace="team-a", labels=actors[0], port=9000)


def test_internal_port_admits_only_the_named_namespaces() -> None:
    policy = policy_of(values_of("rabbitmq-postgresql"))
    assert admits(policy, namespace="team-a", labels=actor_pod_labels("team-a"), port=INTERNAL_PORT)
    for labels in crew_pod_labels():
        assert admits(policy, namespace=CREW_NAMESPACE, labels=labels, port=INTERNAL_PORT)
    assert not admits(
        policy, namespace="team-b", labels=actor_pod_labels("team-b"), port=INTERNAL_PORT
    )
    # The public port: the ingress controller's namespace only.
    assert admits(policy, namespace="ingress-nginx", labels={}, port=PUBLIC_PORT)
    assert not admits(policy, namespace="team-a", labels={}, port=PUBLIC_PORT)


def test_public_port_may_admit_any_source() -> None:
    policy = policy_of(values_of("pubsub"))
    (public,) = [r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == PUBLIC_PORT]
    # No `from`: outside the cluster too (a LoadBalancer).
    assert "from" not in public
    assert not admits(policy, namespace="team-a", labels={"app": "web"}, port=INTERNAL_PORT)


def test_network_policy_can_be_left_out() -> None:
    assert not of_kind(rendered(values_of("sqs-pod-identity")), "NetworkPolicy")
    assert "NetworkPolicy is off" in notes(values_of("sqs-pod-identity"))


# -------------------------------------------------------------- NOTES and the operator


def test_notes_print_both_urls_and_the_operator_setting(tmp_path: Path) -> None:
    text = notes(MINIMAL)
    assert "http://asya-gateway.asya-gateway.svc\n" in text
    assert GATEWAY_URL in text
    assert f"--set gateway.url={GATEWAY_URL}" in text
    with_ingress = notes(values_of("rabbitmq-postgresql"))
    assert "https://gateway.example.com/v1" in with_ingress
    moved = notes(values_of("pubsub"))
    assert "http://asya-gateway.asya-gateway.svc:443" in moved
    assert "http://asya-gateway-internal.asya-gateway.svc:9091" in moved


def test_the_url_the_notes_print_reaches_every_sidecar(tmp_path: Path) -> None:
    """NOTES -> the operator chart's gateway.url -> its configuration file -> the
    ASYA_GATEWAY_URL of an actor's sidecar: the internal Service, end to end."""
    (url,) = re.findall(r"--set gateway\.url=(\S+)", notes(MINIMAL))
    internal = services(rendered(MINIMAL))["asya-gateway-internal"]
    port = internal["spec"]["ports"][0]["port"]
    assert url == f"http://{internal['metadata']['name']}.{GATEWAY_NAMESPACE}.svc:{port}"
    values = {**values_file(VALUES / "operator" / "rabbitmq.yaml"), "gateway": {"url": url}}
    objects = render(OPERATOR, values, OPERATOR_NAMESPACE)
    path = tmp_path / "operator.yaml"
    path.write_text(one(objects, "ConfigMap")["data"]["operator.yaml"])
    config = operator_config.load(path)
    assert config.gateway is not None
    assert config.gateway.url == url
    actor = AsyncActor.from_object(
        {
            "metadata": {"name": "model", "namespace": "team-a"},
            "spec": {"handler": "m.f", "image": "m:1"},
        }
    )
    deployment = one(operator_render.render(actor, config), "Deployment")
    pod_spec = deployment["spec"]["template"]["spec"]
    (sidecar,) = [c for c in pod_spec["containers"] if c["name"] == SIDECAR_CONTAINER]
    assert {"name": env.GATEWAY_URL, "value": url} in sidecar["env"]


def test_readme_and_notes_explain_the_separate_chart() -> None:
    readme = (CHARTS / "asya-gateway" / "README.md").read_text()
    for text in (readme, notes(MINIMAL)):
        assert "optional" in text
        assert "own" in text


# ------------------------------------------------------------------------ bad values


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_values_fail_naming_the_field(path: Path) -> None:
    values = values_file(path)
    with pytest.raises((helm.HelmValuesError, helm.HelmRenderError)) as caught:
        rendered(values)
    assert expected_error(path) in str(caught.value)
    if caught.type is helm.HelmValuesError:
        # `helm lint -f` reports schema problems too (but only logs a template's `fail`).
        report = helm.lint(GATEWAY, values, namespace=GATEWAY_NAMESPACE)
        assert any(expected_error(path) in error for error in report["errors"]), report


def test_the_sump_store_reaches_the_gateway_only_when_given() -> None:
    assert "ASYA_SUMP_STORE" not in env_of(rendered(MINIMAL))

    objects = rendered({**MINIMAL, "sumpStore": "s3://asya-results/sump"})

    assert env_of(objects)["ASYA_SUMP_STORE"] == {
        "name": "ASYA_SUMP_STORE",
        "value": "s3://asya-results/sump",
    }


def test_a_sump_store_that_is_no_store_url_fails_the_install() -> None:
    with pytest.raises((helm.HelmValuesError, helm.HelmRenderError), match="sumpStore"):
        rendered({**MINIMAL, "sumpStore": "http://somewhere/sump"})
