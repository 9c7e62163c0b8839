"""The broker a fault run uses, and how to take it down and bring it back.

RabbitMQ is the machine's own (127.0.0.1:5672); SQS is moto in server mode and Pub/Sub is
Google's emulator, each started for the run on a free port, its settings put into this
process's environment (the pipeline's processes inherit them). The embedded transport needs
nothing.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping

from tests.support.services import AWS_TEST_ENV, ServiceProcess, moto_argv, pubsub_emulator_argv

TRANSPORTS = ("local", "rabbitmq", "sqs", "pubsub")
RABBITMQCTL_TIMEOUT_S = 120.0


class Broker:
    """One transport's server. `restart()` stops and starts it again: RabbitMQ keeps its
    durable queues and messages across it; moto and the emulator keep nothing."""

    def __init__(self, transport: str, service: ServiceProcess | None = None) -> None:
        self.transport = transport
        self.service = service

    @property
    def env(self) -> Mapping[str, str]:
        if self.transport == "sqs" and self.service is not None:
            return {**AWS_TEST_ENV, "ASYA_SQS_ENDPOINT": self.service.url}
        if self.transport == "pubsub" and self.service is not None:
            return {"PUBSUB_EMULATOR_HOST": self.service.host, "ASYA_PUBSUB_PROJECT": "asya-faults"}
        return {}

    @property
    def port(self) -> int:
        """Where the sidecars connect (for a proxy between them and the broker)."""
        if self.service is not None:
            return self.service.port
        if self.transport == "rabbitmq":
            return 5672
        raise ValueError(f"the {self.transport} transport has no broker port")

    async def stop(self) -> None:
        if self.transport == "rabbitmq":
            await rabbitmqctl("stop_app")
        elif self.service is not None:
            await asyncio.to_thread(self.service.stop)
        else:
            raise ValueError(f"the {self.transport} transport has no server to stop")

    async def start(self) -> None:
        if self.transport == "rabbitmq":
            await rabbitmqctl("start_app")
            await rabbitmqctl("await_startup")
        elif self.service is not None:
            await asyncio.to_thread(self.service.start)
        else:
            raise ValueError(f"the {self.transport} transport has no server to start")


def start(transport: str) -> Broker:
    """The broker for `transport`, running, with its settings in os.environ."""
    if transport == "sqs":
        broker = Broker(transport, ServiceProcess("moto server", moto_argv))
    elif transport == "pubsub":
        broker = Broker(transport, ServiceProcess("Pub/Sub emulator", pubsub_emulator_argv))
    elif transport in ("local", "rabbitmq"):
        return Broker(transport)
    else:
        raise ValueError(f"unknown transport {transport!r}; choose one of {', '.join(TRANSPORTS)}")
    assert broker.service is not None
    broker.service.start()
    os.environ.update(broker.env)
    return broker


def stop(broker: Broker) -> None:
    if broker.service is not None:
        broker.service.stop()
    for name in broker.env:
        os.environ.pop(name, None)


async def rabbitmqctl(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), RABBITMQCTL_TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {err.decode()}{out.decode()}")
    return out.decode()
