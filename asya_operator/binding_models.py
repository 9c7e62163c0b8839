"""The AsyaBinding resource as pydantic models: the source of truth for `crds/asyabinding.yaml`.

An AsyaBinding puts a queue, a sidecar and queue-depth scaling in front of a model server
that something else deployed (a Helm chart, KServe, KAITO, KubeRay). The spec names the
workload, the transport, how to scale and which built-in caller (asya_callers) talks to the
server; docs/bindings.md explains the two modes. Shapes shared with AsyncActor (scaling,
resiliency, conditions) are the same models, so both CRDs say the same thing the same way.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import ConfigDict, Field

from asya_operator.models import (
    DNS_LABEL,
    GROUP,
    VERSION,
    Condition,
    Model,
    Resiliency,
    Scaling,
    cel_rule,
)

KIND = "AsyaBinding"
PLURAL = "asyabindings"
SHORT_NAMES = ["asyab"]

# Kubernetes object names (DNS subdomains) and API versions (group/version or core `v1`).
OBJECT_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
API_VERSION = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?v[0-9]+((alpha|beta)[0-9]+)?$"
KIND_NAME = r"^[A-Z][A-Za-z0-9]*$"
HTTP_URL = r"^https?://[^\s/?#]+(/[^\s]*)?$"
# `<name>-asya-bridge` must still be a DNS label (it is a pod label value too).
BRIDGE_SUFFIX = "-asya-bridge"
MAX_NAME = 63 - len(BRIDGE_SUFFIX)


class Mode(StrEnum):
    AUTO = "auto"  # inject into a Deployment nobody controls, bridge otherwise
    INJECT = "inject"  # patch the workload's pod template
    BRIDGE = "bridge"  # a Deployment of our own beside the workload, calling its Service


class Protocol(StrEnum):
    OPENAI_CHAT = "openai-chat"
    OPENAI_COMPLETIONS = "openai-completions"
    OPENAI_EMBEDDINGS = "openai-embeddings"
    INFERENCE_V2 = "inference-v2"
    HTTP = "http"


class WorkloadRef(Model):
    """The model server's workload, in the binding's own namespace."""

    api_version: str = Field(
        default="apps/v1",
        alias="apiVersion",
        pattern=API_VERSION,
        max_length=253,
        description="API version of the workload; apps/v1 unless it is a custom resource "
        "(serving.kserve.io/v1beta1, ray.io/v1, ...).",
    )
    kind: str = Field(
        pattern=KIND_NAME,
        max_length=63,
        description="Deployment, or the kind of another controller's resource "
        "(InferenceService, RayService, Workspace), which is always bridged.",
    )
    name: str = Field(pattern=OBJECT_NAME, max_length=253, description="The workload's name.")
    namespace: str | None = Field(
        default=None,
        pattern=DNS_LABEL,
        max_length=63,
        description="Must be the binding's own namespace when given (a binding never reaches "
        "into another namespace).",
    )


class Transport(Model):
    name: str = Field(
        min_length=1, max_length=63, description="A transport configured in the operator."
    )


# Caller settings, by manifest name; binding_render maps each to the caller's env variable.
_V2_ONLY = ("version", "inputs", "outputs", "readyTimeout")
_OPENAI_ONLY = ("promptTemplate",)
_GENERATION_ONLY = ("maxTokens", "temperature", "stream")
_HTTP_ONLY = ("path", "bodyField", "headers")


def _only(fields: tuple[str, ...], protocols: list[str]) -> list[dict[str, Any]]:
    allowed = " || ".join(f"self.protocol == '{p}'" for p in protocols)
    return [
        cel_rule(
            f"!has(self.{name}) || {allowed}",
            f"caller.{name} applies only to protocol {' or '.join(protocols)}",
            field_path=f".{name}",
        )
        for name in fields
    ]


_OPENAI = [Protocol.OPENAI_CHAT, Protocol.OPENAI_COMPLETIONS, Protocol.OPENAI_EMBEDDINGS]
_GENERATION = [Protocol.OPENAI_CHAT, Protocol.OPENAI_COMPLETIONS]


class Caller(Model):
    """Which built-in caller the bound pods run, and its settings (the caller's env vars)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "self.protocol != 'inference-v2' || has(self.model)",
                    "caller.model is required for protocol inference-v2 (ASYA_V2_MODEL)",
                    field_path=".model",
                    reason="FieldValueRequired",
                ),
                *_only(("model",), [*(p.value for p in _OPENAI), Protocol.INFERENCE_V2.value]),
                *_only(_V2_ONLY, [Protocol.INFERENCE_V2.value]),
                *_only(_OPENAI_ONLY, [p.value for p in _OPENAI]),
                *_only(_GENERATION_ONLY, [p.value for p in _GENERATION]),
                *_only(("systemPrompt",), [Protocol.OPENAI_CHAT.value]),
                *_only(_HTTP_ONLY, [Protocol.HTTP.value]),
            ]
        }
    )

    protocol: Protocol = Field(
        description="openai-chat, openai-completions, openai-embeddings, inference-v2 or http."
    )
    port: int = Field(
        default=8080,
        ge=1,
        le=65535,
        description="Where the model server listens in its pod (inject), or the Service "
        "port to look for (bridge).",
    )
    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="The model to ask for (ASYA_OPENAI_MODEL, ASYA_V2_MODEL).",
    )
    version: str | None = Field(
        default=None, min_length=1, max_length=63, description="ASYA_V2_VERSION."
    )
    inputs: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="ASYA_V2_INPUTS: payload fields sent as input tensors (the caller needs "
        "them, here or as ASYA_V2_INPUTS in spec.env).",
    )
    outputs: str | None = Field(
        default=None, min_length=1, max_length=4096, description="ASYA_V2_OUTPUTS."
    )
    ready_timeout: str | None = Field(
        default=None, alias="readyTimeout", max_length=32, description="ASYA_V2_READY_TIMEOUT."
    )
    prompt_template: str | None = Field(
        default=None,
        alias="promptTemplate",
        max_length=65536,
        description="ASYA_OPENAI_PROMPT_TEMPLATE.",
    )
    system_prompt: str | None = Field(
        default=None,
        alias="systemPrompt",
        max_length=65536,
        description="ASYA_OPENAI_SYSTEM_PROMPT.",
    )
    max_tokens: int | None = Field(
        default=None, alias="maxTokens", ge=1, description="ASYA_OPENAI_MAX_TOKENS."
    )
    temperature: float | None = Field(
        default=None, ge=0.0, le=2.0, description="ASYA_OPENAI_TEMPERATURE."
    )
    stream: bool | None = Field(default=None, description="ASYA_OPENAI_STREAM.")
    path: str | None = Field(
        default=None,
        pattern=r"^/[^\s]*$",
        max_length=2048,
        description="http only: the path POSTed to on the server (default /).",
    )
    body_field: str | None = Field(
        default=None, alias="bodyField", max_length=253, description="ASYA_HTTP_BODY_FIELD."
    )
    headers: dict[str, str] | None = Field(
        default=None, max_length=64, description="ASYA_HTTP_HEADERS (no secrets here)."
    )
    output_field: str | None = Field(
        default=None,
        alias="outputField",
        max_length=253,
        description="The payload field the answer goes into (ASYA_*_OUTPUT_FIELD).",
    )
    timeout: str | None = Field(
        default=None, max_length=32, description="Per request (ASYA_*_TIMEOUT)."
    )


