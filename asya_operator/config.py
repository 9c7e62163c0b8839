"""Operator configuration: the transports actors may use, the sidecar image, watched namespaces,
and the gateway actors report to.

Platform teams write it once (Helm values -> a ConfigMap mounted as a YAML file, path in
`ASYA_OPERATOR_CONFIG`). Credentials are never literals: a transport names a Secret (in the
actor's namespace for the pods and KEDA, in the operator's namespace for the operator's own
queue administration) or relies on pod identity. `load` validates everything at start and
reports every problem at once.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

CONFIG_ENV = "ASYA_OPERATOR_CONFIG"
DEFAULT_SIDECAR_IMAGE = "ghcr.io/asya-dev/asya:0.1.0"
# http(s)://host[:port][/path]: a user or password has no place in an internal URL that every
# pod's spec shows, and the reporter appends its own path, so no query or fragment either.
GATEWAY_URL = re.compile(r"^https?://[^/@\s?#:]+(:[0-9]{1,5})?(/[^\s?#]*)?$")


class Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)


class SecretRef(Model):
    """A Secret of the actor's namespace, and the keys in it that matter for this transport.

    rabbitmq: `url` (an AMQP URL with user and password). sqs: `accessKeyId` and
    `secretAccessKey`. pubsub: `credentials` (a service-account JSON key)."""

    name: str = Field(min_length=1)
    keys: dict[str, str] = Field(default_factory=dict)

    def key(self, what: str, default: str) -> str:
        return self.keys.get(what, default)


class PodIdentity(Model):
    """Cloud identity of the pod (IRSA / EKS Pod Identity, GKE Workload Identity)."""

    provider: Literal["aws", "gcp"]
    role_arn: str | None = Field(None, alias="roleArn")  # aws: KEDA assumes this role


class Credentials(Model):
    secret_ref: SecretRef | None = Field(None, alias="secretRef")
    pod_identity: PodIdentity | None = Field(None, alias="podIdentity")

    @model_validator(mode="after")
    def _exactly_one(self) -> Credentials:
        if (self.secret_ref is None) == (self.pod_identity is None):
            raise ValueError("credentials take exactly one of secretRef or podIdentity")
        return self


class DeadLetters(Model):
    max_deliveries: int = Field(
        10, alias="maxDeliveries", ge=5, le=100, description="Deliveries before the broker's DLQ."
    )


class RabbitMQTransport(Model):
    type: Literal["rabbitmq"]
    url: str | None = Field(
        None, description="AMQP URL without credentials; with them, use credentials.secretRef."
    )
    queue_type: Literal["quorum", "classic"] = Field("quorum", alias="queueType")
    credentials: Credentials | None = None

    @model_validator(mode="after")
    def _checks(self) -> RabbitMQTransport:
        if self.url is None and (self.credentials is None or self.credentials.secret_ref is None):
            raise ValueError("rabbitmq needs url or credentials.secretRef (key 'url')")
        if self.url is not None and "@" in self.url.split("://", 1)[-1].split("/", 1)[0]:
            raise ValueError("rabbitmq url must not carry credentials; use credentials.secretRef")
        if self.credentials is not None and self.credentials.pod_identity is not None:
            raise ValueError("rabbitmq has no pod identity; use credentials.secretRef")
        return self


class SQSTransport(Model):
    type: Literal["sqs"]
    region: str = Field(min_length=1)
    account_id: str = Field(alias="accountId", pattern=r"^[0-9]{12}$")
    endpoint: str | None = Field(
        None, description="An SQS-compatible endpoint (tests, LocalStack)."
    )
    visibility_timeout: int = Field(30, alias="visibilityTimeout", ge=1, le=43200)
    credentials: Credentials
    dlq: DeadLetters = Field(default_factory=DeadLetters)


class PubSubTransport(Model):
    type: Literal["pubsub"]
    project: str = Field(min_length=1)
    emulator_host: str | None = Field(None, alias="emulatorHost")
    ack_deadline: int = Field(60, alias="ackDeadline", ge=10, le=600)
    credentials: Credentials | None = None  # None only with emulatorHost
    dlq: DeadLetters = Field(default_factory=DeadLetters)

    @model_validator(mode="after")
    def _checks(self) -> PubSubTransport:
        if self.credentials is None and self.emulator_host is None:
            raise ValueError("pubsub needs credentials (secretRef or podIdentity gcp)")
        return self


TransportConfig = Annotated[
    RabbitMQTransport | SQSTransport | PubSubTransport, Field(discriminator="type")
]


class Sidecar(Model):
    image: str = DEFAULT_SIDECAR_IMAGE
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", alias="imagePullPolicy"
    )
    resources: dict[str, Any] = Field(
        default_factory=lambda: {
            "requests": {"cpu": "100m", "memory": "64Mi"},
            "limits": {"memory": "256Mi"},
        }
    )


class Gateway(Model):
    """The gateway's internal base URL (its Service on the internal port): every sidecar, and
    the crew's handlers, report there as ASYA_GATEWAY_URL (docs/gateway.md)."""

    url: str = Field(
        description="http(s)://host[:port][/path], no credentials, e.g. "
        "http://asya-gateway-internal.asya-gateway.svc:8081"
    )

    @model_validator(mode="after")
    def _checks(self) -> Gateway:
        if not GATEWAY_URL.match(self.url):
            # A password in the URL stays out of the message (and so out of the logs).
            shown = re.sub(r"//[^/@]*@", "//***@", self.url)
            raise ValueError(
                f"gateway.url {shown!r} is not an http(s) URL without credentials, query "
                "or fragment; use the internal Service of the asya-gateway chart, e.g. "
                "http://asya-gateway-internal.asya-gateway.svc:8081"
            )
        return self


