"""AsyncActor -> the Kubernetes objects that run it.

For one actor: a ConfigMap with the runtime file, a Deployment whose pod runs the user's
image with that file next to the injected sidecar, and, when KEDA scales the actor, a
ScaledObject on the actor's queue (with a TriggerAuthentication when KEDA needs credentials).
docs/rendering.md explains every choice made here; keep the two in step.

`plan` works out once which transport and queue an actor uses; the operator creates that
queue and then renders from the same Plan, `asya render` makes the Plan itself.

Everything here is a pure function of the AsyncActor and the operator configuration, so the
operator, `asya render` and the tests all see the same objects. The one exception is
`bundled_runtime_source`, which reads the runtime file shipped with this package when the
caller does not pass the text in.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from asya_operator import transport_env
from asya_operator.config import (
    Credentials,
    OperatorConfig,
    PubSubTransport,
    RabbitMQTransport,
    SecretRef,
    SQSTransport,
    TransportConfig,
)
from asya_operator.models import (
    BUILT_IN_HANDLERS,
    RUNTIME_CONTAINER,
    SIDECAR_CONTAINER,
    AsyncActor,
)
from asya_shared import env, names
from asya_shared.durations import parse_duration

Obj = dict[str, Any]

# Paths and ports inside the pod. The sidecar and the runtime agree on the socket directory
# through ASYA_SOCKET_DIR; the rest is the operator's own layout.
SOCKET_DIR = "/var/run/asya"
RUNTIME_DIR = "/opt/asya"
RUNTIME_FILE = "runtime.py"
RUNTIME_READY_FILE = f"{SOCKET_DIR}/runtime-ready"
RUNTIME_SOCKET = f"{SOCKET_DIR}/asya-runtime.sock"
METRICS_PORT = 8080
METRICS_PORT_NAME = "metrics"

# The user every container runs as unless the template chooses one: distroless "nonroot".
# Most Python base images default to root, which `runAsNonRoot` would refuse to start.
NONROOT_ID = 65532

OBJECT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
MAX_LABEL_VALUE = 63

# Volume names the operator adds to every pod; a template may not reuse them.
SOCKET_VOLUME = "asya-socket"
RUNTIME_VOLUME = "asya-runtime"
RUNTIME_TMP_VOLUME = "asya-runtime-tmp"
SIDECAR_TMP_VOLUME = "asya-sidecar-tmp"
GCP_CREDENTIALS_VOLUME = "asya-gcp-credentials"
RESERVED_VOLUMES = (
    SOCKET_VOLUME,
    RUNTIME_VOLUME,
    RUNTIME_TMP_VOLUME,
    SIDECAR_TMP_VOLUME,
    GCP_CREDENTIALS_VOLUME,
)

# spec.env may not set what the operator derives from other spec fields: the two would
# disagree silently. The value says what to do instead.
RESERVED_RUNTIME_ENV = {
    env.HANDLER: "set spec.handler instead",
    env.SOCKET_DIR: f"leave it out: the sidecar and the runtime share {SOCKET_DIR}",
    env.RUNTIME_CONCURRENCY: "set spec.concurrency instead",
}
# spec.env is the only way to reach the sidecar, so the few sidecar settings a user may
# want to tune (env.SIDECAR_PASSTHROUGH) are copied to it as well.

# KEDA's HPA behaviour. Up: as fast as HPA allows (double or +4 pods every 15 s), because a
# queue that grows is work waiting. Down: queue depth drops to zero the moment a burst is
# consumed, and the next burst often follows; a pod removed too early costs a drain and a
# cold start (model loading). So wait two minutes of low readings, then halve per minute.
HPA_BEHAVIOR: Obj = {
    "scaleUp": {
        "stabilizationWindowSeconds": 0,
        "selectPolicy": "Max",
        "policies": [
            {"type": "Percent", "value": 100, "periodSeconds": 15},
            {"type": "Pods", "value": 4, "periodSeconds": 15},
        ],
    },
    "scaleDown": {
        "stabilizationWindowSeconds": 120,
        "selectPolicy": "Max",
        "policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}],
    },
}


class RenderError(ValueError):
    """A spec the operator cannot turn into objects; the message says what to fix."""


# ------------------------------------------------------------------------ names and labels


def config_map_name(actor: AsyncActor) -> str:
    return f"{actor.name}-asya-runtime"


def trigger_authentication_name(actor: AsyncActor) -> str:
    return f"{actor.name}-asya"


def labels(actor: AsyncActor) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "asya-actor",
        "app.kubernetes.io/instance": actor.name,
        "app.kubernetes.io/component": "actor",
        "app.kubernetes.io/part-of": "asya",
        "app.kubernetes.io/managed-by": "asya-operator",
        "asya.sh/actor": actor.actor,
    }


def selector(actor: AsyncActor) -> dict[str, str]:
    return {"asya.sh/actor": actor.actor, "app.kubernetes.io/instance": actor.name}


def _metadata(actor: AsyncActor, name: str) -> Obj:
    return {"name": name, "namespace": actor.namespace, "labels": labels(actor)}


# ------------------------------------------------------------------------------ transports


class UnknownTransport(RenderError):
    """The actor names no transport the operator has configured (or names none, and the
    operator has no default)."""


def resolve_transport(actor: AsyncActor, config: OperatorConfig) -> tuple[str, TransportConfig]:
    """The name and settings of the transport the actor uses."""
    configured = ", ".join(sorted(config.transports))
    if not config.transports:
        asked = f"spec.transport {actor.spec.transport!r}: " if actor.spec.transport else ""
        raise UnknownTransport(
            f"{asked}the operator has no transports configured; add one under `transports` "
            "in the operator configuration (Helm values)"
        )
    name = config.transport_name(actor.spec.transport)
    if name is None:
        raise UnknownTransport(
            "spec.transport is not set and the operator has no defaultTransport: set "
            f"spec.transport to one of: {configured}"
        )
    transport = config.transports.get(name)
    if transport is None:
        raise UnknownTransport(
            f"spec.transport {name!r} is not configured in the operator (configured: {configured})"
        )
    return name, transport


def _queue(namespace: str, actor_name: str, transport_type: str) -> str:
    """`asya-<namespace>-<actor>`, refused (never truncated) when the broker cannot take it."""
    try:
        return names.check_queue_name(names.queue_name(namespace, actor_name), transport_type)
    except names.InvalidName as exc:
        raise RenderError(str(exc)) from None


@dataclass(frozen=True)
class Plan:
    """Where an actor's messages go, worked out once: the operator creates this queue, writes
    it to the status and renders the sidecar that consumes it, all from one Plan.

    What the transport adds to the pod and to KEDA (`_Wiring`) is not part of it: a problem
    there is found only after the queue exists, and the status says so (QueueReady stays
    True)."""

    transport_name: str
    transport: TransportConfig
    queue: str


def plan(actor: AsyncActor, config: OperatorConfig) -> Plan:
    """The actor's transport and queue; raises UnknownTransport, or RenderError for a queue
    name the broker would refuse."""
    transport_name, transport = resolve_transport(actor, config)
    return Plan(transport_name, transport, _queue(actor.namespace, actor.actor, transport.type))


@dataclass(frozen=True)
class _Wiring:
    """What one transport adds to the pod and to KEDA."""

    env: list[Obj]
    trigger_type: str
    trigger_metadata: dict[str, str]
    auth: Obj | None  # TriggerAuthentication spec, when KEDA needs credentials
    volumes: list[Obj] = field(default_factory=list)
    mounts: list[Obj] = field(default_factory=list)


def _value(name: str, value: str | int) -> Obj:
    return {"name": name, "value": str(value)}


def _env_var(variable: transport_env.Variable) -> Obj:
    """An EnvVar of the sidecar; a Secret's key stays a reference, never a literal."""
    value = variable.value
    if isinstance(value, transport_env.FromSecret):
        ref = {"name": value.secret, "key": value.key}
        return {"name": variable.name, "valueFrom": {"secretKeyRef": ref}}
    return _value(variable.name, value)


