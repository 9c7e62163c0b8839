"""`asya dev` and `asya send` run as a user runs them: subprocesses, real pipelines."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.pipeline import HANDLERS
from tests.support.services import AWS_TEST_ENV

pytestmark = pytest.mark.slow

ASYA = str(Path(sys.executable).with_name("asya"))
ACTORS = """\
apiVersion: asya.sh/v1alpha1
kind: AsyncActor
metadata: {name: ok}
spec: {handler: flow.mark_a}
---
apiVersion: asya.sh/v1alpha1
kind: AsyncActor
metadata: {name: boom}
spec: {handler: flow.boom}
---
apiVersion: asya.sh/v1alpha1
kind: AsyncActor
metadata: {name: slow}
spec: {handler: flow.hold}
"""


class Dev:
    def __init__(
        self,
        proc: subprocess.Popen[str],
        lines: queue.Queue[str],
        args: list[str],
        env: dict[str, str] | None,
    ):
        self.proc, self.lines, self.args, self.env = proc, lines, args, env
        self.output: list[str] = []

    def wait_for_line(self, fragment: str, timeout: float = 90) -> str:
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(
                    f"no line with {fragment!r}:\n{''.join(self.output)}"
                ) from None
            self.output.append(line)
            if fragment in line:
                return line

    def send(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [ASYA, "send", *args, *self.args],
            capture_output=True,
            text=True,
            timeout=120,
            input=stdin,
            cwd=HANDLERS,
            env=self.env,
            check=False,
        )


def start_dev(manifest: Path, args: list[str], env: dict[str, str] | None = None) -> Dev:
    proc = subprocess.Popen(
        [ASYA, "dev", str(manifest), "--app-dir", str(HANDLERS), *args],
        cwd=HANDLERS,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return followed(proc, args, env)


def followed(proc: subprocess.Popen[str], args: list[str], env: dict[str, str] | None) -> Dev:
    """`asya dev` running in `proc`, its output read on a thread as it comes."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return Dev(proc, lines, args, env)


# Every transport a pipeline can run on, marked so that a run can leave out a broker.
EVERY_BROKER = [
    "local",
    pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
    pytest.param("sqs", marks=pytest.mark.sqs),
    pytest.param("pubsub", marks=pytest.mark.pubsub),
]


def only_broker_env(request: pytest.FixtureRequest, kind: str) -> dict[str, str]:
    """`broker_env` without the ASYA_* settings of the environment the tests run in (a state
    dir, a gateway URL): only those that point at the broker."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ASYA_")}
    return {**clean, **broker_settings(request, kind)}


def broker_env(request: pytest.FixtureRequest, kind: str) -> dict[str, str]:
    """The environment a user would export to point `asya dev` and `asya send` at a broker."""
    return {**os.environ, **broker_settings(request, kind)}


def broker_settings(request: pytest.FixtureRequest, kind: str) -> dict[str, str]:
    """The variables that point `asya dev` and `asya send` at the test's broker."""
    if kind == "rabbitmq":
        return {"ASYA_RABBITMQ_URL": request.getfixturevalue("rabbitmq_url")}
    if kind == "sqs":
        return {**AWS_TEST_ENV, "ASYA_SQS_ENDPOINT": request.getfixturevalue("moto_server").url}
    if kind == "pubsub":
        return {
            "PUBSUB_EMULATOR_HOST": request.getfixturevalue("pubsub_emulator").host,
            "ASYA_PUBSUB_PROJECT": "asya-cli-test",
        }
    return {}