class OperatorConfig(Model):
    transports: dict[str, TransportConfig] = Field(default_factory=dict)
    default_transport: str | None = Field(None, alias="defaultTransport")
    sidecar: Sidecar = Field(default_factory=Sidecar)
    namespaces: list[str] = Field(
        default_factory=list, description="Namespaces to watch; empty means all."
    )
    crew_namespace: str | None = Field(
        None,
        alias="crewNamespace",
        description="Namespace whose x-sink/x-sump queues actors report to; "
        "default: the actor's own.",
    )
    operator_namespace: str = Field("asya-system", alias="operatorNamespace")
    queue_refresh_seconds: int = Field(30, alias="queueRefreshSeconds", ge=5, le=3600)
    gateway: Gateway | None = Field(
        None, description="The gateway actors report to; none: actors report nothing."
    )

    @model_validator(mode="after")
    def _default_known(self) -> OperatorConfig:
        if self.default_transport is not None and self.default_transport not in self.transports:
            known = ", ".join(sorted(self.transports)) or "none configured"
            raise ValueError(
                f"defaultTransport {self.default_transport!r} is not a configured transport "
                f"({known})"
            )
        return self

    def transport_name(self, requested: str | None) -> str | None:
        """The transport an actor uses: its own choice, else the default, else the only one."""
        if requested:
            return requested
        if self.default_transport:
            return self.default_transport
        if len(self.transports) == 1:
            return next(iter(self.transports))
        return None


class OperatorConfigError(ValueError):
    """The operator configuration is unusable; the message lists every problem."""


def parse(raw: Any) -> OperatorConfig:
    try:
        return OperatorConfig.model_validate(raw or {})
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in error['loc']) or '(top)'}: {error['msg']}"
            for error in exc.errors()
        ]
        raise OperatorConfigError(
            "invalid operator configuration:\n  - " + "\n  - ".join(problems)
        ) from None


def load(path: str | Path) -> OperatorConfig:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise OperatorConfigError(f"cannot read operator configuration {path}: {exc}") from None
    return parse(raw)