def _transport_env(transport: TransportConfig) -> list[Obj]:
    return [_env_var(v) for v in transport_env.variables(transport)]


def _secret_target(parameter: str, secret: SecretRef, key: str) -> Obj:
    return {"parameter": parameter, "name": secret.name, "key": key}


def _secret(credentials: Credentials | None) -> SecretRef | None:
    return credentials.secret_ref if credentials is not None else None


def _pod_identity_provider(
    credentials: Credentials | None, expected: str, transport_name: str
) -> bool:
    """Whether the transport relies on pod identity; refuses the other cloud's provider."""
    identity = credentials.pod_identity if credentials is not None else None
    if identity is None:
        return False
    if identity.provider != expected:
        raise RenderError(
            f"transport {transport_name!r}: credentials.podIdentity.provider "
            f"{identity.provider!r} cannot reach this broker; use {expected!r}"
        )
    return True


def _rabbitmq_wiring(transport: RabbitMQTransport, queue: str, queue_length: int) -> _Wiring:
    secret = _secret(transport.credentials)
    # KEDA's legacy `queueLength` key may not be combined with mode/value; use the pair.
    metadata = {"queueName": queue, "mode": "QueueLength", "value": str(queue_length)}
    auth: Obj | None = None
    if secret is not None:
        # The URL in the Secret carries user and password, so it goes to KEDA as the `host`
        # auth parameter and never into the ScaledObject.
        auth = {"secretTargetRef": [_secret_target("host", secret, secret.key("url", "url"))]}
    else:
        assert transport.url is not None  # the config refuses rabbitmq without url or secret
        metadata["host"] = transport.url
    return _Wiring(_transport_env(transport), "rabbitmq", metadata, auth)


