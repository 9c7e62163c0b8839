"""Fixtures for real services shared across the suite. Each starts its service if it is not
running and fails loudly (never skips) when it cannot."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

# Shared fixtures: runtime subprocesses, and whole pipelines of real processes.
from tests.support.pipeline import start_pipeline, transport_kind
from tests.support.runtime import socket_dir, start_runtime
from tests.support.services import aws_env, moto_server, pubsub_emulator

__all__ = [
    "aws_env",
    "moto_server",
    "pubsub_emulator",
    "rabbitmq_url",
    "socket_dir",
    "start_pipeline",
    "start_runtime",
    "transport_kind",
]

RABBITMQ_HOST, RABBITMQ_PORT = "127.0.0.1", 5672
RABBITMQ_URL = f"amqp://guest:guest@{RABBITMQ_HOST}:{RABBITMQ_PORT}/"


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def rabbitmq_ready() -> bool:
    """The AMQP port answers and the broker application is running."""
    if not port_open(RABBITMQ_HOST, RABBITMQ_PORT):
        return False
    probe = subprocess.run(
        ["rabbitmqctl", "-q", "await_startup"], capture_output=True, timeout=60, check=False
    )
    return probe.returncode == 0


def ensure_rabbitmq(timeout: float = 90.0) -> str:
    if port_open(RABBITMQ_HOST, RABBITMQ_PORT):
        return RABBITMQ_URL
    if shutil.which("rabbitmq-server") is None:
        pytest.fail(
            "RabbitMQ is not running on 127.0.0.1:5672 and rabbitmq-server is not "
            "installed; install it (Debian: rabbitmq-server) or start the broker"
        )
    subprocess.run(["rabbitmq-server", "-detached"], capture_output=True, check=False)
    deadline = time.monotonic() + timeout
    while not rabbitmq_ready():
        if time.monotonic() > deadline:
            pytest.fail(
                f"started rabbitmq-server but port {RABBITMQ_PORT} did not open within {timeout}s"
            )
        time.sleep(0.5)
    return RABBITMQ_URL


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    return ensure_rabbitmq()
