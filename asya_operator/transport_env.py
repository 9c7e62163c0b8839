"""The environment variables a configured transport becomes, listed once.

Two processes run a transport module from asya_transports and configure it through the
environment: every sidecar (render.py writes the variables into its container) and the
operator itself, for its queue administration (queues.py builds an environ). Both take the
list from `variables`, so the operator creates queues with the settings its sidecars use.

A variable holds a literal or a reference to a key of a Secret. The pod gets the reference as
a secretKeyRef; the operator resolves it in its own namespace. Variables marked `identity`
are the pod's cloud credentials: the operator skips them and authenticates with its own
identity (see queues.py).

Pure: no I/O, no Kubernetes objects; the pod volume that holds a mounted key file is
render.py's.
"""

from __future__ import annotations

from dataclasses import dataclass

from asya_operator.config import PubSubTransport, RabbitMQTransport, SecretRef, TransportConfig
from asya_shared import env

# Variables that belong to cloud SDKs rather than to Asya, so asya_shared.env does not name
# them; the SDKs inside the transports read them directly.
AWS_REGION = "AWS_REGION"
AWS_ACCESS_KEY_ID = "AWS_ACCESS_KEY_ID"
AWS_SECRET_ACCESS_KEY = "AWS_SECRET_ACCESS_KEY"
GOOGLE_APPLICATION_CREDENTIALS = "GOOGLE_APPLICATION_CREDENTIALS"

# Where a sidecar finds a Pub/Sub service-account key: Google's libraries want a file path,
# not the key itself, so render.py mounts the Secret's key here.
GCP_CREDENTIALS_DIR = "/var/run/secrets/asya/gcp"
GCP_CREDENTIALS_FILE = "credentials.json"


@dataclass(frozen=True)
class FromSecret:
    """The value of one key of a Secret (the pod's namespace, or the operator's own)."""

    secret: str
    key: str


@dataclass(frozen=True)
class Variable:
    name: str
    value: str | FromSecret
    identity: bool = False  # a credential of the pod; the operator uses its own identity


def _key(secret: SecretRef, what: str) -> FromSecret:
    return FromSecret(secret.name, secret.key(what, what))


def variables(transport: TransportConfig) -> list[Variable]:
    """Every variable the transport module reads, in the order the sidecar container lists them."""
    credentials = transport.credentials
    secret = credentials.secret_ref if credentials is not None else None
    if isinstance(transport, RabbitMQTransport):
        # A Secret, when named, carries the URL (user and password included).
        if secret is not None:
            url: str | FromSecret = _key(secret, "url")
        else:
            assert transport.url is not None  # the config refuses rabbitmq without url or secret
            url = transport.url
        return [
            Variable(env.RABBITMQ_URL, url),
            Variable(env.RABBITMQ_QUEUE_TYPE, transport.queue_type),
        ]
    if isinstance(transport, PubSubTransport):
        result = [Variable(env.PUBSUB_PROJECT, transport.project)]
        if transport.emulator_host:
            result.append(Variable(env.PUBSUB_EMULATOR_HOST, transport.emulator_host))
        result += [
            Variable(env.PUBSUB_ACK_DEADLINE, str(transport.ack_deadline)),
            Variable(env.PUBSUB_MAX_DELIVERY_ATTEMPTS, str(transport.dlq.max_deliveries)),
        ]
        if secret is not None:
            path = f"{GCP_CREDENTIALS_DIR}/{GCP_CREDENTIALS_FILE}"
            result.append(Variable(GOOGLE_APPLICATION_CREDENTIALS, path, identity=True))
        return result
    result = [Variable(AWS_REGION, transport.region)]
    if transport.endpoint:
        result.append(Variable(env.SQS_ENDPOINT, transport.endpoint))
    result += [
        Variable(env.SQS_VISIBILITY_TIMEOUT, str(transport.visibility_timeout)),
        Variable(env.SQS_MAX_RECEIVE_COUNT, str(transport.dlq.max_deliveries)),
    ]
    if secret is not None:
        result += [
            Variable(AWS_ACCESS_KEY_ID, _key(secret, "accessKeyId"), identity=True),
            Variable(AWS_SECRET_ACCESS_KEY, _key(secret, "secretAccessKey"), identity=True),
        ]
    return result
