"""`asya_transports.create`: one name per broker module, and every module a whole Broker."""

from __future__ import annotations

import pytest

import asya_transports as transports
from asya_transports import Admin, Broker, Transport
from asya_transports.local import LocalTransport
from asya_transports.pubsub import PubSubTransport
from asya_transports.rabbitmq import RabbitMQTransport
from asya_transports.sqs import SQSTransport

# Enough for each from_env; nothing here connects.
ENVIRON = {"ASYA_PUBSUB_PROJECT": "p", "ASYA_STATE_DIR": "/nonexistent/asya-test"}
CLASSES = {
    "local": LocalTransport,
    "rabbitmq": RabbitMQTransport,
    "sqs": SQSTransport,
    "pubsub": PubSubTransport,
}


def brokers(
    local: LocalTransport, rabbitmq: RabbitMQTransport, sqs: SQSTransport, pubsub: PubSubTransport
) -> list[Broker]:
    """Never called: mypy checks here that every broker class implements both protocols."""
    return [local, rabbitmq, sqs, pubsub]


def test_every_kind_has_a_broker_module() -> None:
    assert set(transports.KINDS) == set(CLASSES)


@pytest.mark.parametrize("kind", transports.KINDS)
def test_create_builds_the_named_broker(kind: str) -> None:
    transport = transports.create(kind, ENVIRON)

    assert type(transport) is CLASSES[kind]
    assert transport.name == kind
    assert isinstance(transport, Transport)
    assert isinstance(transport, Admin)


def test_an_unknown_kind_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match=r"'kafka'.*local, rabbitmq, sqs, pubsub"):
        transports.create("kafka", {})


def test_a_missing_sdk_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    real = importlib.import_module

    def without_the_sdk(name: str, package: str | None = None) -> object:
        if name == "asya_transports.sqs":
            raise ImportError("No module named 'aioboto3'")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", without_the_sdk)

    with pytest.raises(ImportError, match=r"pip install 'asya\[sqs\]'.*aioboto3"):
        transports.create("sqs", {})
