"""Transports: one module per broker behind the protocols in base.py, for every Asya process.

The sidecar receives and sends through a `Transport`; the operator, the CLI and the bench
administer queues through an `Admin`; each broker module implements both (a `Broker`).
`create` is the one place that maps a transport name to its module; a broker SDK that is not
installed is reported with the extra to install. This package imports nothing of Asya's
but the shared vocabulary (asya_shared).
"""

from __future__ import annotations

import importlib
import typing

from asya_transports.base import (
    Admin,
    Broker,
    Delivery,
    InvalidQueueName,
    MessageTooLarge,
    QueueNotFound,
    Receiver,
    Transport,
    TransportError,
    TransportUnavailable,
    Unsupported,
)

__all__ = [
    "KINDS",
    "Admin",
    "Broker",
    "Delivery",
    "InvalidQueueName",
    "MessageTooLarge",
    "QueueNotFound",
    "Receiver",
    "Transport",
    "TransportError",
    "TransportUnavailable",
    "Unsupported",
    "create",
]


if typing.TYPE_CHECKING:
    from collections.abc import Mapping


class _Module(typing.NamedTuple):
    module: str
    cls: str
    sdk: str  # what to install, named in the error when the import fails
    extra: str | None


_MODULES = {
    "local": _Module("asya_transports.local", "LocalTransport", "", None),
    "rabbitmq": _Module("asya_transports.rabbitmq", "RabbitMQTransport", "aio-pika", "rabbitmq"),
    "sqs": _Module("asya_transports.sqs", "SQSTransport", "aioboto3", "sqs"),
    "pubsub": _Module("asya_transports.pubsub", "PubSubTransport", "gcloud-aio-pubsub", "pubsub"),
}
KINDS = tuple(_MODULES)


def create(kind: str, environ: Mapping[str, str]) -> Broker:
    """Build the transport named `kind`, configured from its own ASYA_* variables."""
    found = _MODULES.get(kind)
    if found is None:
        raise ValueError(f"unknown transport {kind!r}; choose one of {', '.join(KINDS)}")
    try:
        module = importlib.import_module(found.module)
    except ImportError as exc:
        raise ImportError(
            f"the {kind} transport needs {found.sdk}: pip install 'asya[{found.extra}]' ({exc})"
        ) from exc
    transport = getattr(module, found.cls).from_env(environ)
    assert isinstance(transport, Broker)  # tests/transports/test_factory.py checks it statically
    return transport
