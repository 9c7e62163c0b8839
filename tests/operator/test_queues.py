"""The operator's own queue administration: settings as the sidecars get them, Secrets, and
the calls against the real RabbitMQ broker."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest

from asya_operator import config as operator_config
from asya_operator import queues, render
from asya_operator.models import AsyncActor
from asya_shared import env
from tests.support.services import free_port

TRANSPORTS: dict[str, dict[str, Any]] = {
    "rabbit": {"type": "rabbitmq", "url": "amqp://mq:5672/", "queueType": "classic"},
    "sqs": {
        "type": "sqs",
        "region": "eu-west-1",
        "accountId": "123456789012",
        "endpoint": "http://sqs.local:4566",
        "visibilityTimeout": 45,
        "dlq": {"maxDeliveries": 7},
        "credentials": {"podIdentity": {"provider": "aws"}},
    },
    "pubsub": {
        "type": "pubsub",
        "project": "p",
        "emulatorHost": "ps:8085",
        "ackDeadline": 90,
        "dlq": {"maxDeliveries": 6},
    },
}


@pytest.mark.parametrize("name", sorted(TRANSPORTS))
async def test_settings_are_the_ones_the_sidecar_gets(name: str) -> None:
    config = operator_config.parse({"transports": TRANSPORTS})
    actor = AsyncActor.from_object(
        {
            "metadata": {"name": "a", "namespace": "ns"},
            "spec": {
                "handler": "m.f",
                "image": "example/handler:1",
                "transport": name,
                # The emulator cannot feed KEDA; the settings do not depend on scaling.
                "scaling": {"enabled": name != "pubsub"},
            },
        }
    )
    deployment = next(o for o in render.render(actor, config) if o["kind"] == "Deployment")
    sidecar = next(
        c
        for c in deployment["spec"]["template"]["spec"]["containers"]
        if c["name"] == "asya-sidecar"
    )
    sidecar_env = {e["name"]: e.get("value") for e in sidecar["env"]}
    ours = await queues.QueueAdmin(config, None).environ(name, config.transports[name])
    assert ours
    for key, value in ours.items():
        assert sidecar_env.get(key) == value, key


def test_secret_values() -> None:
    secret = {"data": {"url": base64.b64encode(b"amqp://u:p@h/").decode()}}
    assert queues.secret_value(secret, "url", "ns/s") == "amqp://u:p@h/"
    assert queues.secret_value({"stringData": {"url": "x"}}, "url", "ns/s") == "x"
    with pytest.raises(queues.BrokerUnavailable, match="has no key 'url'"):
        queues.secret_value({"data": {}}, "url", "ns/s")
    with pytest.raises(queues.BrokerUnavailable, match="not base64"):
        queues.secret_value({"data": {"url": "%%%"}}, "url", "ns/s")


async def test_secret_needs_a_client() -> None:
    config = operator_config.parse(
        {"transports": {"mq": {"type": "rabbitmq", "credentials": {"secretRef": {"name": "s"}}}}}
    )
    admin = queues.QueueAdmin(config, None)
    with pytest.raises(queues.BrokerUnavailable, match="asya-system/s"):
        await admin.environ("mq", config.transports["mq"])


async def test_the_pods_cloud_credentials_are_not_the_operators() -> None:
    # The operator authenticates to SQS with its own identity: it reads no Secret for it.
    sqs = {**TRANSPORTS["sqs"], "credentials": {"secretRef": {"name": "aws-creds"}}}
    config = operator_config.parse({"transports": {"sqs": sqs}})
    admin = queues.QueueAdmin(config, None)
    environ = await admin.environ("sqs", config.transports["sqs"])
    assert environ == {
        "AWS_REGION": "eu-west-1",
        env.SQS_ENDPOINT: "http://sqs.local:4566",
        env.SQS_VISIBILITY_TIMEOUT: "45",
        env.SQS_MAX_RECEIVE_COUNT: "7",
    }


async def test_names_the_broker_refuses_are_permanent() -> None:
    config = operator_config.parse({"transports": TRANSPORTS})
    admin = queues.QueueAdmin(config, None)
    with pytest.raises(queues.QueueAdminError, match="sqs allows 80"):
        await admin.ensure("sqs", config.transports["sqs"], "q" * 81)


@pytest.mark.rabbitmq
async def test_rabbitmq_round_trip(rabbitmq_url: str) -> None:
    config = operator_config.parse(
        {"transports": {"mq": {"type": "rabbitmq", "url": "amqp://127.0.0.1:5672/"}}}
    )
    transport = config.transports["mq"]
    admin = queues.QueueAdmin(config, None)
    queue = f"asya-queues-{uuid.uuid4().hex[:8]}"
    try:
        with pytest.raises(queues.QueueGone):
            await admin.depth("mq", transport, queue)
        await admin.ensure("mq", transport, queue)
        await admin.ensure("mq", transport, queue)  # idempotent
        assert await admin.depth("mq", transport, queue) == 0
        await admin.delete("mq", transport, queue)
        with pytest.raises(queues.QueueGone):
            await admin.depth("mq", transport, queue)
        await admin.delete("mq", transport, queue)  # missing is fine
    finally:
        await admin.aclose()


@pytest.mark.rabbitmq
async def test_unreachable_broker_is_temporary(rabbitmq_url: str) -> None:
    port = free_port()  # nothing listens there
    config = operator_config.parse(
        {"transports": {"mq": {"type": "rabbitmq", "url": f"amqp://127.0.0.1:{port}/"}}}
    )
    admin = queues.QueueAdmin(config, None, timeout=5)
    try:
        with pytest.raises(queues.BrokerUnavailable, match=str(port)):
            await admin.ensure("mq", config.transports["mq"], "asya-queues-x")
    finally:
        await admin.aclose()
    assert env.RABBITMQ_URL in await admin.environ("mq", config.transports["mq"])
