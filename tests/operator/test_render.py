"""asya_operator.render: the objects an AsyncActor becomes.

No golden files: every rendered object is checked against the real schemas (Kubernetes'
through kubernetes-validate, KEDA's CRDs from tests/data/keda), and the contracts
between the objects are checked as properties, for every transport and option.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import asya_transports as transports
from asya_operator import config as operator_config
from asya_operator.models import RUNTIME_CONTAINER, SIDECAR_CONTAINER, AsyncActor
from asya_operator.render import (
    Plan,
    RenderError,
    UnknownTransport,
    build,
    bundled_runtime_source,
    labels,
    plan,
    render,
    resolve_transport,
    shutdown_timeout,
)
from asya_shared import env, names
from asya_shared.durations import parse_duration
from asya_sidecar import config as sidecar_config
from asya_sidecar import resiliency as sidecar_resiliency
from tests.support.schemas import validate

RUNTIME = "# a stand-in for asya_runtime/runtime.py\nprint('serving')\n"

TRANSPORTS: dict[str, dict[str, Any]] = {
    "rabbitmq-secret": {
        "type": "rabbitmq",
        "credentials": {"secretRef": {"name": "rabbitmq-creds"}},
    },
    "rabbitmq-url": {"type": "rabbitmq", "url": "amqp://rabbitmq.mq:5672/asya"},
    "rabbitmq-both": {
        "type": "rabbitmq",
        "url": "amqp://rabbitmq.mq:5672/",
        "queueType": "classic",
        "credentials": {"secretRef": {"name": "rabbitmq-creds", "keys": {"url": "amqp-url"}}},
    },
    "sqs-secret": {
        "type": "sqs",
        "region": "eu-west-1",
        "accountId": "123456789012",
        "credentials": {"secretRef": {"name": "aws-creds"}},
    },
    "sqs-endpoint": {
        "type": "sqs",
        "region": "us-east-1",
        "accountId": "000000000000",
        "endpoint": "http://moto.test:5000/",
        "credentials": {
            "secretRef": {
                "name": "aws-creds",
                "keys": {"accessKeyId": "id", "secretAccessKey": "key"},
            }
        },
    },
    "sqs-role": {
        "type": "sqs",
        "region": "eu-west-1",
        "accountId": "123456789012",
        "credentials": {
            "podIdentity": {"provider": "aws", "roleArn": "arn:aws:iam::123456789012:role/keda"}
        },
    },
    "sqs-identity": {
        "type": "sqs",
        "region": "eu-west-1",
        "accountId": "123456789012",
        "credentials": {"podIdentity": {"provider": "aws"}},
    },
    "pubsub-secret": {
        "type": "pubsub",
        "project": "my-project",
        "credentials": {"secretRef": {"name": "gcp-key"}},
    },
    "pubsub-identity": {
        "type": "pubsub",
        "project": "my-project",
        "credentials": {"podIdentity": {"provider": "gcp"}},
    },
    "pubsub-emulator": {"type": "pubsub", "project": "demo", "emulatorHost": "emulator:8085"},
}
CONFIG = operator_config.parse({"transports": TRANSPORTS, "defaultTransport": "rabbitmq-url"})
SCALABLE = sorted(set(TRANSPORTS) - {"pubsub-emulator"})
WITH_SECRET = sorted(t for t in TRANSPORTS if "secretRef" in TRANSPORTS[t].get("credentials", {}))
TRIGGER_TYPE = {"rabbitmq": "rabbitmq", "sqs": "aws-sqs-queue", "pubsub": "gcp-pubsub"}
# Variables whose value is a credential: never a literal in a rendered object.
CREDENTIAL_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}
# Trigger metadata keys KEDA reads credentials from; they belong in a TriggerAuthentication.
CREDENTIAL_METADATA = {"awsAccessKeyID", "awsSecretAccessKey", "credentials", "password"}


def make_actor(name: str = "infer", namespace: str = "ml", **spec: Any) -> AsyncActor:
    spec.setdefault("handler", "model.predict")
    spec.setdefault("image", "registry.example/infer:1")
    return AsyncActor.from_object(
        {"metadata": {"name": name, "namespace": namespace}, "spec": spec}
    )


def rendered(transport: str = "rabbitmq-url", **spec: Any) -> list[dict[str, Any]]:
    return render(make_actor(transport=transport, **spec), CONFIG, runtime_source=RUNTIME)


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = [o["kind"] for o in objects]
    assert len(kinds) == len(set(kinds)), kinds
    return {o["kind"]: o for o in objects}


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = by_kind(objects)["Deployment"]["spec"]["template"]["spec"]
    return spec


def all_containers(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    pod = pod_spec(objects)
    return {c["name"]: c for c in [*pod.get("initContainers", []), *pod["containers"]]}


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


def literal_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment with secret-sourced values replaced by stand-ins."""
    result = {}
    for name, item in env_of(container).items():
        if "value" in item:
            result[name] = item["value"]
        elif name == env.RABBITMQ_URL:
            result[name] = "amqp://user:secret@rabbitmq.mq:5672/"
        else:
            result[name] = "from-a-secret"
    return result


# ------------------------------------------------------------------------------ validation


def test_keda_validation_catches_a_misspelled_field() -> None:
    objects = rendered("sqs-secret")
    scaled = by_kind(objects)["ScaledObject"]
    scaled["spec"]["minReplicas"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validate([scaled])
    scaled = by_kind(rendered("sqs-secret"))["ScaledObject"]
    scaled["spec"]["triggers"][0]["metadata"]["queueLength"] = 5
    with pytest.raises(jsonschema.ValidationError):
        validate([scaled])


# ------------------------------------------------------------------ properties, all options

dns_label = st.from_regex(r"\A[a-z]([a-z0-9-]{0,14}[a-z0-9])?\Z")
env_name = st.from_regex(r"\A[A-Z][A-Z0-9_]{0,12}\Z").filter(lambda n: not n.startswith("ASYA_"))
duration = st.sampled_from(["30s", "5m", "1h", "90", "1.5m", "250ms", "1h30m"])


@st.composite
def resiliency_specs(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if draw(st.booleans()):
        spec["actorTimeout"] = draw(duration)
    policy_names = draw(st.lists(st.sampled_from(["default", "slow", "rate-limited"]), unique=True))
    policies = {}
    for name in policy_names:
        policy: dict[str, Any] = {"maxAttempts": draw(st.integers(1, 10))}
        if draw(st.booleans()):
            policy["backoff"] = draw(st.sampled_from(["constant", "linear", "exponential"]))
            delays = sorted(draw(st.lists(duration, min_size=2, max_size=2)), key=parse_duration)
            policy["initialDelay"], policy["maxInterval"] = delays
            policy["jitter"] = draw(st.floats(0, 1))
        if draw(st.booleans()):
            policy["maxDuration"] = draw(duration)
        policy["thenRoute"] = draw(st.lists(dns_label, max_size=2))
        policies[name] = policy
    if policies:
        spec["policies"] = policies
    defined = [*policy_names, "default"]
    spec["rules"] = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "errors": st.lists(st.sampled_from(["TimeoutError", "x.Boom"]), min_size=1),
                    "policy": st.sampled_from(defined),
                }
            ),
            max_size=2,
        )
    )
    return spec


