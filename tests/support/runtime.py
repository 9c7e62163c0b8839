"""Run the real runtime file as a subprocess on a private socket directory.

Fixtures here (`socket_dir`, `start_runtime`) are registered for the whole suite by
tests/conftest.py; helpers (`client_for`, `envelope`) are imported directly. Waiting is
tests/support/waiting.py's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import asya_runtime
from tests.support import waiting

RUNTIME_FILE = Path(asya_runtime.__file__).with_name("runtime.py")
HANDLERS_DIR = Path(__file__).parent.parent / "runtime" / "handlers"
START_DEADLINE_S = 20.0


class RuntimeProcess:
    def __init__(
        self, *, handler: str, socket_dir: Path, env: dict[str, str], python: str, cwd: Path
    ):
        self.handler = handler
        self.socket_dir = socket_dir
        self.socket_path = socket_dir / "asya-runtime.sock"
        self.ready_path = socket_dir / "runtime-ready"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("ASYA_")}
        full_env.update({"ASYA_HANDLER": handler, "ASYA_SOCKET_DIR": str(socket_dir)})
        full_env.update(env)
        self.proc = subprocess.Popen(
            [python, str(RUNTIME_FILE)],
            cwd=cwd,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._client: httpx.Client | None = None

    def wait_ready(self) -> RuntimeProcess:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"runtime exited with {self.proc.returncode} before it was ready:\n"
                    f"{self.stderr_text()}"
                )
            return self._ready_file_is_ours()

        waiting.wait_until(
            ready, what=f"runtime {self.handler} to be ready", timeout=START_DEADLINE_S
        )
        return self

    def _ready_file_is_ours(self) -> bool:
        # A runtime killed earlier may have left its ready file; only ours counts.
        try:
            pid: int = json.loads(self.ready_path.read_text())["pid"]
        except (FileNotFoundError, ValueError, KeyError):
            return False
        return pid == self.proc.pid

    def stderr_text(self) -> str:
        """Everything the runtime logged; call once it has exited."""
        return self.proc.stderr.read() if self.proc.stderr else ""

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = client_for(self.socket_path)
        return self._client

    def invoke(self, payload: Any, **fields: Any) -> httpx.Response:
        return self.client.post("/invoke", json=envelope(payload, **fields))

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 20.0) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        return self.wait_exit(timeout)

    def wait_exit(self, timeout: float = 20.0) -> tuple[int, str]:
        if self._client is not None:
            self._client.close()
            self._client = None
        try:
            _, stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, stderr = self.proc.communicate()
            raise AssertionError(f"runtime did not stop within {timeout}s:\n{stderr}") from None
        return self.proc.returncode, stderr


def client_for(socket_path: Path, **kwargs: Any) -> httpx.Client:
    transport = httpx.HTTPTransport(uds=str(socket_path))
    return httpx.Client(transport=transport, base_url="http://runtime", timeout=60, **kwargs)


def async_client_for(socket_path: Path, connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    transport = httpx.AsyncHTTPTransport(uds=str(socket_path), limits=limits)
    return httpx.AsyncClient(transport=transport, base_url="http://runtime", timeout=60)


def envelope(payload: Any, **fields: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        "id": "env-1",
        "route": {"prev": ["ingest"], "curr": "model", "next": ["post", "store"]},
        "headers": {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
        "payload": payload,
    }
    env.update(fields)
    return env


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # Short path on purpose: AF_UNIX paths must fit in ~104 bytes, pytest's tmp_path may not.
    path = Path(tempfile.mkdtemp(prefix="asya-rt-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


RuntimeFactory = Callable[..., RuntimeProcess]


@pytest.fixture
def start_runtime(socket_dir: Path) -> Iterator[RuntimeFactory]:
    """Start a runtime serving `handler`; every runtime started is stopped after the test."""
    started: list[RuntimeProcess] = []

    def start(
        handler: str,
        *,
        concurrency: int = 1,
        env: dict[str, str] | None = None,
        python: str = sys.executable,
        wait: bool = True,
        cwd: Path = HANDLERS_DIR,
    ) -> RuntimeProcess:
        settings = {"ASYA_RUNTIME_CONCURRENCY": str(concurrency), "ASYA_LOG_FORMAT": "json"}
        settings.update(env or {})
        runtime = RuntimeProcess(
            handler=handler, socket_dir=socket_dir, env=settings, python=python, cwd=cwd
        )
        started.append(runtime)
        return runtime.wait_ready() if wait else runtime

    yield start
    for runtime in started:
        if runtime.proc.poll() is None:
            runtime.stop(signal.SIGKILL)