def _sqs_wiring(
    transport: SQSTransport, transport_name: str, queue: str, queue_length: int
) -> _Wiring:
    base = (transport.endpoint or f"https://sqs.{transport.region}.amazonaws.com").rstrip("/")
    metadata = {
        "queueURL": f"{base}/{transport.account_id}/{queue}",
        "queueLength": str(queue_length),
        "awsRegion": transport.region,
    }
    if transport.endpoint:
        metadata["awsEndpoint"] = transport.endpoint
    secret = _secret(transport.credentials)
    auth: Obj
    if _pod_identity_provider(transport.credentials, "aws", transport_name):
        identity = transport.credentials.pod_identity
        assert identity is not None
        pod_identity: Obj = {"provider": "aws"}
        if identity.role_arn:
            pod_identity["roleArn"] = identity.role_arn
        auth = {"podIdentity": pod_identity}
    else:
        assert secret is not None  # Credentials holds exactly one of the two
        auth = {
            "secretTargetRef": [
                _secret_target("awsAccessKeyID", secret, secret.key("accessKeyId", "accessKeyId")),
                _secret_target(
                    "awsSecretAccessKey", secret, secret.key("secretAccessKey", "secretAccessKey")
                ),
            ]
        }
    return _Wiring(_transport_env(transport), "aws-sqs-queue", metadata, auth)


def _pubsub_wiring(
    transport: PubSubTransport, transport_name: str, queue: str, queue_length: int, scaled: bool
) -> _Wiring:
    if scaled and transport.emulator_host:
        raise RenderError(
            f"transport {transport_name!r} uses the Pub/Sub emulator (emulatorHost), which has "
            "no Cloud Monitoring metrics for KEDA's gcp-pubsub scaler to read: set "
            "spec.scaling.enabled: false (and spec.replicas)"
        )
    # The full subscription path pins the project: with a short name KEDA would take the
    # project of its own credentials, which need not be the transport's.
    metadata = {
        "subscriptionName": f"projects/{transport.project}/subscriptions/{queue}",
        "mode": "NumUndeliveredMessages",
        "value": str(queue_length),
        # Cloud Monitoring has no data points for a subscription that saw no traffic
        # recently; without this KEDA reports an error instead of an empty queue.
        "valueIfNull": "0",
    }
    volumes: list[Obj] = []
    mounts: list[Obj] = []
    auth: Obj | None = None
    secret = _secret(transport.credentials)
    if _pod_identity_provider(transport.credentials, "gcp", transport_name):
        auth = {"podIdentity": {"provider": "gcp"}}
    elif secret is not None:
        key = secret.key("credentials", "credentials")
        # The key becomes the file GOOGLE_APPLICATION_CREDENTIALS names (transport_env).
        volumes.append(
            {
                "name": GCP_CREDENTIALS_VOLUME,
                "secret": {
                    "secretName": secret.name,
                    "items": [{"key": key, "path": transport_env.GCP_CREDENTIALS_FILE}],
                },
            }
        )
        mounts.append(
            {
                "name": GCP_CREDENTIALS_VOLUME,
                "mountPath": transport_env.GCP_CREDENTIALS_DIR,
                "readOnly": True,
            }
        )
        auth = {"secretTargetRef": [_secret_target("GoogleApplicationCredentials", secret, key)]}
    return _Wiring(_transport_env(transport), "gcp-pubsub", metadata, auth, volumes, mounts)


def _wiring(actor: AsyncActor, plan: Plan) -> _Wiring:
    queue_length = actor.spec.scaling.queue_length
    transport, name, queue = plan.transport, plan.transport_name, plan.queue
    if isinstance(transport, RabbitMQTransport):
        return _rabbitmq_wiring(transport, queue, queue_length)
    if isinstance(transport, SQSTransport):
        return _sqs_wiring(transport, name, queue, queue_length)
    return _pubsub_wiring(transport, name, queue, queue_length, actor.spec.scaling.enabled)


# ---------------------------------------------------------------------------- spec checks


