"""The AsyncActor resource as pydantic models: the source of truth for `crds/asyncactor.yaml`.

Field names are the manifest's (camelCase through aliases). Anything Kubernetes itself
defines (env entries, resources, tolerations, the pod template) is kept as plain JSON here:
the API server and kubernetes-validate check those shapes, and the operator passes them on.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

GROUP = "asya.sh"
VERSION = "v1alpha1"
KIND = "AsyncActor"
PLURAL = "asyncactors"
SHORT_NAMES = ["asya"]
RUNTIME_CONTAINER = "asya-runtime"
SIDECAR_CONTAINER = "asya-sidecar"

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# module.function or module.Class.method; the module part may itself be dotted (pkg.mod).
HANDLER = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$"
# Handlers shipped in the Asya image (asya_callers): an actor running one needs no image.
BUILT_IN_HANDLERS = "asya_callers."
DURATION = r"^([0-9]+(\.[0-9]+)?|([0-9]+(\.[0-9]+)?(ms|s|m|h))+)$"
# An exception class as a rule names it: `TimeoutError` or `openai.RateLimitError`.
ERROR_NAME = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"

# CEL rules (x-kubernetes-validations) use standard CEL only (has, all, exists, exists_one,
# filter, size, contains, matches, in, string, duration): the tests evaluate them with
# cel-python, which lacks the Kubernetes extension libraries. The API server refuses rules
# whose estimated cost is too high, so every list or map a rule iterates has a maxItems or
# maxProperties, and the strings it compares a maxLength. cel-go errors on a field selected
# from an absent parent (cel-python does not), so every optional parent is guarded by has().
MAX_RULES = 64
MAX_POLICIES = 64
MAX_ERRORS = 64
MAX_THEN_ROUTE = 16
MAX_TEMPLATE_CONTAINERS = 32


def cel_rule(
    rule: str,
    message: str,
    *,
    message_expression: str | None = None,
    field_path: str | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """One x-kubernetes-validations entry; `message` is also the fallback when the API server
    cannot evaluate `message_expression`."""
    entry: dict[str, Any] = {"rule": rule, "message": message}
    if message_expression is not None:
        entry["messageExpression"] = message_expression
    if field_path is not None:
        entry["fieldPath"] = field_path
    if reason is not None:
        entry["reason"] = reason
    return entry


def _cel_duration(field: str) -> str:
    # A bare number means seconds (asya_shared.durations); CEL's duration() needs a unit.
    return f"duration({field}.matches('^[0-9.]+$') ? {field} + 's' : {field})"


# Defaults are given as `default=`: type checkers only see a keyword default as one, so that
# `Scaling()` and `default_factory=Scaling` type-check.
class Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)


class Backoff(StrEnum):
    CONSTANT = "constant"
    LINEAR = "linear"
    EXPONENTIAL = "exponential"


class DeletionPolicy(StrEnum):
    DELETE_IF_EMPTY = "DeleteIfEmpty"  # default: remove an empty queue, keep one with messages
    DELETE = "Delete"  # remove the queue even if messages are still in it
    RETAIN = "Retain"  # never remove the queue


class Scaling(Model):
    """KEDA scaling on the depth of the actor's queue."""

    # Defaults fill every field (the parent defaults to {}), so no has() guards are needed.
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "self.minReplicas <= self.maxReplicas",
                    "scaling.minReplicas must not be greater than scaling.maxReplicas",
                    message_expression="'scaling.minReplicas (' + string(self.minReplicas)"
                    " + ') must not be greater than scaling.maxReplicas ('"
                    " + string(self.maxReplicas) + ')'",
                    field_path=".minReplicas",
                )
            ]
        }
    )

    enabled: bool = Field(default=True, description="Let KEDA scale the actor on its queue depth.")
    min_replicas: int = Field(
        default=0, alias="minReplicas", ge=0, le=1000, description="0 lets the actor nap when idle."
    )
    max_replicas: int = Field(
        default=10, alias="maxReplicas", ge=1, le=1000, description="Most replicas KEDA may run."
    )
    queue_length: int = Field(
        default=5, alias="queueLength", ge=1, le=100000, description="Target messages per replica."
    )
    polling_interval: int = Field(
        default=10,
        alias="pollingInterval",
        ge=1,
        le=3600,
        description="Seconds between KEDA checks.",
    )
    cooldown_period: int = Field(
        default=300,
        alias="cooldownPeriod",
        ge=0,
        le=86400,
        description="Seconds after the last message before scaling to minReplicas 0.",
    )