_DEFAULT_EMPTY: dict[str, Any] = {"default": {}}


class AsyaBindingSpec(Model):
    """Which workload to bind, to which transport, with which caller, and how to scale."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "!has(self.endpoint) || self.mode != 'inject'",
                    "spec.endpoint is for bridge mode (the bridge calls that URL); an injected "
                    "caller calls the server in its own pod, on caller.port",
                    field_path=".endpoint",
                ),
            ]
        }
    )

    workload_ref: WorkloadRef = Field(alias="workloadRef")
    transport: Transport
    scaling: Scaling = Field(default_factory=Scaling, json_schema_extra=_DEFAULT_EMPTY)
    caller: Caller
    mode: Mode = Field(
        default=Mode.AUTO,
        description="auto picks inject for a Deployment without a controlling owner, bridge "
        "otherwise.",
    )
    actor: str | None = Field(
        default=None,
        pattern=DNS_LABEL,
        max_length=63,
        description="Actor name used in routes and queue names; defaults to metadata.name.",
    )
    concurrency: int = Field(default=1, ge=1, le=1000, description="Envelopes in flight per pod.")
    resiliency: Resiliency = Field(default_factory=Resiliency, json_schema_extra=_DEFAULT_EMPTY)
    endpoint: str | None = Field(
        default=None,
        pattern=HTTP_URL,
        max_length=2048,
        description="Bridge mode: the server's URL, instead of the Service found by selector.",
    )
    env: list[dict[str, Any]] = Field(
        default_factory=list,
        description="More environment variables of the caller container (EnvVar entries; "
        "API keys from Secrets go here).",
    )


class Target(Model):
    api_version: str | None = Field(default=None, alias="apiVersion")
    kind: str | None = None
    name: str | None = None
    uid: str | None = None


class Injection(Model):
    """Exactly what inject mode added to the workload's pod template, to take it out again."""

    init_containers: list[str] = Field(default_factory=list, alias="initContainers")
    containers: list[str] = Field(default_factory=list)
    volumes: list[str] = Field(default_factory=list)
    annotations: list[str] = Field(
        default_factory=list, description="Pod template annotation keys added."
    )
    replaced_annotations: dict[str, str] = Field(
        default_factory=dict,
        alias="replacedAnnotations",
        description="Annotations that were there before, with their old values.",
    )
    replicas: int | None = Field(
        default=None,
        description="The workload's spec.replicas before KEDA took it over; given back when "
        "the binding goes, so the server is not left at whatever KEDA last set (0, say).",
    )