def _check_spec(actor: AsyncActor) -> None:
    """Checked before anything is built: what only the operator knows, and what the CRD's
    CEL rules check at admission but the pydantic model does not (`asya render` and tests
    see no API server)."""
    if not actor.name:
        raise RenderError("metadata.name is required")
    # The name is also the value of the app.kubernetes.io/instance label.
    if len(actor.name) > MAX_LABEL_VALUE or not OBJECT_NAME.match(actor.name):
        raise RenderError(
            f"metadata.name {actor.name!r} must be at most {MAX_LABEL_VALUE} lower-case "
            "letters, digits, '-' and '.': it names the Deployment and is the value of the "
            "app.kubernetes.io/instance label of its pods"
        )
    spec = actor.spec
    scaling = spec.scaling
    if scaling.enabled and spec.replicas is not None:
        raise RenderError(
            "spec.replicas only applies with spec.scaling.enabled: false; while KEDA scales "
            "the actor it sets the replica count (use spec.scaling.minReplicas)"
        )
    if scaling.min_replicas > scaling.max_replicas:
        raise RenderError(
            f"spec.scaling.minReplicas ({scaling.min_replicas}) is more than "
            f"spec.scaling.maxReplicas ({scaling.max_replicas})"
        )
    # The sidecar refuses these at start (exit 2); saying so here names the field instead of
    # leaving a crash-looping pod.
    policies = set(spec.resiliency.policies) | {"default"}
    for i, rule in enumerate(spec.resiliency.rules):
        if rule.policy not in policies:
            raise RenderError(
                f"spec.resiliency.rules[{i}].policy {rule.policy!r} is not defined "
                f"(policies: {', '.join(sorted(policies))})"
            )
    if parse_duration(spec.resiliency.actor_timeout) <= 0:
        raise RenderError("spec.resiliency.actorTimeout must be more than zero")
    for policy_name, policy in spec.resiliency.policies.items():
        where = f"spec.resiliency.policies.{policy_name}"
        if parse_duration(policy.max_interval) < parse_duration(policy.initial_delay):
            raise RenderError(
                f"{where}.maxInterval ({policy.max_interval}) must not be shorter than "
                f"initialDelay ({policy.initial_delay})"
            )


def _env_name(item: Any, where: str) -> str:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
        raise RenderError(f"{where}: every env entry needs a name, got {item!r}")
    name: str = item["name"]
    return name


def _merge_env(base: list[Any], overrides: list[Any], where: str) -> list[Obj]:
    """Entries by name, later lists winning; a name keeps the place it first had."""
    merged: dict[str, Obj] = {}
    for item in [*base, *overrides]:
        merged[_env_name(item, where)] = item
    return list(merged.values())


def _merge_resources(base: Obj, override: Obj) -> Obj:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


# ------------------------------------------------------------------------ pod security


def _refuse(where: str, what: str) -> RenderError:
    return RenderError(
        f"{where}: {what} is not allowed; actor pods follow the Pod Security 'restricted' profile"
    )


def _seccomp(security: Obj, where: str) -> Obj:
    profile = security.get("seccompProfile") or {"type": "RuntimeDefault"}
    if not isinstance(profile, dict) or profile.get("type") not in ("RuntimeDefault", "Localhost"):
        raise _refuse(where, f"securityContext.seccompProfile {profile!r}")
    return profile


def _harden_container(container: Obj, where: str) -> Obj:
    """The restricted profile's container fields, enforced; refuses what contradicts them."""
    security = dict(container.get("securityContext") or {})
    if security.get("privileged"):
        raise _refuse(where, "securityContext.privileged: true")
    if security.get("allowPrivilegeEscalation") is True:
        raise _refuse(where, "securityContext.allowPrivilegeEscalation: true")
    if security.get("runAsNonRoot") is False:
        raise _refuse(where, "securityContext.runAsNonRoot: false")
    if security.get("runAsUser") == 0:
        raise _refuse(where, "securityContext.runAsUser: 0")
    capabilities = dict(security.get("capabilities") or {})
    extra = [c for c in capabilities.get("add") or [] if c != "NET_BIND_SERVICE"]
    if extra:
        raise _refuse(where, f"adding capabilities {extra}")
    capabilities["drop"] = ["ALL"]
    security.update(
        allowPrivilegeEscalation=False,
        runAsNonRoot=True,
        capabilities=capabilities,
        seccompProfile=_seccomp(security, where),
    )
    # Not part of "restricted", so a template container may turn it off explicitly (a
    # library that insists on writing next to its code); /tmp is writable either way.
    security.setdefault("readOnlyRootFilesystem", True)
    return {**container, "securityContext": security}


def _pod_security(raw: Any, where: str) -> Obj:
    security = dict(raw or {})
    if security.get("runAsNonRoot") is False:
        raise _refuse(where, "securityContext.runAsNonRoot: false")
    if security.get("runAsUser") == 0:
        raise _refuse(where, "securityContext.runAsUser: 0")
    if "runAsUser" not in security and "runAsGroup" not in security:
        security.update(runAsUser=NONROOT_ID, runAsGroup=NONROOT_ID)
    security["runAsNonRoot"] = True
    security["seccompProfile"] = _seccomp(security, where)
    return security


# ------------------------------------------------------------------------------- containers