class Policy(Model):
    """How to retry the errors a rule sends here, and where to go when attempts run out."""

    # initialDelay and maxInterval have defaults, so both are always present here.
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    f"{_cel_duration('self.maxInterval')} >= {_cel_duration('self.initialDelay')}",
                    "maxInterval must not be shorter than initialDelay",
                    message_expression="'maxInterval (' + self.maxInterval"
                    " + ') must not be shorter than initialDelay (' + self.initialDelay + ')'",
                    field_path=".maxInterval",
                )
            ]
        }
    )

    max_attempts: int = Field(
        default=1,
        alias="maxAttempts",
        ge=1,
        le=1000,
        description="Attempts in all, the first one included; 1 means no retry.",
    )
    backoff: Backoff = Field(
        default=Backoff.EXPONENTIAL, description="How the wait grows from one attempt to the next."
    )
    initial_delay: str = Field(
        default="1s",
        alias="initialDelay",
        pattern=DURATION,
        max_length=32,
        description="First wait: 250ms, 30s, 5m, 1h30m; a bare number is seconds.",
    )
    max_interval: str = Field(
        default="5m",
        alias="maxInterval",
        pattern=DURATION,
        max_length=32,
        description="No single wait is longer.",
    )
    jitter: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Each wait w is drawn from [w * (1 - jitter), w]."
    )
    max_duration: str | None = Field(
        default=None,
        alias="maxDuration",
        pattern=DURATION,
        max_length=32,
        description="No retry starts later than this after the actor first failed on a message.",
    )
    then_route: list[Annotated[str, Field(pattern=DNS_LABEL, max_length=63)]] = Field(
        default_factory=list,
        alias="thenRoute",
        max_length=MAX_THEN_ROUTE,
        description="Actors to continue with when attempts are exhausted.",
    )


class Rule(Model):
    errors: list[Annotated[str, Field(pattern=ERROR_NAME, max_length=255)]] = Field(
        min_length=1,
        max_length=MAX_ERRORS,
        description="Exception type names, matched through the error's MRO.",
    )
    policy: str = Field(
        min_length=1,
        max_length=253,
        description="A key of resiliency.policies, or default (a single attempt, unless "
        "policies redefines it).",
    )


_KNOWN_POLICY = "r.policy == 'default' || (has(self.policies) && r.policy in self.policies)"


class Resiliency(Model):
    """Timeouts and retries, applied by the actor's sidecar (docs/resiliency.md)."""

    # actorTimeout has a default; policies and rules do not, hence the has() guards.
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    f"{_cel_duration('self.actorTimeout')} > duration('0s')",
                    "resiliency.actorTimeout must be longer than zero",
                    field_path=".actorTimeout",
                ),
                cel_rule(
                    f"!has(self.rules) || self.rules.all(r, {_KNOWN_POLICY})",
                    "every resiliency.rules[].policy must be a key of resiliency.policies, "
                    "or default",
                    message_expression="'resiliency.rules names policy '"
                    f" + self.rules.filter(r, !({_KNOWN_POLICY}))[0].policy"
                    " + ', which resiliency.policies does not define'",
                    field_path=".rules",
                ),
            ]
        }
    )

    actor_timeout: str = Field(
        default="5m",
        alias="actorTimeout",
        pattern=DURATION,
        max_length=32,
        description="Longest one handler call may take; past it the call fails with "
        "ActorTimeout, a TimeoutError.",
    )
    policies: dict[str, Policy] = Field(
        default_factory=dict,
        max_length=MAX_POLICIES,
        description="Retry policies by name; default applies to errors no rule matches.",
    )
    rules: list[Rule] = Field(
        default_factory=list,
        max_length=MAX_RULES,
        description="Which errors fall under which policy; the first match wins.",
    )


class Queue(Model):
    """The actor's queue on its broker."""

    deletion_policy: DeletionPolicy = Field(
        default=DeletionPolicy.DELETE_IF_EMPTY,
        alias="deletionPolicy",
        description="When the AsyncActor is deleted: DeleteIfEmpty removes the queue unless "
        "messages are waiting in it, Delete removes it anyway, Retain keeps it.",
    )


