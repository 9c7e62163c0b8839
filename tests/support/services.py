"""Real services as child processes: moto in server mode (SQS, S3) and Google's Pub/Sub
emulator. Each runs on a free loopback port for the whole session and can be killed and
started again on the same port, which is how the transport tests take a broker away.

A service that cannot start fails the test loudly with its output; nothing is skipped.
The classes here do not need pytest, so the benches start the same services the same way.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import waiting

START_DEADLINE_S = 90.0
AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    """A loopback port nobody listens on now (the suite's one source of free ports)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


class ServiceFailed(RuntimeError):
    """A service did not come up; the message carries its output."""


class ServiceProcess:
    def __init__(self, name: str, argv: Callable[[int], list[str]], *, cwd: Path | None = None):
        self.name = name
        self.port = free_port()
        self._argv = argv
        self._cwd = cwd
        # A file, not a pipe: these servers log every request and a full pipe would stall them.
        self._log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - lives as long as we do
        self._proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self._proc = subprocess.Popen(
            self._argv(self.port),
            cwd=self._cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # so stop() can take its children down too
        )
        proc = self._proc

        def listening() -> bool:
            if proc.poll() is not None:
                raise ServiceFailed(f"{self.name} exited with {proc.returncode}")
            return port_open(self.port)

        try:
            waiting.wait_until(
                listening, what=f"port {self.port}", timeout=START_DEADLINE_S, interval=0.1
            )
        except (AssertionError, ServiceFailed) as exc:
            output = self.output()
            self.stop()
            raise ServiceFailed(
                f"{self.name} did not start on port {self.port} ({exc}):\n{output}"
            ) from exc

    def stop(self) -> None:
        """Kill it as a crash would (SIGKILL to the whole process group)."""
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait()
        self._proc = None
        # Its port must be free again before a restart may bind it.
        waiting.wait_until(
            lambda: not port_open(self.port),
            what=f"port {self.port} to close after {self.name} was killed",
            timeout=30,
        )

    def restart(self) -> None:
        self.stop()
        self.start()

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read()[-5000:]


def run_python(python: Path, code: str, *args: str, doing: str) -> str:
    """Run `code` with another venv's interpreter (a model server's) and return its output;
    ServiceFailed with everything it printed when it fails."""
    done = subprocess.run(
        [str(python), "-c", code, *args], capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode != 0:
        raise ServiceFailed(
            f"{doing} with {python} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        )
    return done.stdout


def pubsub_emulator_argv(port: int) -> list[str]:
    try:
        sdk_root = subprocess.run(
            ["gcloud", "info", "--format=value(installation.sdk_root)"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise ServiceFailed(
            f"the Pub/Sub emulator needs the Google Cloud CLI (gcloud): {exc}"
        ) from exc
    script = Path(sdk_root) / "platform" / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator"
    if not script.exists():
        raise ServiceFailed(
            f"{script} is missing: install the Debian package google-cloud-cli-pubsub-emulator"
        )
    return [str(script), "--host=127.0.0.1", f"--port={port}"]


def moto_argv(port: int) -> list[str]:
    return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]


@pytest.fixture(scope="session")
def moto_server() -> Iterator[ServiceProcess]:
    service = ServiceProcess("moto server", moto_argv)
    service.start()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def pubsub_emulator() -> Iterator[ServiceProcess]:
    service = ServiceProcess("Pub/Sub emulator", pubsub_emulator_argv)
    service.start()
    yield service
    service.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Dummy credentials so nothing can reach a real AWS account."""
    for name, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    missing = str(Path(tempfile.gettempdir()) / "asya-no-such-aws-file")
    monkeypatch.setenv("AWS_CONFIG_FILE", missing)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", missing)
    return dict(AWS_TEST_ENV)
