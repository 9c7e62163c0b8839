"""Fixtures for the crew: moto in server mode for S3, and crew processes on the real runtime.

moto runs as a separate HTTP server (not in-process mocking), so the S3 store goes through
aioboto3, aiohttp and a real socket exactly as it would against AWS or MinIO.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncGenerator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import asya_runtime
from asya_runtime import runtime
from tests.support.runtime import client_for
from tests.support.services import ServiceProcess
from tests.support.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
RUNTIME_FILE = Path(asya_runtime.__file__).with_name("runtime.py")
START_DEADLINE_S = 30.0


def crew_envelope(
    payload: Any = None, *, phase: str = "succeeded", **fields: Any
) -> dict[str, Any]:
    """An envelope as a sidecar hands it to x-sink (or x-sump with curr='x-sump')."""
    envelope: dict[str, Any] = {
        "id": f"env-{uuid.uuid4().hex[:8]}",
        "route": {"prev": ["prep", "infer"], "curr": "x-sink", "next": []},
        "headers": {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        "status": {"phase": phase, "actor": "infer", "attempt": 1, "reason": None},
        "payload": {"text": "héllo"} if payload is None else payload,
    }
    envelope.update(fields)
    return envelope


async def drive(handler: AsyncGenerator[Any, Any], envelope: dict[str, Any]) -> list[Any]:
    """Run a generator handler in-process against the runtime's own ABI session."""
    session = runtime.Session(envelope)
    reply: Any = None
    try:
        while True:
            item = await handler.asend(reply)
            reply = session.step(item)
    except StopAsyncIteration:
        pass
    return session.frames


# ------------------------------------------------------------------------------- S3 (moto)


@pytest.fixture(scope="session")
def moto_endpoint(moto_server: ServiceProcess) -> str:
    """The session's moto server (tests/support/services.py)."""
    return moto_server.url


AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
}


@pytest.fixture
def s3_endpoint(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the AWS chain and the store at moto, away from any real account."""
    for name, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ASYA_S3_ENDPOINT", moto_endpoint)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    missing = str(REPO_ROOT / ".no-such-aws-file")
    monkeypatch.setenv("AWS_CONFIG_FILE", missing)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", missing)
    return moto_endpoint


def s3_client(endpoint: str) -> Any:
    import boto3  # type: ignore[import-untyped]

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    """A new, empty bucket for each test."""
    name = f"asya-test-{uuid.uuid4().hex[:12]}"
    s3_client(s3_endpoint).create_bucket(Bucket=name)
    return name


# ------------------------------------------------------------------ crew processes (runtime)


class CrewProcess:
    """A crew handler served by the real runtime in a subprocess, cwd at the repository."""

    def __init__(self, *, command: list[str], socket_dir: Path, env: dict[str, str]) -> None:
        self.socket_dir = socket_dir
        self.socket_path = socket_dir / "asya-runtime.sock"
        self.ready_path = socket_dir / "runtime-ready"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("ASYA_")}
        full_env.update({"ASYA_SOCKET_DIR": str(socket_dir), "ASYA_LOG_FORMAT": "json"})
        full_env.update(env)
        self.proc = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._client: httpx.Client | None = None

    def wait_ready(self) -> CrewProcess:
        def ready() -> bool:
            if self.proc.poll() is not None:
                _, stderr = self.proc.communicate()
                raise AssertionError(
                    f"crew process exited with {self.proc.returncode} before it was ready:\n"
                    f"{stderr}"
                )
            try:
                pid = json.loads(self.ready_path.read_text())["pid"]
            except (FileNotFoundError, ValueError, KeyError):
                return False
            return bool(pid == self.proc.pid)

        wait_until(ready, what="the crew runtime to be ready", timeout=START_DEADLINE_S)
        return self

    def invoke(self, envelope: dict[str, Any]) -> httpx.Response:
        if self._client is None:
            self._client = client_for(self.socket_path)
        return self._client.post("/invoke", json=envelope)

    def wait_exit(self, timeout: float = 20.0) -> tuple[int, str]:
        if self._client is not None:
            self._client.close()
            self._client = None
        try:
            _, stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, stderr = self.proc.communicate()
            raise AssertionError(
                f"crew process did not exit within {timeout}s:\n{stderr}"
            ) from None
        return self.proc.returncode, stderr

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit()


CrewFactory = Callable[..., CrewProcess]


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # Short on purpose: AF_UNIX paths must fit in ~104 bytes, pytest's tmp_path may not.
    path = Path(tempfile.mkdtemp(prefix="asya-crew-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start_crew(socket_dir: Path) -> Iterator[CrewFactory]:
    """Start a crew process; `role` runs `python -m asya_crew <role>`, `handler` runs the
    runtime file directly with ASYA_HANDLER. Every process is stopped after the test."""
    started: list[CrewProcess] = []

    def start(
        *,
        role: str | None = None,
        handler: str | None = None,
        env: dict[str, str] | None = None,
        wait: bool = True,
    ) -> CrewProcess:
        settings = dict(env or {})
        if role is not None:
            command = [sys.executable, "-m", "asya_crew", role]
        else:
            assert handler is not None, "give a role or a handler"
            command = [sys.executable, str(RUNTIME_FILE)]
            settings["ASYA_HANDLER"] = handler
        settings.setdefault("ASYA_CREW_METRICS_PORT", "0")
        crew = CrewProcess(command=command, socket_dir=socket_dir, env=settings)
        started.append(crew)
        return crew.wait_ready() if wait else crew

    yield start
    for crew in started:
        if crew.proc.poll() is None:
            crew.proc.kill()
        crew.wait_exit()