def _template_containers(key: str) -> dict[str, Any]:
    """Schema of template.spec.containers or .initContainers: free-form containers whose
    name, image, command and args are declared, because CEL can only read declared fields.

    The operator merges its runtime into an asya-runtime container found in either list (as a
    restartable init container) and injects asya-sidecar itself."""
    where = f"template.spec.{key}"
    return {
        "type": "array",
        "maxItems": MAX_TEMPLATE_CONTAINERS,
        "items": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "maxLength": 63},
                "image": {"type": "string"},
                "command": {"type": "array", "items": {"type": "string"}},
                "args": {"type": "array", "items": {"type": "string"}},
            },
        },
        "x-kubernetes-validations": [
            cel_rule(
                f"self.all(c, c.name != '{SIDECAR_CONTAINER}')",
                f"{where} must not contain {SIDECAR_CONTAINER}: the operator injects that "
                "container",
            ),
            cel_rule(
                f"self.all(c, c.name != '{RUNTIME_CONTAINER}'"
                " || (!has(c.command) && !has(c.args)))",
                f"the {RUNTIME_CONTAINER} container in {where} must not set command or args: "
                "the operator runs the Asya runtime there, which calls spec.handler",
            ),
            cel_rule(
                "self.all(c, self.exists_one(d, d.name == c.name))",
                f"{where} must have unique names",
                message_expression=f"'{where} has more than one container named '"
                " + self.filter(c, !self.exists_one(d, d.name == c.name))[0].name",
            ),
        ],
    }


_IN_BOTH_LISTS = "self.initContainers.exists(i, i.name == c.name)"

# render.py refuses anything but metadata and spec in a pod template; so does the schema.
_POD_TEMPLATE_SCHEMA: dict[str, Any] = {
    "additionalProperties": False,
    "properties": {
        "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "spec": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "properties": {
                "containers": _template_containers("containers"),
                "initContainers": _template_containers("initContainers"),
            },
            "x-kubernetes-validations": [
                cel_rule(
                    "!has(self.containers) || !has(self.initContainers)"
                    f" || self.containers.all(c, !{_IN_BOTH_LISTS})",
                    "a container name is used in both template.spec.containers and "
                    "template.spec.initContainers",
                    message_expression="'container name '"
                    f" + self.containers.filter(c, {_IN_BOTH_LISTS})[0].name"
                    " + ' is used in both template.spec.containers and "
                    "template.spec.initContainers'",
                ),
            ],
        },
    },
}


def _runtime_image_in(key: str) -> str:
    containers = f"self.template.spec.{key}"
    return (
        f"(has({containers}) && {containers}.exists(c, c.name == '{RUNTIME_CONTAINER}'"
        " && has(c.image) && size(c.image) > 0))"
    )


_RUNTIME_IMAGE_IN_TEMPLATE = (
    "has(self.template) && has(self.template.spec)"
    f" && ({_runtime_image_in('containers')} || {_runtime_image_in('initContainers')})"
)


# A nested object's defaults apply only when the object is present: default it to {}.
_DEFAULT_EMPTY: dict[str, Any] = {"default": {}}


class AsyncActorSpec(Model):
    """What the actor runs (image, handler) and how: scaling, retries, pod settings."""

    # scaling is defaulted to {} and its fields have defaults, so self.scaling.enabled exists.
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "!has(self.replicas) || !self.scaling.enabled",
                    "replicas is only allowed when scaling.enabled is false: with scaling on, "
                    "KEDA sets the replica count between scaling.minReplicas and "
                    "scaling.maxReplicas",
                    field_path=".replicas",
                    reason="FieldValueForbidden",
                ),
                cel_rule(
                    f"has(self.image) || self.handler.startsWith('{BUILT_IN_HANDLERS}')"
                    f" || ({_RUNTIME_IMAGE_IN_TEMPLATE})",
                    "image is required unless the handler is a built-in caller "
                    f"({BUILT_IN_HANDLERS}*) or spec.template gives its {RUNTIME_CONTAINER} "
                    "container an image",
                    field_path=".image",
                    reason="FieldValueRequired",
                ),
            ]
        }
    )

    actor: str | None = Field(
        default=None,
        pattern=DNS_LABEL,
        max_length=63,
        description="Actor name used in routes and queue names; defaults to metadata.name.",
    )
    transport: str | None = Field(
        default=None,
        description="A transport configured in the operator; default: its default one.",
    )
    image: str | None = Field(
        default=None,
        min_length=1,
        description="Image of the handler (asya-runtime) container: any image with Python 3, "
        "no Asya package needed. Optional for built-in callers (handler asya_callers.*), "
        "which run in the Asya image.",
    )
    handler: str = Field(pattern=HANDLER, description="module.function or module.Class.method")
    env: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Environment variables of the asya-runtime container (EnvVar entries).",
    )
    env_from: list[dict[str, Any]] = Field(
        default_factory=list,
        alias="envFrom",
        description="ConfigMaps and Secrets exposed as environment variables of the "
        "asya-runtime container (EnvFromSource entries).",
    )
    resources: dict[str, Any] = Field(
        default_factory=dict,
        description="Requests and limits of the asya-runtime container (ResourceRequirements).",
    )
    concurrency: int = Field(default=1, ge=1, le=1000, description="Envelopes in flight per pod.")
    replicas: int | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="Fixed replica count; only when scaling is disabled.",
    )
    scaling: Scaling = Field(default_factory=Scaling, json_schema_extra=_DEFAULT_EMPTY)
    resiliency: Resiliency = Field(default_factory=Resiliency, json_schema_extra=_DEFAULT_EMPTY)
    node_selector: dict[str, str] = Field(
        default_factory=dict,
        alias="nodeSelector",
        description="Node labels the actor's pods must be scheduled on.",
    )
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list, description="Tolerations of the actor's pods (Toleration entries)."
    )
    service_account_name: str | None = Field(
        default=None,
        alias="serviceAccountName",
        description="Service account the actor's pods run as.",
    )
    termination_grace_period_seconds: int = Field(
        default=60,
        alias="terminationGracePeriodSeconds",
        ge=10,
        le=86400,
        description="Pod grace period; the sidecar drains in-flight envelopes within it.",
    )
    queue: Queue = Field(default_factory=Queue, json_schema_extra=_DEFAULT_EMPTY)
    template: dict[str, Any] | None = Field(
        default=None,
        description="A full pod template (PodTemplateSpec) the flat fields are merged into.",
        json_schema_extra=_POD_TEMPLATE_SCHEMA,
    )