@st.composite
def cases(draw: st.DrawFn) -> tuple[str, str, str, dict[str, Any]]:
    enabled = draw(st.booleans())
    transport = draw(st.sampled_from(SCALABLE if enabled else sorted(TRANSPORTS)))
    low = draw(st.integers(0, 5))
    spec: dict[str, Any] = {
        "transport": transport,
        "concurrency": draw(st.integers(1, 1000)),
        "scaling": {
            "enabled": enabled,
            "minReplicas": low,
            "maxReplicas": draw(st.integers(max(low, 1), 100)),
            "queueLength": draw(st.integers(1, 100000)),
            "pollingInterval": draw(st.integers(1, 3600)),
            "cooldownPeriod": draw(st.integers(0, 86400)),
        },
        "terminationGracePeriodSeconds": draw(st.integers(10, 86400)),
        "resiliency": draw(resiliency_specs()),
        "env": [
            {"name": n, "value": draw(st.text(max_size=20))}
            for n in draw(st.lists(env_name, unique=True, max_size=3))
        ],
    }
    if not enabled and draw(st.booleans()):
        spec["replicas"] = draw(st.integers(0, 20))
    if draw(st.booleans()):
        spec["actor"] = draw(dns_label)
    return draw(dns_label), draw(dns_label), transport, spec


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_every_rendering_is_valid_and_consistent(
    case: tuple[str, str, str, dict[str, Any]],
) -> None:
    name, namespace, transport_name, spec = case
    actor = make_actor(name, namespace, **spec)
    objects = render(actor, CONFIG, runtime_source=RUNTIME)
    validate(objects)
    transport = CONFIG.transports[transport_name]
    scaling = actor.spec.scaling

    kinds = [o["kind"] for o in objects]
    if not scaling.enabled:
        assert kinds == ["ConfigMap", "Deployment"]
    elif transport_name == "rabbitmq-url":
        assert kinds == ["ConfigMap", "Deployment", "ScaledObject"]
    else:
        assert kinds == ["ConfigMap", "TriggerAuthentication", "Deployment", "ScaledObject"]
    for obj in objects:
        assert obj["metadata"]["namespace"] == namespace
        assert obj["metadata"]["labels"] == labels(actor)
        assert "ownerReferences" not in obj["metadata"]
    objs = by_kind(objects)
    assert objs["ConfigMap"]["metadata"]["name"] == f"{name}-asya-runtime"
    assert objs["ConfigMap"]["data"] == {"runtime.py": RUNTIME}
    deployment = objs["Deployment"]
    assert deployment["metadata"]["name"] == name

    # Replicas belong to KEDA while it scales; the key must not even be present.
    if scaling.enabled:
        assert "replicas" not in deployment["spec"]
    else:
        expected = 1 if actor.spec.replicas is None else actor.spec.replicas
        assert deployment["spec"]["replicas"] == expected

    template = deployment["spec"]["template"]
    match = deployment["spec"]["selector"]["matchLabels"]
    assert match == {"asya.sh/actor": actor.actor, "app.kubernetes.io/instance": name}
    assert match.items() <= template["metadata"]["labels"].items()
    assert labels(actor).items() <= template["metadata"]["labels"].items()
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8080"
    assert annotations["prometheus.io/path"] == "/metrics"
    pod = template["spec"]
    assert pod["terminationGracePeriodSeconds"] == actor.spec.termination_grace_period_seconds
    assert_restricted(objects)

    containers = all_containers(objects)
    runtime, sidecar = containers[RUNTIME_CONTAINER], containers[SIDECAR_CONTAINER]
    runtime_env = literal_env(runtime)
    assert runtime_env[env.HANDLER] == "model.predict"
    assert runtime_env[env.SOCKET_DIR] == "/var/run/asya"
    assert runtime_env[env.RUNTIME_CONCURRENCY] == str(actor.spec.concurrency)
    for item in actor.spec.env:
        assert env_of(runtime)[item["name"]] == item

    # What the sidecar will make of its environment, through its own loader.
    environ = literal_env(sidecar)
    loaded = sidecar_config.load(environ)
    queue = names.queue_name(namespace, actor.actor)
    assert plan(actor, CONFIG) == Plan(transport_name, transport, queue)
    assert (loaded.actor, loaded.namespace) == (actor.actor, namespace)
    assert loaded.transport == transport.type
    assert (loaded.queue, loaded.sink_queue, loaded.sump_queue) == (
        queue,
        names.queue_name(namespace, names.SINK),
        names.queue_name(namespace, names.SUMP),
    )
    assert loaded.concurrency == actor.spec.concurrency
    assert loaded.socket_dir == runtime_env[env.SOCKET_DIR]
    grace = actor.spec.termination_grace_period_seconds
    assert 5 <= loaded.shutdown_timeout <= grace - 5
    expected_resiliency = sidecar_resiliency.parse(
        json.loads(json.dumps(spec["resiliency"])) or None
    )
    assert loaded.resiliency.policies == expected_resiliency.policies
    assert loaded.resiliency.rules == expected_resiliency.rules
    assert transports.create(transport.type, environ).name == transport.type

    assert_no_literal_credentials(objects)
    if scaling.enabled:
        scaled = objs["ScaledObject"]["spec"]
        assert scaled["scaleTargetRef"]["name"] == name
        assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (
            scaling.min_replicas,
            scaling.max_replicas,
        )
        assert scaled["pollingInterval"] == scaling.polling_interval
        assert scaled["cooldownPeriod"] == scaling.cooldown_period
        (trigger,) = scaled["triggers"]
        assert trigger["type"] == TRIGGER_TYPE[transport.type]
        assert all(isinstance(v, str) for v in trigger["metadata"].values())
        assert queue in " ".join(trigger["metadata"].values())
        assert str(scaling.queue_length) in trigger["metadata"].values()
        if "TriggerAuthentication" in objs:
            assert trigger["authenticationRef"] == {"name": f"{name}-asya"}
        else:
            assert "authenticationRef" not in trigger


