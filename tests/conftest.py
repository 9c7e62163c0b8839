"""Fixtures for real services shared across the suite. Each starts its service if it is not
running and fails loudly (never skips) when it cannot. Tests are marked by the services
their fixtures start (see `pytest_collection_modifyitems`), so `-m "not sqs"` deselects
exactly the tests that need moto for SQS."""

from __future__ import annotations

import shutil
import subprocess

import pytest

# Shared fixtures: runtime subprocesses, and whole pipelines of real processes.
from tests.support.pipeline import start_pipeline, transport_kind
from tests.support.postgres import own_database, postgres_url
from tests.support.runtime import socket_dir, start_runtime
from tests.support.services import aws_env, moto_server, port_open, pubsub_emulator
from tests.support.waiting import wait_until

__all__ = [
    "aws_env",
    "moto_server",
    "own_database",
    "postgres_url",
    "pubsub_emulator",
    "rabbitmq_url",
    "socket_dir",
    "start_pipeline",
    "start_runtime",
    "transport_kind",
]

RABBITMQ_HOST, RABBITMQ_PORT = "127.0.0.1", 5672
RABBITMQ_URL = f"amqp://guest:guest@{RABBITMQ_HOST}:{RABBITMQ_PORT}/"

# The fixture that starts (or needs) a service -> the marker of that service.
SERVICE_MARKERS = {
    "rabbitmq_url": "rabbitmq",
    "pubsub_emulator": "pubsub",
    "moto_server": "sqs",
    "llama_server": "model_servers",
    "start_llama_server": "model_servers",
    "mlserver": "model_servers",
    "postgres_url": "postgres",
    "own_database": "postgres",
}
# moto serves S3 as well as SQS; a test that reaches it through this fixture is an S3 test.
S3_FIXTURE = "s3_endpoint"


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects anything
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by the services in its fixture closure: `rabbitmq_url` -> rabbitmq,
    `pubsub_emulator` -> pubsub, `moto_server` -> sqs, or s3 when the test uses moto through
    `s3_endpoint` (tests/crew/conftest.py). A test that needs no service gets no broker
    marker, wherever it lives. Fixtures looked up at run time (`request.getfixturevalue`, as
    the `transport_kind` parameters do) are not in the closure: mark those where they are
    chosen."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        for fixture, marker in SERVICE_MARKERS.items():
            if fixture in names:
                if fixture == "moto_server" and S3_FIXTURE in names:
                    marker = "s3"
                if item.get_closest_marker(marker) is None:
                    item.add_marker(marker)


def rabbitmq_ready() -> bool:
    """The AMQP port answers and the broker application is running."""
    if not port_open(RABBITMQ_PORT, host=RABBITMQ_HOST):
        return False
    probe = subprocess.run(
        ["rabbitmqctl", "-q", "await_startup"], capture_output=True, timeout=60, check=False
    )
    return probe.returncode == 0


def ensure_rabbitmq(timeout: float = 90.0) -> str:
    if port_open(RABBITMQ_PORT, host=RABBITMQ_HOST):
        return RABBITMQ_URL
    if shutil.which("rabbitmq-server") is None:
        pytest.fail(
            "RabbitMQ is not running on 127.0.0.1:5672 and rabbitmq-server is not "
            "installed; install it (Debian: rabbitmq-server) or start the broker"
        )
    subprocess.run(["rabbitmq-server", "-detached"], capture_output=True, check=False)
    wait_until(
        rabbitmq_ready,
        what=f"rabbitmq-server, started here, to answer on port {RABBITMQ_PORT}",
        timeout=timeout,
        interval=0.5,
    )
    return RABBITMQ_URL


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    return ensure_rabbitmq()