def _python_check(expression: str) -> list[str]:
    # The user's image is only known to have python3 (the runtime needs it); a shell or
    # `test` may be missing (distroless). -S skips site-packages to keep the probe cheap.
    return ["python3", "-S", "-c", f"import os, sys; sys.exit(0 if {expression} else 1)"]


RUNTIME_READY_CHECK = _python_check(
    f"os.path.exists({RUNTIME_READY_FILE!r}) and os.path.exists({RUNTIME_SOCKET!r})"
)


def _runtime_probe(period: int, failures: int) -> Obj:
    return {
        "exec": {"command": list(RUNTIME_READY_CHECK)},
        "timeoutSeconds": 5,
        "periodSeconds": period,
        "failureThreshold": failures,
    }


def _runtime_probes() -> dict[str, Obj]:
    return {
        # Loading a handler may take minutes (model weights): allow ten, like the sidecar's
        # own ASYA_RUNTIME_READY_TIMEOUT, before the kubelet restarts the container.
        "startupProbe": _runtime_probe(2, 300),
        "readinessProbe": _runtime_probe(10, 3),
    }


def _with_mounts(existing: list[Any], ours: list[Obj], where: str) -> list[Obj]:
    taken = {m.get("mountPath") for m in existing if isinstance(m, dict)}
    mounts: list[Obj] = list(existing)
    for mount in ours:
        path = mount["mountPath"]
        if path in taken:
            if path == "/tmp":  # the user brought their own scratch space; keep it
                continue
            raise RenderError(f"{where}: mountPath {path} is reserved for Asya")
        mounts.append(mount)
    return mounts


def _runtime_container(
    actor: AsyncActor, base: Obj | None, config: OperatorConfig, crew: _CrewWiring
) -> Obj:
    spec = actor.spec
    where = f"spec.template container {RUNTIME_CONTAINER!r}"
    container: Obj = dict(base or {})
    for key in ("command", "args"):
        if key in container:
            raise RenderError(
                f"{where}: {key} is not allowed; the operator runs the Asya runtime "
                f"(python3 {RUNTIME_DIR}/{RUNTIME_FILE}), which calls spec.handler"
            )
    image = spec.image or container.get("image") or _built_in_image(spec.handler, config)
    if not image:
        raise RenderError(
            "spec.image is required: the image with the handler's code and python3 (3.8+); "
            f"only built-in callers ({BUILT_IN_HANDLERS}*) run without one"
        )
    user_env = _merge_env(container.get("env") or [], spec.env, "spec.env")
    for item in user_env:
        instead = RESERVED_RUNTIME_ENV.get(item["name"])
        if instead is not None:
            raise RenderError(f"spec.env: {item['name']} is set by the operator; {instead}")
    given = {item["name"] for item in user_env}
    ours = [
        _value(env.HANDLER, spec.handler),
        _value(env.SOCKET_DIR, SOCKET_DIR),
        _value(env.RUNTIME_CONCURRENCY, spec.concurrency),
        # The crew's own spec.env wins, once: two entries of one name would hide each other.
        *(item for item in _crew_runtime_env(actor, config, crew) if item["name"] not in given),
    ]
    container.update(
        name=RUNTIME_CONTAINER,
        image=image,
        command=["python3", f"{RUNTIME_DIR}/{RUNTIME_FILE}"],
        # Ours first: later entries may refer to them as $(ASYA_SOCKET_DIR).
        env=ours + user_env,
        # A restartable init container: the native-sidecar lifecycle (see docs/rendering.md).
        restartPolicy="Always",
    )
    env_from = [*(container.get("envFrom") or []), *spec.env_from]
    if env_from:
        container["envFrom"] = env_from
    resources = _merge_resources(container.get("resources") or {}, spec.resources)
    if resources:
        container["resources"] = resources
    else:
        container.pop("resources", None)
    container["volumeMounts"] = _with_mounts(
        container.get("volumeMounts") or [],
        [
            {"name": SOCKET_VOLUME, "mountPath": SOCKET_DIR},
            {"name": RUNTIME_VOLUME, "mountPath": RUNTIME_DIR, "readOnly": True},
            {"name": RUNTIME_TMP_VOLUME, "mountPath": "/tmp"},
            *(crew.wiring.mounts if publishes(actor.actor) else []),
        ],
        where,
    )
    for probe, value in _runtime_probes().items():
        container.setdefault(probe, value)
    return _harden_container(container, where)


def _gateway_env(config: OperatorConfig) -> list[Obj]:
    """ASYA_GATEWAY_URL when the configuration names a gateway; nothing otherwise, so an
    installation without one renders exactly what it did before."""
    return [] if config.gateway is None else [_value(env.GATEWAY_URL, config.gateway.url)]


@dataclass(frozen=True)
class _CrewWiring:
    """What a crew handler may need of its pod's transport: its type and what it adds."""

    transport_type: str
    wiring: _Wiring