@pytest.fixture(
    scope="module",
    params=EVERY_BROKER,
)
def dev(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    env = broker_env(request, request.param)
    tmp = tmp_path_factory.mktemp("dev")
    manifest = tmp / "actors.yaml"
    manifest.write_text(ACTORS)
    args = [
        "--transport",
        request.param,
        "--state-dir",
        str(tmp / "state"),
        "--namespace",
        f"cli{uuid.uuid4().hex[:6]}",
    ]
    running = start_dev(manifest, args, env)
    running.wait_for_line("asya dev: ready")
    yield running
    running.proc.send_signal(signal.SIGINT)
    assert running.proc.wait(timeout=60) == 0
    running.wait_for_line("asya dev: stopped")


def test_send_prints_the_new_id(dev: Dev) -> None:
    result = dev.send("ok", "--payload", "{}")

    assert result.returncode == 0, result.stderr
    uuid.UUID(result.stdout.strip())


def test_wait_prints_the_final_envelope_and_exits_0(dev: Dev, tmp_path: Path) -> None:
    payload = tmp_path / "payload.json"
    payload.write_text('{"from": "a file", "trail": []}')

    result = dev.send(
        "ok", "--payload", f"@{payload}", "--wait", "60", "--header", "x-t=1", "--id", "fixed-id"
    )

    assert result.returncode == 0, result.stderr
    final = json.loads(result.stdout)
    assert final["id"] == "fixed-id"
    assert final["status"]["phase"] == "succeeded"
    assert final["payload"] == {"from": "a file", "trail": ["a"]}
    assert final["headers"]["x-t"] == "1"


def test_wait_on_a_failure_exits_1(dev: Dev) -> None:
    result = dev.send("boom", "--payload", "-", "--wait", "60", stdin='{"x": 1}')

    assert result.returncode == 1
    final = json.loads(result.stdout)
    assert final["status"]["phase"] == "failed"
    assert final["status"]["error"]["type"] == "flow.BadInput"
    assert "failed at boom: HandlerError (flow.BadInput:" in result.stderr


def test_wait_ends_at_once_for_an_envelope_that_only_x_sump_holds(dev: Dev) -> None:
    # `ok` runs, then its result is routed to an actor that does not exist: the sidecar hands
    # the envelope to x-sump (UnknownActor), and x-sink never sees it.
    result = dev.send("ok,nobody-here", "--payload", "{}", "--wait", "60")

    assert result.returncode == 1, result.stderr
    final = json.loads(result.stdout)
    assert final["status"]["reason"] == "UnknownActor"
    assert "UnknownActor" in result.stderr


def test_wait_that_runs_out_exits_2(dev: Dev) -> None:
    result = dev.send("slow", "--payload", '{"hold_s": 5}', "--wait", "0.5")

    assert result.returncode == 2
    assert "no result for" in result.stderr


def test_unknown_actor_exits_3(dev: Dev) -> None:
    result = dev.send("nobody,ok", "--payload", "{}")

    assert result.returncode == 3
    assert "asya-" in result.stderr
    assert "nobody" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ok", "--payload", "{not json"], "--payload is not valid JSON"),
        (["ok", "--payload", "@/does/not/exist.json"], "cannot read payload file"),
        (["Bad_Name", "--payload", "{}"], "not a DNS label"),
        (["ok,", "--payload", "{}"], "must be actor names"),
        (["ok", "--payload", "{}", "--header", "novalue"], "KEY=VALUE"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(dev: Dev, args: list[str], message: str) -> None:
    result = dev.send(*args)

    assert result.returncode == 2
    assert message in result.stderr


def test_dev_with_a_handler_that_cannot_load_stops_and_says_why(tmp_path: Path) -> None:
    manifest = tmp_path / "broken.yaml"
    manifest.write_text(
        "apiVersion: asya.sh/v1alpha1\nkind: AsyncActor\n"
        "metadata: {name: broken}\nspec: {handler: flow.no_such_function}\n"
    )

    running = start_dev(manifest, ["--state-dir", str(tmp_path / "state")])
    code = running.proc.wait(timeout=90)
    output = "".join(running.output) + "".join(iter_lines(running))

    assert code == 1
    assert "broken/runtime exited with code 3" in output
    assert "no attribute 'no_such_function'" in output


def test_dev_with_bad_manifests_exits_2(tmp_path: Path) -> None:
    manifest = tmp_path / "bad.yaml"
    manifest.write_text("apiVersion: asya.sh/v1alpha1\nkind: AsyncActor\nmetadata: {name: x}\n")

    result = subprocess.run(
        [ASYA, "dev", str(manifest)], capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 2
    assert "has no spec" in result.stderr


def iter_lines(running: Dev) -> Iterator[str]:
    while not running.lines.empty():
        yield running.lines.get_nowait()


def test_a_project_as_a_newcomer_runs_it(tmp_path: Path) -> None:
    """`asya dev .` in a project: the handler next to its manifest is imported wherever the
    command runs from, a copy of the manifest in the state dir or a hidden directory is not
    read, `asya send` finds the state dir from a subdirectory, and each finished envelope
    gets a line."""
    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)
    (project / "pipeline").mkdir()
    (project / "pipeline" / "steps.py").write_text(
        "def shout(payload):\n    return {**payload, 'text': payload['text'].upper()}\n"
    )
    manifest = (
        "apiVersion: asya.sh/v1alpha1\nkind: AsyncActor\n"
        "metadata: {name: shout}\nspec: {handler: steps.shout}\n"
    )
    (project / "pipeline" / "actors.yaml").write_text(manifest)
    for elsewhere in (".asya", ".cache"):  # would define `shout` twice if they were read
        (project / elsewhere).mkdir()
        (project / elsewhere / "copy.yaml").write_text(manifest)
    environ = {k: v for k, v in os.environ.items() if k != "ASYA_STATE_DIR"}
    proc = subprocess.Popen(
        [ASYA, "dev", ".", "--gateway-port", "0"],
        cwd=project,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    running = followed(proc, [], environ)
    try:
        running.wait_for_line("asya dev: ready")
        deep = project / "pipeline"
        sent = subprocess.run(
            [ASYA, "send", "shout", "--payload", '{"text": "hi"}', "--wait", "60", "--id", "n-1"],
            cwd=deep, env=environ, capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip

        assert sent.returncode == 0, sent.stderr
        assert json.loads(sent.stdout)["payload"] == {"text": "HI"}
        line = running.wait_for_line("asya dev: n-1 ")
        assert "n-1 succeeded in " in line
        assert line.rstrip().endswith(": shout")
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    assert (project / ".asya" / "results" / "n-1.json").exists()