def assert_restricted(objects: list[dict[str, Any]]) -> None:
    """Pod Security 'restricted' on the pod and on every container, plus a read-only root."""
    pod = pod_spec(objects)
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security.get("runAsUser") != 0
    assert security["seccompProfile"]["type"] in ("RuntimeDefault", "Localhost")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(key)
    for container in all_containers(objects).values():
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["runAsNonRoot"] is True
        assert context["capabilities"]["drop"] == ["ALL"]
        assert set(context["capabilities"].get("add", [])) <= {"NET_BIND_SERVICE"}
        assert context["seccompProfile"]["type"] in ("RuntimeDefault", "Localhost")
        assert not context.get("privileged")
    for name in (RUNTIME_CONTAINER, SIDECAR_CONTAINER):
        container = all_containers(objects)[name]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}


def _walk(value: Any) -> list[Any]:
    found = [value]
    if isinstance(value, dict):
        for item in value.values():
            found += _walk(item)
    elif isinstance(value, list):
        for item in value:
            found += _walk(item)
    return found


def assert_no_literal_credentials(objects: list[dict[str, Any]]) -> None:
    for node in _walk(objects):
        if isinstance(node, dict) and node.get("name") in CREDENTIAL_ENV:
            assert "value" not in node, node
        if isinstance(node, str):
            # userinfo in a URL, or a private key
            assert not re.search(r"://[^/\s]*@", node), node
            assert "PRIVATE KEY" not in node
    for obj in objects:
        if obj["kind"] == "TriggerAuthentication":
            assert set(obj["spec"]) <= {"secretTargetRef", "podIdentity"}
            for ref in obj["spec"].get("secretTargetRef", []):
                assert set(ref) == {"parameter", "name", "key"}
        if obj["kind"] == "ScaledObject":
            for trigger in obj["spec"]["triggers"]:
                assert not CREDENTIAL_METADATA & set(trigger["metadata"])
        if obj["kind"] == "Deployment":
            for container in all_containers([obj]).values():
                for item in container.get("env", []):
                    if item["name"] in (env.RABBITMQ_URL,) and "value" in item:
                        assert "@" not in item["value"]


# ----------------------------------------------------------------------- per transport


def test_rabbitmq_with_a_secret_gives_keda_the_url_as_host() -> None:
    objects = rendered("rabbitmq-both")
    objs = by_kind(objects)
    sidecar = all_containers(objects)[SIDECAR_CONTAINER]
    assert env_of(sidecar)[env.RABBITMQ_URL] == {
        "name": env.RABBITMQ_URL,
        "valueFrom": {"secretKeyRef": {"name": "rabbitmq-creds", "key": "amqp-url"}},
    }
    assert env_of(sidecar)[env.RABBITMQ_QUEUE_TYPE]["value"] == "classic"
    assert objs["TriggerAuthentication"]["metadata"]["name"] == "infer-asya"
    assert objs["TriggerAuthentication"]["spec"] == {
        "secretTargetRef": [{"parameter": "host", "name": "rabbitmq-creds", "key": "amqp-url"}]
    }
    trigger = objs["ScaledObject"]["spec"]["triggers"][0]
    assert trigger == {
        "type": "rabbitmq",
        "metadata": {"queueName": "asya-ml-infer", "mode": "QueueLength", "value": "5"},
        "authenticationRef": {"name": "infer-asya"},
    }


def test_rabbitmq_with_a_plain_url_puts_it_in_the_trigger() -> None:
    objects = rendered("rabbitmq-url", scaling={"queueLength": 20})
    trigger = by_kind(objects)["ScaledObject"]["spec"]["triggers"][0]
    assert trigger["metadata"] == {
        "queueName": "asya-ml-infer",
        "mode": "QueueLength",
        "value": "20",
        "host": "amqp://rabbitmq.mq:5672/asya",
    }
    sidecar = all_containers(objects)[SIDECAR_CONTAINER]
    assert env_of(sidecar)[env.RABBITMQ_URL]["value"] == "amqp://rabbitmq.mq:5672/asya"


@pytest.mark.parametrize(
    ("transport", "url"),
    [
        ("sqs-secret", "https://sqs.eu-west-1.amazonaws.com/123456789012/asya-ml-infer"),
        ("sqs-endpoint", "http://moto.test:5000/000000000000/asya-ml-infer"),
    ],
)
def test_sqs_with_keys_from_a_secret(transport: str, url: str) -> None:
    objects = rendered(transport, scaling={"queueLength": 7})
    objs = by_kind(objects)
    metadata = objs["ScaledObject"]["spec"]["triggers"][0]["metadata"]
    region = TRANSPORTS[transport]["region"]
    expected = {"queueURL": url, "queueLength": "7", "awsRegion": region}
    if transport == "sqs-endpoint":
        expected["awsEndpoint"] = "http://moto.test:5000/"
    assert metadata == expected
    keys = TRANSPORTS[transport]["credentials"]["secretRef"].get("keys", {})
    key_id, secret_key = (
        keys.get("accessKeyId", "accessKeyId"),
        keys.get("secretAccessKey", "secretAccessKey"),
    )
    assert objs["TriggerAuthentication"]["spec"] == {
        "secretTargetRef": [
            {"parameter": "awsAccessKeyID", "name": "aws-creds", "key": key_id},
            {"parameter": "awsSecretAccessKey", "name": "aws-creds", "key": secret_key},
        ]
    }
    sidecar_env = env_of(all_containers(objects)[SIDECAR_CONTAINER])
    assert sidecar_env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["key"] == key_id
    assert sidecar_env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["key"] == secret_key
    assert sidecar_env["AWS_REGION"]["value"] == region
    assert sidecar_env[env.SQS_VISIBILITY_TIMEOUT]["value"] == "30"
    assert sidecar_env[env.SQS_MAX_RECEIVE_COUNT]["value"] == "10"
    assert (env.SQS_ENDPOINT in sidecar_env) == (transport == "sqs-endpoint")