def publishes(actor_name: str) -> bool:
    """Whether the actor's handler publishes envelopes itself, as a sidecar does: x-join
    sends each joined envelope on once it holds every part."""
    return actor_name == names.JOIN


def _crew_runtime_env(actor: AsyncActor, config: OperatorConfig, crew: _CrewWiring) -> list[Obj]:
    """What the crew's handlers need besides their own settings (spec.env).

    Every crew handler reports: x-sink the terminal status, x-sump the failures that never
    reach x-sink, x-join the progress of a join, x-pause hands the task to the gateway. So
    they get the URL as their sidecars do; without it every task would stay running.
    x-join also gets the transport exactly as its sidecar has it (the same type, namespace
    and variables, Secrets as references) to publish on the same broker."""
    if actor.actor not in names.RESERVED:
        return []
    found = _gateway_env(config)
    if publishes(actor.actor):
        found += [
            _value(env.TRANSPORT, crew.transport_type),
            _value(env.NAMESPACE, actor.namespace),
            *crew.wiring.env,
        ]
    return found


def _check_crew(actor: AsyncActor, config: OperatorConfig) -> None:
    """x-pause only hands tasks to a gateway; without one it would fail at its first
    envelope, so it is refused here with what to set. An envFrom may carry the URL: then
    the runtime says so itself if it does not."""
    if actor.actor != names.PAUSE or config.gateway is not None or actor.spec.env_from:
        return
    if any(isinstance(i, dict) and i.get("name") == env.GATEWAY_URL for i in actor.spec.env):
        return
    raise RenderError(
        f"{names.PAUSE} hands paused tasks to the gateway, and no gateway URL is known: set "
        f"gateway.url in the operator's configuration, or {env.GATEWAY_URL} in spec.env "
        "(the asya-crew chart's gateway.url); without a gateway, leave x-pause out (the "
        "asya-crew chart's pause.enabled: false)"
    )


def _built_in_image(handler: str, config: OperatorConfig) -> str | None:
    """The Asya image (the sidecar's) for a built-in caller, which ships in it; else None."""
    return config.sidecar.image if handler.startswith(BUILT_IN_HANDLERS) else None