class AsyaBindingStatus(Model):
    """What the operator last did; written by the operator only."""

    phase: str | None = Field(
        default=None,
        description="One word: Pending (waiting for the workload), Bound, Refused, Error or "
        "Terminating.",
    )
    mode: str | None = Field(default=None, description="The mode chosen: inject or bridge.")
    queue: str | None = Field(default=None, description="The binding's queue on its broker.")
    transport: str | None = Field(default=None, description="The transport it uses.")
    target: Target | None = Field(default=None, description="The workload bound.")
    endpoint: str | None = Field(default=None, description="The URL the caller calls.")
    replicas: str | None = Field(
        default=None, description="Who scales the model server's replicas."
    )
    injected: Injection | None = Field(
        default=None, description="Inject mode: what was added to the pod template."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Injected or BridgeReady, and Scaling.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    observed_generation: int | None = Field(default=None, alias="observedGeneration")


RESOURCE_VALIDATIONS: list[dict[str, Any]] = [
    cel_rule(
        "has(self.spec.actor)"
        " || (size(self.metadata.name) <= 63 && !self.metadata.name.contains('.'))",
        "metadata.name must be a DNS label (at most 63 characters, no dots) to serve as the "
        "actor name; otherwise set spec.actor",
    ),
    cel_rule(
        f"size(self.metadata.name) <= {MAX_NAME}",
        f"metadata.name must be at most {MAX_NAME} characters: a bridge is named "
        f"<name>{BRIDGE_SUFFIX}, which must fit a 63-character label",
    ),
    cel_rule(
        "(has(self.spec.actor) ? self.spec.actor : self.metadata.name)"
        " == (has(oldSelf.spec.actor) ? oldSelf.spec.actor : oldSelf.metadata.name)",
        "the actor name (spec.actor, else metadata.name) cannot change: it names the queue; "
        "create a new AsyaBinding instead",
    ),
]


class AsyaBinding(Model):
    """One binding as read from the API."""

    name: str
    namespace: str
    uid: str = ""
    generation: int | None = None
    spec: AsyaBindingSpec

    @property
    def actor(self) -> str:
        return self.spec.actor or self.name

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> AsyaBinding:
        """From a manifest or API object; raises pydantic.ValidationError on a bad spec."""
        metadata = obj.get("metadata") or {}
        return cls(
            name=metadata.get("name", ""),
            namespace=metadata.get("namespace") or "default",
            uid=metadata.get("uid", ""),
            generation=metadata.get("generation"),
            spec=AsyaBindingSpec.model_validate(obj.get("spec") or {}),
        )


__all__ = [
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "AsyaBinding",
    "AsyaBindingSpec",
    "AsyaBindingStatus",
    "Caller",
    "Injection",
    "Mode",
    "Protocol",
]