class Condition(Model):
    type: str = Field(description="QueueReady, WorkloadReady or ScalingReady.")
    status: str = Field(  # "True" | "False" | "Unknown"
        json_schema_extra={"enum": ["True", "False", "Unknown"]}
    )
    reason: str = Field(description="Why, in one CamelCase word.")
    message: str = Field(default="", description="Why, for a human.")
    last_transition_time: str = Field(
        alias="lastTransitionTime", description="When status last changed (RFC 3339)."
    )
    observed_generation: int | None = Field(
        default=None,
        alias="observedGeneration",
        description="The spec generation this was seen at.",
    )


class AsyncActorStatus(Model):
    """What the operator last saw; written by the operator only."""

    status: str | None = Field(  # Creating, Running, Napping, Degraded, Error, Terminating
        default=None,
        description="One word: Creating, Running, Napping, Degraded, Error or Terminating.",
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="QueueReady, WorkloadReady and ScalingReady; see status for the summary.",
        # Condition types are unique, as metav1.Condition lists are; lets apply merge by type.
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    ready_replicas: int | None = Field(
        default=None, alias="readyReplicas", description="Pods of the actor that are ready."
    )
    desired_replicas: int | None = Field(
        default=None,
        alias="desiredReplicas",
        description="Pods currently asked for (by KEDA or spec).",
    )
    queue_depth: int | None = Field(
        default=None,
        alias="queueDepth",
        description="Messages waiting, when the broker reports it.",
    )
    queue: str | None = Field(default=None, description="The actor's queue on its broker.")
    transport: str | None = Field(default=None, description="The transport the actor uses.")
    observed_generation: int | None = Field(
        default=None,
        alias="observedGeneration",
        description="The spec generation this status is for.",
    )


# Rules on the whole object: only at the root can a rule read metadata.name, which the actor
# name defaults to. Kubernetes already makes metadata.name a DNS subdomain (<= 253).
RESOURCE_VALIDATIONS: list[dict[str, Any]] = [
    cel_rule(
        "has(self.spec.actor)"
        " || (size(self.metadata.name) <= 63 && !self.metadata.name.contains('.'))",
        "metadata.name must be a DNS label (at most 63 characters, no dots) to serve as the "
        "actor name; otherwise set spec.actor",
    ),
    # Compares effective names, so spelling out the defaulted name (or dropping a spec.actor
    # equal to metadata.name) stays allowed.
    cel_rule(
        "(has(self.spec.actor) ? self.spec.actor : self.metadata.name)"
        " == (has(oldSelf.spec.actor) ? oldSelf.spec.actor : oldSelf.metadata.name)",
        "the actor name (spec.actor, else metadata.name) cannot change: it names the actor's "
        "queue and its place in routes; create a new AsyncActor instead",
    ),
]


class AsyncActor(Model):
    """One resource as read from the API: name, namespace, uid and the validated spec."""

    name: str
    namespace: str
    uid: str = ""
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    spec: AsyncActorSpec

    @property
    def actor(self) -> str:
        return self.spec.actor or self.name

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> AsyncActor:
        """From a manifest or API object; raises pydantic.ValidationError on a bad spec."""
        metadata = obj.get("metadata") or {}
        return cls(
            name=metadata.get("name", ""),
            namespace=metadata.get("namespace") or "default",
            uid=metadata.get("uid", ""),
            generation=metadata.get("generation"),
            labels=metadata.get("labels") or {},
            spec=AsyncActorSpec.model_validate(obj.get("spec") or {}),
        )