def shutdown_timeout(grace_period: int) -> int:
    """ASYA_SHUTDOWN_TIMEOUT for a pod grace period.

    The margin pays for what follows the drain inside the same grace period: requeueing what
    did not finish, closing the broker connection, and the runtime's own stop after the
    sidecar exits. A fifth of the period, at least 5 s and at most 30 s."""
    return grace_period - min(30, max(5, grace_period // 5))


def _sidecar_container(
    actor: AsyncActor,
    config: OperatorConfig,
    *,
    transport_type: str,
    queues: tuple[str, str, str, str, str],
    wiring: _Wiring,
) -> Obj:
    spec = actor.spec
    queue, sink, sump, join, pause = queues
    resiliency = spec.resiliency.model_dump(mode="json", by_alias=True, exclude_none=True)
    sidecar_env = [
        _value(env.ACTOR, actor.actor),
        _value(env.NAMESPACE, actor.namespace),
        _value(env.TRANSPORT, transport_type),
        _value(env.QUEUE, queue),
        _value(env.SINK_QUEUE, sink),
        _value(env.SUMP_QUEUE, sump),
        _value(env.JOIN_QUEUE, join),
        _value(env.PAUSE_QUEUE, pause),
        _value(env.SOCKET_DIR, SOCKET_DIR),
        _value(env.CONCURRENCY, spec.concurrency),
        _value(env.ACTOR_TIMEOUT, spec.resiliency.actor_timeout),
        _value(env.RESILIENCY, json.dumps(resiliency, separators=(",", ":"), sort_keys=True)),
        _value(env.SHUTDOWN_TIMEOUT, shutdown_timeout(spec.termination_grace_period_seconds)),
        # Explicit because the probe and the scrape annotations depend on it.
        _value(env.METRICS_PORT, METRICS_PORT),
        *_gateway_env(config),
        *wiring.env,
        *(item for item in spec.env if item.get("name") in env.SIDECAR_PASSTHROUGH),
    ]
    container: Obj = {
        "name": SIDECAR_CONTAINER,
        "image": config.sidecar.image,
        "imagePullPolicy": config.sidecar.image_pull_policy,
        "command": ["asya", "sidecar"],
        "env": sidecar_env,
        "ports": [{"name": METRICS_PORT_NAME, "containerPort": METRICS_PORT, "protocol": "TCP"}],
        # No liveness probe: /healthz also reports the broker and the runtime, and
        # restarting the sidecar fixes neither.
        "readinessProbe": {
            "httpGet": {"path": "/healthz", "port": METRICS_PORT_NAME},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "volumeMounts": [
            {"name": SOCKET_VOLUME, "mountPath": SOCKET_DIR},
            {"name": SIDECAR_TMP_VOLUME, "mountPath": "/tmp"},
            *wiring.mounts,
        ],
    }
    if config.sidecar.resources:
        container["resources"] = config.sidecar.resources
    return _harden_container(container, SIDECAR_CONTAINER)


# ----------------------------------------------------------------------------------- objects


def _split_template(actor: AsyncActor) -> tuple[Obj, Obj]:
    raw = copy.deepcopy(actor.spec.template or {})
    unknown = sorted(set(raw) - {"metadata", "spec"})
    if unknown:
        raise RenderError(
            f"spec.template is a pod template (metadata, spec); unknown field(s) {unknown}: "
            "pod fields go under spec.template.spec"
        )
    metadata, pod = raw.get("metadata") or {}, raw.get("spec") or {}
    if not isinstance(metadata, dict) or not isinstance(pod, dict):
        raise RenderError("spec.template.metadata and spec.template.spec must be objects")
    return metadata, pod


def _take_runtime(containers: list[Obj], inits: list[Obj]) -> Obj | None:
    """Removes the template's asya-runtime container (from either list) and returns it."""
    found = [
        (group, c) for group in (containers, inits) for c in group if c["name"] == RUNTIME_CONTAINER
    ]
    if len(found) > 1:
        raise RenderError(f"spec.template: container {RUNTIME_CONTAINER!r} is defined twice")
    if not found:
        return None
    group, container = found[0]
    group.remove(container)
    return container


def _template_containers(pod: Obj, key: str) -> list[Obj]:
    containers = pod.pop(key, None) or []
    if not isinstance(containers, list):
        raise RenderError(f"spec.template.spec.{key} must be a list")
    for i, container in enumerate(containers):
        if not isinstance(container, dict) or not isinstance(container.get("name"), str):
            raise RenderError(f"spec.template.spec.{key}[{i}] needs a name")
        if container["name"] == SIDECAR_CONTAINER:
            raise RenderError(
                f"spec.template.spec.{key}[{i}]: the name {SIDECAR_CONTAINER!r} is reserved for "
                "the sidecar the operator injects; rename the container"
            )
    return list(containers)


@dataclass(frozen=True)
class _Containers:
    runtime: Obj
    sidecar: Obj
    others: list[Obj]  # the template's other containers
    inits: list[Obj]  # the template's init containers


def _pod_spec(actor: AsyncActor, pod: Obj, parts: _Containers, wiring: _Wiring) -> Obj:
    spec = actor.spec
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            raise _refuse("spec.template.spec", f"{key}: true")
    volumes = pod.pop("volumes", None) or []
    for volume in volumes:
        if isinstance(volume, dict) and volume.get("name") in RESERVED_VOLUMES:
            raise RenderError(
                f"spec.template.spec.volumes: the name {volume['name']!r} is reserved for Asya"
            )
    result: Obj = dict(pod)
    if spec.service_account_name:
        result["serviceAccountName"] = spec.service_account_name
    result["securityContext"] = _pod_security(pod.get("securityContext"), "spec.template.spec")
    result["terminationGracePeriodSeconds"] = spec.termination_grace_period_seconds
    node_selector = {**(pod.get("nodeSelector") or {}), **spec.node_selector}
    if node_selector:
        result["nodeSelector"] = node_selector
    tolerations = [*(pod.get("tolerations") or []), *spec.tolerations]
    if tolerations:
        result["tolerations"] = tolerations
    # User init containers run first (fetching weights, say), then the runtime starts.
    result["initContainers"] = [
        *(_harden_container(c, f"spec.template container {c['name']!r}") for c in parts.inits),
        parts.runtime,
    ]
    result["containers"] = [
        parts.sidecar,
        *(_harden_container(c, f"spec.template container {c['name']!r}") for c in parts.others),
    ]
    result["volumes"] = [
        *volumes,
        {"name": SOCKET_VOLUME, "emptyDir": {}},
        {"name": RUNTIME_VOLUME, "configMap": {"name": config_map_name(actor)}},
        {"name": RUNTIME_TMP_VOLUME, "emptyDir": {}},
        {"name": SIDECAR_TMP_VOLUME, "emptyDir": {}},
        *wiring.volumes,
    ]
    return result


def _deployment(actor: AsyncActor, template_metadata: Obj, pod: Obj, runtime_source: str) -> Obj:
    digest = hashlib.sha256(runtime_source.encode()).hexdigest()[:16]
    annotations = {
        **(template_metadata.get("annotations") or {}),
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(METRICS_PORT),
        "prometheus.io/path": "/metrics",
        # `kubectl logs` shows the handler's log unless told otherwise.
        "kubectl.kubernetes.io/default-container": RUNTIME_CONTAINER,
        # A new runtime file changes the template, so the pods roll and pick it up.
        "asya.sh/runtime-sha256": digest,
    }
    spec: Obj = {}
    if not actor.spec.scaling.enabled:
        spec["replicas"] = 1 if actor.spec.replicas is None else actor.spec.replicas
    spec["selector"] = {"matchLabels": selector(actor)}
    spec["template"] = {
        "metadata": {
            "labels": {**(template_metadata.get("labels") or {}), **labels(actor)},
            "annotations": annotations,
        },
        "spec": pod,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(actor, actor.name),
        "spec": spec,
    }


def _config_map(actor: AsyncActor, runtime_source: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(actor, config_map_name(actor)),
        "data": {RUNTIME_FILE: runtime_source},
    }


def _trigger_authentication(actor: AsyncActor, auth: Obj) -> Obj:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": _metadata(actor, trigger_authentication_name(actor)),
        "spec": auth,
    }


def _scaled_object(actor: AsyncActor, wiring: _Wiring) -> Obj:
    scaling = actor.spec.scaling
    trigger: Obj = {"type": wiring.trigger_type, "metadata": dict(wiring.trigger_metadata)}
    if wiring.auth is not None:
        trigger["authenticationRef"] = {"name": trigger_authentication_name(actor)}
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _metadata(actor, actor.name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": actor.name},
            "minReplicaCount": scaling.min_replicas,
            "maxReplicaCount": scaling.max_replicas,
            "pollingInterval": scaling.polling_interval,
            "cooldownPeriod": scaling.cooldown_period,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": HPA_BEHAVIOR}},
            "triggers": [trigger],
        },
    }


def build(
    actor: AsyncActor, plan: Plan, *, config: OperatorConfig, runtime_source: str
) -> list[Obj]:
    """The objects for one actor whose transport and queue `plan` says, in apply order:
    ConfigMap, [TriggerAuthentication], Deployment, [ScaledObject]. Pure; raises RenderError
    with what to fix."""
    _check_spec(actor)
    _check_crew(actor, config)
    transport_type = plan.transport.type
    crew_namespace = config.crew_namespace or actor.namespace
    sink = _queue(crew_namespace, names.SINK, transport_type)
    sump = _queue(crew_namespace, names.SUMP, transport_type)
    join = _queue(crew_namespace, names.JOIN, transport_type)
    pause = _queue(crew_namespace, names.PAUSE, transport_type)
    wiring = _wiring(actor, plan)

    template_metadata, pod = _split_template(actor)
    others = _template_containers(pod, "containers")
    inits = _template_containers(pod, "initContainers")
    sidecar = _sidecar_container(
        actor,
        config,
        transport_type=transport_type,
        queues=(plan.queue, sink, sump, join, pause),
        wiring=wiring,
    )
    parts = _Containers(
        # The template's asya-runtime is taken out of its list and merged with the flat fields.
        runtime=_runtime_container(
            actor, _take_runtime(others, inits), config, _CrewWiring(transport_type, wiring)
        ),
        sidecar=sidecar,
        others=others,
        inits=inits,
    )
    pod_spec = _pod_spec(actor, pod, parts, wiring)
    deployment = _deployment(actor, template_metadata, pod_spec, runtime_source)

    objects = [_config_map(actor, runtime_source)]
    if actor.spec.scaling.enabled:
        if wiring.auth is not None:
            objects.append(_trigger_authentication(actor, wiring.auth))
        objects += [deployment, _scaled_object(actor, wiring)]
    else:
        objects.append(deployment)
    # Parts come from the spec's own dicts and from shared constants; callers patch and
    # serialise the result, so it must share nothing with either.
    return copy.deepcopy(objects)


@cache
def bundled_runtime_source() -> str:
    """The runtime file shipped with this package (the one read this module does)."""
    return resources.files("asya_runtime").joinpath(RUNTIME_FILE).read_text(encoding="utf-8")


def render(
    actor: AsyncActor,
    config: OperatorConfig,
    *,
    plan: Plan | None = None,
    runtime_source: str | None = None,
) -> list[dict[str, Any]]:
    """The objects for one actor. `plan` is the actor's plan when the caller has made it
    already (the operator has: it created the queue first); `runtime_source` defaults to the
    bundled runtime file."""
    if plan is None:
        plan = _plan_spec_first(actor, config)
    source = bundled_runtime_source() if runtime_source is None else runtime_source
    return build(actor, plan, config=config, runtime_source=source)


def _plan_spec_first(actor: AsyncActor, config: OperatorConfig) -> Plan:
    """plan(), but a spec problem is reported before a queue name problem, the order in which
    `asya render` has always named them (the operator reports the queue first: it must
    create the queue before it renders anything)."""
    try:
        return plan(actor, config)
    except UnknownTransport:
        raise
    except RenderError:
        _check_spec(actor)
        raise
