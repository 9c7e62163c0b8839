"""Transports: one module per broker behind the protocol in base.py.

`create` is the one place that maps a transport name to its module; a broker SDK that is not
installed is reported with the extra to install.
"""

from __future__ import annotations

from collections.abc import Mapping

from asya_transports.base import (
    Delivery,
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
    "Delivery",
    "MessageTooLarge",
    "QueueNotFound",
    "Receiver",
    "Transport",
    "TransportError",
    "TransportUnavailable",
    "Unsupported",
    "create",
]

KINDS = ("local", "rabbitmq", "sqs", "pubsub")


def create(kind: str, environ: Mapping[str, str]) -> Transport:
    """Build the transport named `kind`, configured from its own ASYA_* variables."""
    if kind == "local":
        from asya_transports import local

        return local.LocalTransport.from_env(environ)
    if kind == "rabbitmq":
        try:
            from asya_transports import rabbitmq
        except ImportError as exc:
            raise ImportError(
                f"the rabbitmq transport needs aio-pika: pip install 'asya[rabbitmq]' ({exc})"
            ) from exc
        return rabbitmq.RabbitMQTransport.from_env(environ)
    if kind == "sqs":
        try:
            from asya_transports import sqs
        except ImportError as exc:
            raise ImportError(
                f"the sqs transport needs aioboto3: pip install 'asya[sqs]' ({exc})"
            ) from exc
        return sqs.SQSTransport.from_env(environ)
    if kind == "pubsub":
        try:
            from asya_transports import pubsub
        except ImportError as exc:
            raise ImportError(
                f"the pubsub transport needs gcloud-aio-pubsub: pip install 'asya[pubsub]' ({exc})"
            ) from exc
        return pubsub.PubSubTransport.from_env(environ)
    raise ValueError(f"unknown transport {kind!r}; choose one of {', '.join(KINDS)}")