@pytest.mark.parametrize("transport", ["sqs-role", "sqs-identity"])
def test_sqs_with_pod_identity(transport: str) -> None:
    objects = rendered(transport, serviceAccountName="infer-irsa")
    objs = by_kind(objects)
    identity = {"provider": "aws"}
    if transport == "sqs-role":
        identity["roleArn"] = "arn:aws:iam::123456789012:role/keda"
    assert objs["TriggerAuthentication"]["spec"] == {"podIdentity": identity}
    sidecar_env = env_of(all_containers(objects)[SIDECAR_CONTAINER])
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(sidecar_env)
    assert pod_spec(objects)["serviceAccountName"] == "infer-irsa"


def test_pubsub_with_a_key_from_a_secret_mounts_it_as_a_file() -> None:
    objects = rendered("pubsub-secret", scaling={"queueLength": 3})
    objs = by_kind(objects)
    assert objs["ScaledObject"]["spec"]["triggers"][0]["metadata"] == {
        "subscriptionName": "projects/my-project/subscriptions/asya-ml-infer",
        "mode": "NumUndeliveredMessages",
        "value": "3",
        "valueIfNull": "0",
    }
    assert objs["TriggerAuthentication"]["spec"] == {
        "secretTargetRef": [
            {"parameter": "GoogleApplicationCredentials", "name": "gcp-key", "key": "credentials"}
        ]
    }
    sidecar = all_containers(objects)[SIDECAR_CONTAINER]
    path = env_of(sidecar)["GOOGLE_APPLICATION_CREDENTIALS"]["value"]
    (mount,) = [m for m in sidecar["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    (volume,) = [v for v in pod_spec(objects)["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "gcp-key"
    assert volume["secret"]["items"] == [{"key": "credentials", "path": path.rsplit("/", 1)[1]}]
    assert mount["readOnly"] is True
    assert env_of(sidecar)[env.PUBSUB_PROJECT]["value"] == "my-project"
    assert env_of(sidecar)[env.PUBSUB_ACK_DEADLINE]["value"] == "60"
    assert env_of(sidecar)[env.PUBSUB_MAX_DELIVERY_ATTEMPTS]["value"] == "10"
    # The scaler no longer accepts subscriptionSize (see SCALERS.md).
    assert "subscriptionSize" not in objs["ScaledObject"]["spec"]["triggers"][0]["metadata"]


def test_pubsub_with_workload_identity() -> None:
    objects = rendered("pubsub-identity")
    objs = by_kind(objects)
    assert objs["TriggerAuthentication"]["spec"] == {"podIdentity": {"provider": "gcp"}}
    sidecar = all_containers(objects)[SIDECAR_CONTAINER]
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in env_of(sidecar)
    assert all(v["name"] != "asya-gcp-credentials" for v in pod_spec(objects)["volumes"])


def test_pubsub_emulator_runs_with_fixed_replicas_only() -> None:
    objects = rendered("pubsub-emulator", scaling={"enabled": False}, replicas=2)
    assert [o["kind"] for o in objects] == ["ConfigMap", "Deployment"]
    assert by_kind(objects)["Deployment"]["spec"]["replicas"] == 2
    sidecar_env = env_of(all_containers(objects)[SIDECAR_CONTAINER])
    assert sidecar_env[env.PUBSUB_EMULATOR_HOST]["value"] == "emulator:8085"
    with pytest.raises(RenderError, match=r"emulator.*spec\.scaling\.enabled: false"):
        rendered("pubsub-emulator")


@pytest.mark.parametrize("transport", WITH_SECRET)
def test_no_trigger_authentication_without_scaling(transport: str) -> None:
    objects = rendered(transport, scaling={"enabled": False})
    assert [o["kind"] for o in objects] == ["ConfigMap", "Deployment"]
    assert by_kind(objects)["Deployment"]["spec"]["replicas"] == 1


# -------------------------------------------------------------------------------- the pod


def test_runtime_is_mounted_from_the_config_map_and_started_before_the_sidecar() -> None:
    objects = rendered()
    pod = pod_spec(objects)
    runtime = all_containers(objects)[RUNTIME_CONTAINER]
    # A restartable init container: up (startup probe passed) before the sidecar starts,
    # and stopped only after the sidecar has drained and exited.
    assert pod["initContainers"][-1] is runtime
    assert runtime["restartPolicy"] == "Always"
    assert "startupProbe" in runtime
    assert [c["name"] for c in pod["containers"]] == [SIDECAR_CONTAINER]
    assert runtime["command"] == ["python3", "/opt/asya/runtime.py"]
    (mount,) = [m for m in runtime["volumeMounts"] if m["mountPath"] == "/opt/asya"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == "infer-asya-runtime"
    sidecar = all_containers(objects)[SIDECAR_CONTAINER]
    socket_mounts = [
        {m["name"] for m in c["volumeMounts"] if m["mountPath"] == "/var/run/asya"}
        for c in (runtime, sidecar)
    ]
    assert socket_mounts[0] == socket_mounts[1]
    (shared,) = socket_mounts[0]
    assert {"name": shared, "emptyDir": {}} in pod["volumes"]


def test_probes() -> None:
    containers = all_containers(rendered())
    runtime, sidecar = containers[RUNTIME_CONTAINER], containers[SIDECAR_CONTAINER]
    for probe in ("startupProbe", "readinessProbe"):
        command = runtime[probe]["exec"]["command"]
        assert command[0] == "python3"
        assert "/var/run/asya/runtime-ready" in command[-1]
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert sidecar["ports"] == [{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}]


def test_runtime_probe_command_really_checks_the_ready_files(tmp_path: Path) -> None:
    # Run the probe's Python against a temporary directory instead of /var/run/asya.
    import subprocess
    import sys

    command = all_containers(rendered())[RUNTIME_CONTAINER]["readinessProbe"]["exec"]["command"]
    code = command[-1].replace("/var/run/asya", str(tmp_path))

    def probe() -> int:
        return subprocess.run([sys.executable, "-S", "-c", code], check=False).returncode

    assert probe() == 1
    (tmp_path / "runtime-ready").write_text("{}")
    assert probe() == 1
    (tmp_path / "asya-runtime.sock").write_text("")
    assert probe() == 0


def test_sidecar_settings_come_from_the_operator_config() -> None:
    config = operator_config.parse(
        {
            "transports": {"mq": TRANSPORTS["rabbitmq-url"]},
            "crewNamespace": "asya-crew",
            "sidecar": {
                "image": "registry.example/asya:9",
                "imagePullPolicy": "Always",
                "resources": {"requests": {"cpu": "50m"}},
            },
        }
    )
    objects = render(make_actor(), config, runtime_source=RUNTIME)
    validate(objects)
    sidecar = all_containers(objects)[SIDECAR_CONTAINER]
    assert sidecar["image"] == "registry.example/asya:9"
    assert sidecar["imagePullPolicy"] == "Always"
    assert sidecar["command"] == ["asya", "sidecar"]
    assert sidecar["resources"] == {"requests": {"cpu": "50m"}}
    sidecar_env = literal_env(sidecar)
    assert sidecar_env[env.SINK_QUEUE] == "asya-asya-crew-x-sink"
    assert sidecar_env[env.SUMP_QUEUE] == "asya-asya-crew-x-sump"
    # The holding crew lives with the rest of the crew.
    assert sidecar_env[env.JOIN_QUEUE] == "asya-asya-crew-x-join"
    assert sidecar_env[env.PAUSE_QUEUE] == "asya-asya-crew-x-pause"
    assert sidecar_env[env.QUEUE] == "asya-ml-infer"


def test_flat_fields_reach_the_pod() -> None:
    objects = rendered(
        image="registry.example/infer:2",
        resources={"requests": {"cpu": "1"}, "limits": {"nvidia.com/gpu": "1"}},
        envFrom=[{"configMapRef": {"name": "model-settings"}}],
        env=[
            {"name": "MODEL", "value": "small"},
            {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "api", "key": "k"}}},
            {"name": env.LOG_LEVEL, "value": "debug"},
        ],
        nodeSelector={"gpu": "yes"},
        tolerations=[{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        serviceAccountName="infer",
        terminationGracePeriodSeconds=120,
        concurrency=4,
    )
    validate(objects)
    pod = pod_spec(objects)
    runtime = all_containers(objects)[RUNTIME_CONTAINER]
    assert runtime["image"] == "registry.example/infer:2"
    assert runtime["resources"] == {"requests": {"cpu": "1"}, "limits": {"nvidia.com/gpu": "1"}}
    assert runtime["envFrom"] == [{"configMapRef": {"name": "model-settings"}}]
    assert env_of(runtime)["API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "api"
    assert env_of(runtime)[env.RUNTIME_CONCURRENCY]["value"] == "4"
    assert pod["nodeSelector"] == {"gpu": "yes"}
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["serviceAccountName"] == "infer"
    assert pod["terminationGracePeriodSeconds"] == 120
    sidecar_env = literal_env(all_containers(objects)[SIDECAR_CONTAINER])
    assert sidecar_env[env.CONCURRENCY] == "4"
    assert sidecar_env[env.SHUTDOWN_TIMEOUT] == str(shutdown_timeout(120))
    # Log settings are shared; the handler's own variables stay with the handler.
    assert sidecar_env[env.LOG_LEVEL] == "debug"
    assert "MODEL" not in sidecar_env


@pytest.mark.parametrize(("grace", "expected"), [(10, 5), (30, 24), (60, 48), (3600, 3570)])
def test_shutdown_timeout_leaves_a_margin(grace: int, expected: int) -> None:
    assert shutdown_timeout(grace) == expected


def test_resiliency_reaches_the_sidecar_as_json() -> None:
    resiliency = {
        "actorTimeout": "2m",
        "policies": {
            "rate-limited": {
                "maxAttempts": 6,
                "backoff": "exponential",
                "initialDelay": "2s",
                "maxInterval": "1m",
                "jitter": 0.2,
                "maxDuration": "10m",
                "thenRoute": ["fallback"],
            }
        },
        "rules": [{"errors": ["openai.RateLimitError"], "policy": "rate-limited"}],
    }
    sidecar = all_containers(rendered(resiliency=resiliency))[SIDECAR_CONTAINER]
    environ = literal_env(sidecar)
    assert json.loads(environ[env.RESILIENCY]) == resiliency
    loaded = sidecar_config.load(environ)
    assert loaded.actor_timeout == 120
    policy = loaded.resiliency.policies["rate-limited"]
    assert (policy.max_attempts, policy.then_route, policy.max_duration) == (6, ("fallback",), 600)


def test_runtime_source_defaults_to_the_bundled_runtime() -> None:
    objects = render(make_actor(), CONFIG)
    source = by_kind(objects)["ConfigMap"]["data"]["runtime.py"]
    assert source == bundled_runtime_source()
    assert "def main(" in source
    other = by_kind(rendered())["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    this = by_kind(objects)["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    # A different runtime file rolls the pods.
    assert other["asya.sh/runtime-sha256"] != this["asya.sh/runtime-sha256"]


def test_output_shares_nothing_with_the_spec() -> None:
    actor = make_actor(env=[{"name": "A", "value": "1"}], template={"spec": {"volumes": []}})
    first = build(actor, plan(actor, CONFIG), config=CONFIG, runtime_source=RUNTIME)
    runtime = all_containers(first)[RUNTIME_CONTAINER]
    env_of(runtime)["A"]["value"] = "changed"
    pod_spec(first)["securityContext"]["runAsUser"] = 7
    assert actor.spec.env == [{"name": "A", "value": "1"}]
    assert build(actor, plan(actor, CONFIG), config=CONFIG, runtime_source=RUNTIME) != first
    assert yaml.safe_dump_all(first).count("&id") == 0  # no shared nodes, hence no anchors


# ---------------------------------------------------------------------------- the template


def test_template_is_merged_with_the_flat_fields() -> None:
    template = {
        "metadata": {
            "labels": {"team": "ml", "asya.sh/actor": "spoofed"},
            "annotations": {"sidecar.istio.io/inject": "false"},
        },
        "spec": {
            "priorityClassName": "batch",
            "nodeSelector": {"zone": "a", "gpu": "no"},
            "tolerations": [{"key": "spot", "operator": "Exists"}],
            "securityContext": {"runAsUser": 1000, "fsGroup": 2000},
            "initContainers": [{"name": "fetch-weights", "image": "busybox", "command": ["true"]}],
            "containers": [
                {
                    "name": RUNTIME_CONTAINER,
                    "image": "registry.example/old:0",
                    "imagePullPolicy": "Always",
                    "env": [
                        {"name": "MODEL", "value": "from-template"},
                        {"name": "KEEP", "value": "kept"},
                    ],
                    "resources": {"limits": {"memory": "2Gi"}, "requests": {"cpu": "2"}},
                    "volumeMounts": [{"name": "weights", "mountPath": "/weights"}],
                    "securityContext": {"readOnlyRootFilesystem": False},
                },
                {"name": "model-server", "image": "registry.example/server:1"},
            ],
            "volumes": [{"name": "weights", "emptyDir": {}}],
        },
    }
    objects = rendered(
        template=template,
        image="registry.example/new:1",
        env=[{"name": "MODEL", "value": "from-spec"}],
        resources={"requests": {"cpu": "4"}},
        nodeSelector={"gpu": "yes"},
    )
    validate(objects)
    assert_restricted_except_read_only(objects)
    deployment = by_kind(objects)["Deployment"]
    metadata = deployment["spec"]["template"]["metadata"]
    assert metadata["labels"]["team"] == "ml"
    assert metadata["labels"]["asya.sh/actor"] == "infer"
    assert metadata["annotations"]["sidecar.istio.io/inject"] == "false"
    pod = pod_spec(objects)
    assert pod["priorityClassName"] == "batch"
    assert pod["nodeSelector"] == {"zone": "a", "gpu": "yes"}
    assert pod["tolerations"] == [{"key": "spot", "operator": "Exists"}]
    assert pod["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["fsGroup"] == 2000
    assert "runAsGroup" not in pod["securityContext"]
    assert [c["name"] for c in pod["initContainers"]] == ["fetch-weights", RUNTIME_CONTAINER]
    assert [c["name"] for c in pod["containers"]] == [SIDECAR_CONTAINER, "model-server"]
    runtime = all_containers(objects)[RUNTIME_CONTAINER]
    assert runtime["image"] == "registry.example/new:1"
    assert runtime["imagePullPolicy"] == "Always"
    assert env_of(runtime)["MODEL"]["value"] == "from-spec"
    assert env_of(runtime)["KEEP"]["value"] == "kept"
    assert runtime["resources"] == {"limits": {"memory": "2Gi"}, "requests": {"cpu": "4"}}
    assert {"name": "weights", "mountPath": "/weights"} in runtime["volumeMounts"]
    assert runtime["securityContext"]["readOnlyRootFilesystem"] is False
    assert {"name": "weights", "emptyDir": {}} in pod["volumes"]
    server = all_containers(objects)["model-server"]
    assert server["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def assert_restricted_except_read_only(objects: list[dict[str, Any]]) -> None:
    for container in all_containers(objects).values():
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["runAsNonRoot"] is True
        assert context["capabilities"]["drop"] == ["ALL"]
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod_spec(objects)["securityContext"]["runAsNonRoot"] is True


def test_template_may_supply_the_image() -> None:
    template = {"spec": {"containers": [{"name": RUNTIME_CONTAINER, "image": "x/y:1"}]}}
    actor = AsyncActor.from_object(
        {"metadata": {"name": "a"}, "spec": {"handler": "m.f", "template": template}}
    )
    objects = render(actor, CONFIG, runtime_source=RUNTIME)
    validate(objects)
    assert all_containers(objects)[RUNTIME_CONTAINER]["image"] == "x/y:1"
    assert by_kind(objects)["Deployment"]["metadata"]["namespace"] == "default"


def test_a_built_in_caller_without_an_image_runs_in_the_asya_image() -> None:
    objects = rendered(
        handler="asya_callers.openai.Chat.handle",
        image=None,
        env=[{"name": "ASYA_OPENAI_BASE_URL", "value": "http://vllm:8000"}],
    )
    validate(objects)
    runtime = all_containers(objects)[RUNTIME_CONTAINER]

    assert runtime["image"] == CONFIG.sidecar.image
    assert env_of(runtime)["ASYA_HANDLER"]["value"] == "asya_callers.openai.Chat.handle"
    assert env_of(runtime)["ASYA_OPENAI_BASE_URL"]["value"] == "http://vllm:8000"


def test_a_built_in_caller_keeps_an_image_it_is_given() -> None:
    objects = rendered(handler="asya_callers.http.Post.handle", image="mirror.example/asya:0.1.0")

    assert all_containers(objects)[RUNTIME_CONTAINER]["image"] == "mirror.example/asya:0.1.0"


# --------------------------------------------------------------------------------- errors


def _render_error(**spec: Any) -> str:
    with pytest.raises(RenderError) as info:
        rendered(**spec)
    return str(info.value)


def in_template(**fields: Any) -> dict[str, Any]:
    """spec fields for a template with these pod fields."""
    return {"template": {"spec": fields}}


def box(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "image": "registry.example/x:1", **fields}


REFUSED: list[tuple[dict[str, Any], str]] = [
    (in_template(containers=[box("asya-sidecar")]), r"'asya-sidecar' is reserved"),
    (in_template(initContainers=[box("asya-sidecar")]), r"'asya-sidecar' is reserved"),
    (
        in_template(containers=[box("asya-runtime", command=["python"])]),
        r"asya-runtime.*command is not allowed",
    ),
    (in_template(containers=[box("asya-runtime"), box("asya-runtime")]), r"defined twice"),
    ({"template": {"containers": []}}, r"unknown field.*containers.*spec\.template\.spec"),
    (in_template(volumes=[{"name": "asya-socket", "emptyDir": {}}]), r"'asya-socket' is reserved"),
    (
        in_template(
            containers=[
                box("asya-runtime", volumeMounts=[{"name": "v", "mountPath": "/var/run/asya"}])
            ]
        ),
        r"/var/run/asya is reserved",
    ),
    (
        in_template(containers=[box("x", securityContext={"privileged": True})]),
        r"container 'x'.*privileged.*restricted",
    ),
    (
        in_template(containers=[box("x", securityContext={"allowPrivilegeEscalation": True})]),
        r"allowPrivilegeEscalation",
    ),
    (
        in_template(
            containers=[box("x", securityContext={"capabilities": {"add": ["SYS_ADMIN"]}})]
        ),
        r"SYS_ADMIN",
    ),
    (
        in_template(
            containers=[box("x", securityContext={"seccompProfile": {"type": "Unconfined"}})]
        ),
        r"seccompProfile",
    ),
    (in_template(securityContext={"runAsUser": 0}), r"runAsUser: 0.*restricted"),
    (in_template(securityContext={"runAsNonRoot": False}), r"runAsNonRoot: false"),
    (in_template(hostNetwork=True), r"hostNetwork"),
    ({"env": [{"name": env.HANDLER, "value": "x.y"}]}, r"ASYA_HANDLER.*spec\.handler"),
    ({"env": [{"name": env.RUNTIME_CONCURRENCY, "value": "3"}]}, r"spec\.concurrency"),
    ({"env": [{"value": "nameless"}]}, r"spec\.env: every env entry needs a name"),
    ({"replicas": 3}, r"spec\.replicas.*scaling\.enabled: false"),
    ({"scaling": {"minReplicas": 5, "maxReplicas": 2}}, r"minReplicas \(5\).*maxReplicas"),
    (
        {"resiliency": {"rules": [{"errors": ["E"], "policy": "nope"}]}},
        r"rules\[0\]\.policy 'nope' is not defined",
    ),
    (
        {"resiliency": {"policies": {"p": {"initialDelay": "1h", "maxInterval": "1m"}}}},
        r"policies\.p\.maxInterval \(1m\) must not be shorter than initialDelay \(1h\)",
    ),
    ({"resiliency": {"actorTimeout": "0s"}}, r"actorTimeout must be more than zero"),
    ({"image": None}, r"spec\.image is required.*only built-in callers \(asya_callers\.\*\)"),
]


@pytest.mark.parametrize(("spec", "message"), REFUSED)
def test_specs_the_operator_refuses(spec: dict[str, Any], message: str) -> None:
    assert re.search(message, _render_error(**spec)), _render_error(**spec)


def test_unknown_transport_lists_the_configured_ones() -> None:
    message = _render_error(transport="kafka")
    assert "'kafka'" in message
    assert "rabbitmq-url" in message
    assert "sqs-secret" in message


def test_no_transport_configured() -> None:
    empty = operator_config.parse({})
    with pytest.raises(UnknownTransport, match="no transports configured"):
        render(make_actor(), empty, runtime_source=RUNTIME)
    with pytest.raises(UnknownTransport, match="no transports configured"):
        resolve_transport(make_actor(transport="mq"), empty)


def test_several_transports_and_no_default() -> None:
    config = operator_config.parse(
        {"transports": {k: TRANSPORTS[k] for k in ("sqs-secret", "pubsub-secret")}}
    )
    with pytest.raises(
        UnknownTransport, match=r"spec\.transport is not set.*pubsub-secret, sqs-secret"
    ):
        render(make_actor(), config, runtime_source=RUNTIME)
    assert resolve_transport(make_actor(transport="sqs-secret"), config)[0] == "sqs-secret"


@pytest.mark.parametrize(
    ("spec", "transport_name", "queue"),
    [
        ({}, "rabbitmq-url", "asya-ml-infer"),  # the default transport
        ({"transport": "sqs-secret"}, "sqs-secret", "asya-ml-infer"),
        ({"transport": "pubsub-emulator", "actor": "other"}, "pubsub-emulator", "asya-ml-other"),
    ],
)
def test_plan(spec: dict[str, Any], transport_name: str, queue: str) -> None:
    planned = plan(make_actor(**spec), CONFIG)
    assert planned == Plan(transport_name, CONFIG.transports[transport_name], queue)


ONE_OF_TWO = operator_config.parse(
    {"transports": {k: TRANSPORTS[k] for k in ("sqs-secret", "pubsub-secret")}}
)


@pytest.mark.parametrize(
    ("transport", "config"),
    [
        ("kafka", CONFIG),
        (None, ONE_OF_TWO),  # several transports and no default
        ("mq", operator_config.parse({})),
        (None, operator_config.parse({})),
    ],
)
def test_plan_refuses_an_unknown_transport(
    transport: str | None, config: operator_config.OperatorConfig
) -> None:
    with pytest.raises(UnknownTransport):
        plan(make_actor(transport=transport), config)


def test_the_plan_given_is_the_one_rendered() -> None:
    actor = make_actor(transport="sqs-secret")
    other = Plan("elsewhere", CONFIG.transports["sqs-endpoint"], "asya-ml-planned")
    objs = by_kind(render(actor, CONFIG, plan=other, runtime_source=RUNTIME))
    sidecar = env_of(all_containers(list(objs.values()))[SIDECAR_CONTAINER])
    assert sidecar[env.QUEUE]["value"] == "asya-ml-planned"
    assert sidecar[env.SQS_ENDPOINT]["value"] == "http://moto.test:5000/"
    metadata = objs["ScaledObject"]["spec"]["triggers"][0]["metadata"]
    assert metadata["queueURL"].endswith("/asya-ml-planned")


def test_a_spec_problem_is_named_before_a_queue_name_problem() -> None:
    # Both wrong: `asya render` has always named the spec first; plan() (the operator, which
    # creates the queue before it renders) the queue.
    both = make_actor("ok", "n" * 20, actor="a" * 60, transport="sqs-secret", replicas=2)
    with pytest.raises(RenderError, match=r"spec\.replicas only applies"):
        render(both, CONFIG, runtime_source=RUNTIME)
    with pytest.raises(RenderError, match="sqs allows 80"):
        plan(both, CONFIG)
    with pytest.raises(RenderError, match="sqs allows 80"):
        render(make_actor("ok", "n" * 20, actor="a" * 60, transport="sqs-secret"), CONFIG)


def test_sqs_queue_names_over_the_limit_are_refused_not_truncated() -> None:
    # asya-<ns>-<actor> plus "-dlq" must fit in SQS's 80 characters.
    namespace, fits = "n" * 20, "a" * 50  # 5 + 20 + 1 + 50 + 4 = 80
    actor = make_actor("ok", namespace, actor=fits, transport="sqs-secret")
    assert plan(actor, CONFIG).queue == f"asya-{namespace}-{fits}"
    validate(render(actor, CONFIG, runtime_source=RUNTIME))
    too_long = make_actor("ok", namespace, actor=fits + "b", transport="sqs-secret")
    with pytest.raises(RenderError, match="sqs allows 80"):
        plan(too_long, CONFIG)
    with pytest.raises(RenderError, match="sqs allows 80"):
        render(too_long, CONFIG, runtime_source=RUNTIME)
    # The same name is fine where the broker allows it.
    long_rabbit = make_actor("ok", namespace, actor=fits + "b", transport="rabbitmq-url")
    assert len(plan(long_rabbit, CONFIG).queue) == 77


def test_crew_queue_names_are_checked_too() -> None:
    config = operator_config.parse(
        {"transports": {"q": TRANSPORTS["sqs-secret"]}, "crewNamespace": "c" * 70}
    )
    with pytest.raises(RenderError, match="x-sink"):
        render(make_actor(), config, runtime_source=RUNTIME)


def test_pod_identity_of_the_other_cloud_is_refused() -> None:
    config = operator_config.parse(
        {
            "transports": {
                "q": {
                    "type": "sqs",
                    "region": "eu-west-1",
                    "accountId": "123456789012",
                    "credentials": {"podIdentity": {"provider": "gcp"}},
                }
            }
        }
    )
    with pytest.raises(RenderError, match=r"podIdentity\.provider 'gcp'.*'aws'"):
        render(make_actor(), config, runtime_source=RUNTIME)


def test_metadata_name_must_fit_a_label_value() -> None:
    with pytest.raises(RenderError, match=r"metadata\.name 'a{64}' must be at most 63"):
        render(make_actor("a" * 64, actor="short"), CONFIG, runtime_source=RUNTIME)
    dotted = render(make_actor("infer.v2", actor="infer-v2"), CONFIG, runtime_source=RUNTIME)
    validate(dotted)
    assert by_kind(dotted)["Deployment"]["metadata"]["name"] == "infer.v2"


# ------------------------------------------------------------------------------- gateway

GATEWAY_URL = "http://asya-gateway-internal.asya-gateway.svc:8081"
WITH_GATEWAY = operator_config.parse(
    {
        "transports": TRANSPORTS,
        "defaultTransport": "rabbitmq-url",
        "gateway": {"url": GATEWAY_URL},
    }
)


def gateway_entries(container: dict[str, Any]) -> list[dict[str, Any]]:
    return [item for item in container.get("env", []) if item["name"] == env.GATEWAY_URL]


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
def test_every_sidecar_reports_to_the_configured_gateway(transport: str) -> None:
    scaling = {"enabled": transport != "pubsub-emulator"}
    actor = make_actor(transport=transport, scaling=scaling)
    objects = render(actor, WITH_GATEWAY, runtime_source=RUNTIME)
    validate(objects)
    containers = all_containers(objects)
    assert gateway_entries(containers[SIDECAR_CONTAINER]) == [
        {"name": env.GATEWAY_URL, "value": GATEWAY_URL}
    ]
    # An ordinary handler does not report: only its sidecar does.
    assert gateway_entries(containers[RUNTIME_CONTAINER]) == []
    # ... which the sidecar's own loader takes as the URL it reports to.
    loaded = sidecar_config.load(literal_env(containers[SIDECAR_CONTAINER]))
    assert loaded.gateway_url == GATEWAY_URL


def test_without_a_gateway_nothing_changes() -> None:
    """No `gateway` in the configuration: the objects are exactly those of a configuration
    that never heard of one, and no container has the variable."""
    actor = make_actor(transport="sqs-secret")
    plain = operator_config.parse({"transports": TRANSPORTS})
    assert plain.gateway is None
    objects = render(actor, plain, runtime_source=RUNTIME)
    for container in all_containers(objects).values():
        assert gateway_entries(container) == []
    sidecar = all_containers(objects)[SIDECAR_CONTAINER]
    assert sidecar_config.load(literal_env(sidecar)).gateway_url is None
    with_gateway = render(actor, WITH_GATEWAY, runtime_source=RUNTIME)
    # The one difference a gateway makes to an ordinary actor is that one variable.
    for container in all_containers(with_gateway).values():
        container["env"] = [i for i in container["env"] if i["name"] != env.GATEWAY_URL]
    assert with_gateway == objects


@pytest.mark.parametrize("crew", names.CREW)
def test_crew_handlers_report_too(crew: str) -> None:
    handler = "asya_crew.sink.Sink.handle" if crew == names.SINK else "asya_crew.sump.Sump.handle"
    actor = make_actor(crew, "asya-crew", handler=handler, image="ghcr.io/asya-dev/asya:0.1.0")
    containers = all_containers(render(actor, WITH_GATEWAY, runtime_source=RUNTIME))
    expected = [{"name": env.GATEWAY_URL, "value": GATEWAY_URL}]
    assert gateway_entries(containers[SIDECAR_CONTAINER]) == expected
    assert gateway_entries(containers[RUNTIME_CONTAINER]) == expected
    # The crew's own spec.env wins for its handler, once; the sidecar keeps the operator's.
    own = [{"name": env.GATEWAY_URL, "value": "http://other.asya.svc:8081"}]
    actor = make_actor(crew, "asya-crew", handler=handler, image="i:1", env=own)
    objects = render(actor, WITH_GATEWAY, runtime_source=RUNTIME)
    validate(objects)
    containers = all_containers(objects)
    assert gateway_entries(containers[RUNTIME_CONTAINER]) == own
    assert gateway_entries(containers[SIDECAR_CONTAINER]) == expected
    # Without a gateway in the configuration, the crew's handlers get nothing either.
    containers = all_containers(render(make_actor(crew, "c", handler=handler), CONFIG))
    assert gateway_entries(containers[RUNTIME_CONTAINER]) == []


@pytest.mark.parametrize(
    "url",
    [
        "http://asya-gateway-internal.asya-gateway.svc:8081",
        "https://gateway.example.com",
        "http://10.0.0.7:8081/",
        "http://gateway/asya",
    ],
)
def test_gateway_urls_the_configuration_takes(url: str) -> None:
    config = operator_config.parse({"gateway": {"url": url}})
    assert config.gateway is not None
    assert config.gateway.url == url


@pytest.mark.parametrize(
    "config",
    [
        {"gateway": {"url": "http://asya:hunter2@gateway:8081"}},
        {"gateway": {"url": "gateway:8081"}},
        {"gateway": {"url": "ftp://gateway:8081"}},
        {"gateway": {"url": "http://gateway:8081/?token=x"}},
        {"gateway": {"url": "http://gateway:port"}},
        {"gateway": {"url": ""}},
        {"gateway": {}},
        {"gateway": {"url": "http://gateway:8081", "timeout": 5}},
    ],
)
def test_gateway_urls_the_configuration_refuses(config: dict[str, Any]) -> None:
    with pytest.raises(operator_config.OperatorConfigError, match="gateway") as caught:
        operator_config.parse(config)
    assert "hunter2" not in str(caught.value)
