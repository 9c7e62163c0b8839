"""The broker a bench runs against. RabbitMQ and the embedded transport are already there;
SQS (moto in server mode) and Pub/Sub (Google's emulator) are started for the run, and their
settings go into this process's environment, which the pipeline's processes inherit."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from tests.support.services import AWS_TEST_ENV, ServiceProcess, moto_argv, pubsub_emulator_argv

TRANSPORTS = ("rabbitmq", "local", "sqs", "pubsub")


@contextlib.contextmanager
def broker(transport: str) -> Iterator[None]:
    if transport == "sqs":
        service = ServiceProcess("moto server", moto_argv)
        env = {**AWS_TEST_ENV, "ASYA_SQS_ENDPOINT": service.url}
    elif transport == "pubsub":
        service = ServiceProcess("Pub/Sub emulator", pubsub_emulator_argv)
        env = {"PUBSUB_EMULATOR_HOST": service.host, "ASYA_PUBSUB_PROJECT": "asya-bench"}
    else:
        yield
        return
    saved = {name: os.environ.get(name) for name in env}
    service.start()
    os.environ.update(env)
    try:
        yield
    finally:
        service.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
