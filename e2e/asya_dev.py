"""`asya dev` as a user runs it, for the end-to-end tests: started on a directory of
manifests in its own process, its output followed, its ready line and gateway URL read, and
stopped with Ctrl-C (which must end it cleanly). Commands run as subprocesses that find the
gateway through the URL `asya dev` wrote into its state directory.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.dev_process import serving
from tests.support.pipeline import HANDLERS
from tests.support.waiting import wait_until

__all__ = ["ASYA", "GREET_FLOW", "TIMEOUT_S", "Dev", "actors", "cli_env", "running_dev"]

ASYA = str(Path(sys.executable).with_name("asya"))
READY = re.compile(r"asya dev: ready: .*; gateway (http://127\.0\.0\.1:\d+)$")
# Generous: the machine is shared, and only a failing test waits this long.
TIMEOUT_S = 120.0
# A flows.yaml entry: the two marks of tests/sidecar/handlers/flow.py, with an input schema.
GREET_FLOW = """\
  - name: greet
    route: [a, b]
    description: Both marks, in order.
    input_schema:
      type: object
      required: [name]
      properties: {name: {type: string}}
"""


def actors(**handlers: str) -> str:
    """AsyncActor manifests, one per `name=handler`, as one YAML file's text."""
    return "---\n".join(
        "apiVersion: asya.sh/v1alpha1\n"
        "kind: AsyncActor\n"
        f"metadata: {{name: {name}}}\n"
        f"spec: {{handler: {handler}}}\n"
        for name, handler in handlers.items()
    )


@dataclass
class Dev:
    proc: subprocess.Popen[str]
    state_dir: Path
    lines: list[str] = field(default_factory=list)
    url: str = ""

    def output(self) -> str:
        return "".join(self.lines[-60:])

    def line_matching(self, pattern: str) -> str | None:
        found = re.compile(pattern)
        return next((line for line in list(self.lines) if found.search(line)), None)

    def asya(self, *args: str, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [ASYA, *args, "--state-dir", str(self.state_dir)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=cli_env(),
            check=False,
        )

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [ASYA, *args, "--state-dir", str(self.state_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(),
        )

    def task(self, task_id: str) -> dict[str, Any]:
        """`asya get ID --json`: the task as the gateway shows it."""
        done = self.asya("get", task_id, "--json")
        assert done.returncode == 0, done.stderr
        found: dict[str, Any] = json.loads(done.stdout)
        return found

    def wait_status(self, task_id: str, *statuses: str) -> dict[str, Any]:
        """The task once its status is one of `statuses` (polled with `asya get`)."""

        def reached() -> dict[str, Any] | None:
            found = self.task(task_id)
            return found if found["status"] in statuses else None

        found = wait_until(reached, what=f"task {task_id} {'/'.join(statuses)}",
                           timeout=TIMEOUT_S, interval=0.1, details=self.output)  # fmt: skip
        assert found is not None
        return found

    def result(self, task_id: str) -> dict[str, Any] | None:
        path = self.state_dir / "results" / f"{task_id}.json"
        try:
            found: dict[str, Any] = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):  # not there yet, or being written
            return None
        return found


def cli_env() -> dict[str, str]:
    """A user's shell: no gateway or key exported, so the commands use the state dir's URL."""
    return {k: v for k, v in os.environ.items() if k not in ("ASYA_GATEWAY_URL", "ASYA_API_KEY")}


@contextmanager
def running_dev(tmp: Path, files: Mapping[str, str], *args: str) -> Iterator[Dev]:
    """`asya dev` on `tmp` holding `files` (name: text), its state under tmp/state, the
    gateway on a free port, handlers from tests/sidecar/handlers; `args` go to `asya dev`
    (`--transport rabbitmq`, say)."""
    for name, text in files.items():
        (tmp / name).write_text(text)
    environ = {k: v for k, v in cli_env().items() if not k.startswith("ASYA_")}
    proc = subprocess.Popen(
        [
            ASYA,
            "dev",
            str(tmp),
            "--state-dir",
            str(tmp / "state"),
            "--gateway-port",
            "0",
            "--app-dir",
            str(HANDLERS),
            *args,
        ],
        cwd=HANDLERS,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    running = Dev(proc, tmp / "state")
    with serving(proc, running.lines) as line:
        match = READY.search(line)
        assert match is not None, line
        running.url = match.group(1)
        yield running
    # Gone with the gateway, so that no later command talks to a port nobody serves.
    assert not (running.state_dir / "gateway.url").exists()
