"""`asya dev` with its gateway, driven by the task commands as a user runs them.

One `asya dev` (the embedded transport, real runtimes, sidecars, crew and gateway processes)
serves the test handlers; every command is a subprocess that finds the gateway through the
URL `asya dev` wrote into its state directory, as it would in a user's shell.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.asya_dev import GREET_FLOW, TIMEOUT_S, Dev, actors, running_dev
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

ACTORS = actors(a="flow.mark_a", b="flow.mark_b", boom="flow.boom", gate="gated.gate")
FLOWS = "flows:\n" + GREET_FLOW


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    tmp = tmp_path_factory.mktemp("gateway-dev")
    with running_dev(tmp, {"actors.yaml": ACTORS, "flows.yaml": FLOWS}) as running:
        yield running


def test_the_ready_line_names_the_gateway_and_the_state_dir_holds_its_url(dev: Dev) -> None:
    assert (dev.state_dir / "gateway.url").read_text().strip() == dev.url
    assert (dev.state_dir / "gateway.db").exists()


def test_submit_and_wait_prints_the_final_task_and_exits_0(dev: Dev) -> None:
    result = dev.asya("submit", "a,b", "--payload", '{"trail": []}', "--wait", "60")

    assert result.returncode == 0, result.stderr
    task = json.loads(result.stdout)
    assert task["status"] == "succeeded"
    assert task["result"] == {"trail": ["a", "b"]}
    assert task["progress"] == 1.0
    assert task["route"]["prev"] == ["a", "b"]

    got = dev.asya("get", task["id"], "--json")
    listed = dev.asya("tasks", "--status", "succeeded", "--json")

    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == task
    assert task["id"] in [t["id"] for t in json.loads(listed.stdout)["tasks"]]


def test_a_named_flow_from_the_flows_yaml_under_path(dev: Dev) -> None:
    good = dev.asya("submit", "--flow", "greet", "--payload", '{"name": "Ann"}', "--wait", "60")
    bad = dev.asya("submit", "--flow", "greet", "--payload", '{"name": 7}')

    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["result"] == {"name": "Ann", "trail": ["a", "b"]}
    assert bad.returncode == 2
    assert "$.name" in bad.stderr


def test_a_failing_task_exits_1_with_its_error(dev: Dev) -> None:
    result = dev.asya("submit", "boom", "--payload", '{"x": 1}', "--wait", "60")

    assert result.returncode == 1, result.stderr
    task = json.loads(result.stdout)
    assert task["status"] == "failed"
    assert task["error"]["type"] == "flow.BadInput"


def test_a_task_that_only_x_sump_ends_fails_at_once(dev: Dev) -> None:
    # `a` runs, then routes to an actor that does not exist: x-sump, not x-sink, ends it, and
    # the wait must end with it instead of running out.
    result = dev.asya("submit", "a,nobody-here", "--payload", '{"trail": []}', "--wait", "60")

    assert result.returncode == 1, result.stdout + result.stderr
    assert "UnknownActor" in result.stdout + result.stderr


def test_watch_follows_a_task_until_it_ends(dev: Dev, tmp_path: Path) -> None:
    payload = gate_payload(tmp_path)
    task_id = submit(dev, "gate,a", payload)
    watch = dev.spawn("watch", task_id)
    lines = LineReader(watch)

    first = lines.next()
    assert re.fullmatch(r"status (pending|running)  actor=gate  progress=0%", first), first
    Path(payload["release"]).touch()
    rest = lines.until_end()

    assert watch.wait(TIMEOUT_S) == 0, watch.stderr.read() if watch.stderr else ""
    assert rest[-1] == "status succeeded  actor=x-sink  progress=100%"


def test_cancel_a_task_parked_at_a_slow_handler(dev: Dev, tmp_path: Path) -> None:
    payload = gate_payload(tmp_path)
    task_id = f"cancel-{uuid.uuid4().hex[:8]}"
    waiting = dev.spawn("submit", "gate,a", "--payload", json.dumps(payload), "--id", task_id,
                        "--wait", "90")  # fmt: skip
    wait_until(lambda: Path(payload["started"]).exists(), what="the gate handler to start",
               timeout=TIMEOUT_S, details=dev.output)  # fmt: skip

    canceled = dev.asya("cancel", task_id, "--json")

    assert canceled.returncode == 0, canceled.stderr
    assert json.loads(canceled.stdout)["status"] == "canceled"
    out, err = waiting.communicate(timeout=TIMEOUT_S)
    assert waiting.returncode == 1, err
    assert json.loads(out)["status"] == "canceled"
    # Once a's sidecar has learned of it, let the gate go: a's handler must not run.
    wait_until(lambda: dev.line_matching(r"^\[a/sidecar\] .*the gateway canceled"),
               what="a's sidecar to learn of the cancellation", timeout=TIMEOUT_S,
               details=dev.output)  # fmt: skip
    Path(payload["release"]).touch()
    record = wait_until(lambda: dev.result(task_id), what="x-sink's record", timeout=TIMEOUT_S,
                        details=dev.output)  # fmt: skip
    assert record is not None
    assert record["status"]["phase"] == "canceled"
    assert record["status"]["reason"] == "Canceled"
    assert record["payload"]["trail"] == ["gate"]  # a never ran
    assert not list((dev.state_dir / "sump").glob(f"{task_id}*"))
    again = dev.asya("cancel", task_id, "--json")
    assert again.returncode == 0
    assert json.loads(dev.asya("get", task_id, "--json").stdout)["status"] == "canceled"


def test_cancel_a_finished_task_exits_1(dev: Dev) -> None:
    done = json.loads(dev.asya("submit", "a", "--payload", "{}", "--wait", "60").stdout)

    result = dev.asya("cancel", done["id"])

    assert result.returncode == 1
    assert "already succeeded" in result.stderr


# --- helpers --------------------------------------------------------------------------------


def gate_payload(tmp_path: Path) -> dict[str, str]:
    return {"started": str(tmp_path / "started"), "release": str(tmp_path / "release")}


def submit(dev: Dev, route: str, payload: Any) -> str:
    result = dev.asya("submit", route, "--payload", json.dumps(payload))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


class LineReader:
    """The lines a process prints, read on a thread so a test can wait for them."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.read = 0
        self.done = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
        self.done.set()

    def next(self) -> str:
        wait_until(lambda: len(self.lines) > self.read or self.done.is_set(),
                   what="a line from asya watch", timeout=TIMEOUT_S)  # fmt: skip
        assert len(self.lines) > self.read, "asya watch ended early"
        self.read += 1
        return self.lines[self.read - 1]

    def until_end(self) -> list[str]:
        wait_until(self.done.is_set, what="asya watch to end", timeout=TIMEOUT_S)
        rest = self.lines[self.read :]
        self.read = len(self.lines)
        return rest
