"""The environment variables a configured transport becomes, for sidecars and the operator."""

from __future__ import annotations

from typing import Any

import pytest

from asya_operator import config as operator_config
from asya_operator import transport_env
from asya_operator.transport_env import FromSecret, Variable
from asya_shared import env

SQS = {"type": "sqs", "region": "eu-west-1", "accountId": "123456789012"}
PUBSUB = {"type": "pubsub", "project": "p"}
KEY_FILE = "/var/run/secrets/asya/gcp/credentials.json"


@pytest.mark.parametrize(
    ("transport", "expected"),
    [
        (
            {"type": "rabbitmq", "url": "amqp://mq:5672/"},
            [
                Variable(env.RABBITMQ_URL, "amqp://mq:5672/"),
                Variable(env.RABBITMQ_QUEUE_TYPE, "quorum"),
            ],
        ),
        # A Secret, when named, carries the URL even where a url is given too.
        (
            {
                "type": "rabbitmq",
                "url": "amqp://mq:5672/",
                "queueType": "classic",
                "credentials": {"secretRef": {"name": "mq", "keys": {"url": "amqp-url"}}},
            },
            [
                Variable(env.RABBITMQ_URL, FromSecret("mq", "amqp-url")),
                Variable(env.RABBITMQ_QUEUE_TYPE, "classic"),
            ],
        ),
        (
            {**SQS, "credentials": {"secretRef": {"name": "aws"}}},
            [
                Variable("AWS_REGION", "eu-west-1"),
                Variable(env.SQS_VISIBILITY_TIMEOUT, "30"),
                Variable(env.SQS_MAX_RECEIVE_COUNT, "10"),
                Variable("AWS_ACCESS_KEY_ID", FromSecret("aws", "accessKeyId"), identity=True),
                Variable(
                    "AWS_SECRET_ACCESS_KEY", FromSecret("aws", "secretAccessKey"), identity=True
                ),
            ],
        ),
        (
            {
                **SQS,
                "endpoint": "http://moto:5000",
                "visibilityTimeout": 45,
                "dlq": {"maxDeliveries": 7},
                "credentials": {"podIdentity": {"provider": "aws"}},
            },
            [
                Variable("AWS_REGION", "eu-west-1"),
                Variable(env.SQS_ENDPOINT, "http://moto:5000"),
                Variable(env.SQS_VISIBILITY_TIMEOUT, "45"),
                Variable(env.SQS_MAX_RECEIVE_COUNT, "7"),
            ],
        ),
        (
            {**PUBSUB, "credentials": {"secretRef": {"name": "gcp"}}},
            [
                Variable(env.PUBSUB_PROJECT, "p"),
                Variable(env.PUBSUB_ACK_DEADLINE, "60"),
                Variable(env.PUBSUB_MAX_DELIVERY_ATTEMPTS, "10"),
                Variable("GOOGLE_APPLICATION_CREDENTIALS", KEY_FILE, identity=True),
            ],
        ),
        (
            {**PUBSUB, "credentials": {"podIdentity": {"provider": "gcp"}}},
            [
                Variable(env.PUBSUB_PROJECT, "p"),
                Variable(env.PUBSUB_ACK_DEADLINE, "60"),
                Variable(env.PUBSUB_MAX_DELIVERY_ATTEMPTS, "10"),
            ],
        ),
        (
            {**PUBSUB, "emulatorHost": "ps:8085", "ackDeadline": 90, "dlq": {"maxDeliveries": 6}},
            [
                Variable(env.PUBSUB_PROJECT, "p"),
                Variable(env.PUBSUB_EMULATOR_HOST, "ps:8085"),
                Variable(env.PUBSUB_ACK_DEADLINE, "90"),
                Variable(env.PUBSUB_MAX_DELIVERY_ATTEMPTS, "6"),
            ],
        ),
    ],
)
def test_variables(transport: dict[str, Any], expected: list[Variable]) -> None:
    config = operator_config.parse({"transports": {"t": transport}})
    assert transport_env.variables(config.transports["t"]) == expected
