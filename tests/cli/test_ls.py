"""`asya ls`: the actors of a running `asya dev`, and dev.json.

The command runs as a user runs it (a subprocess) against a real `asya dev`; the pure
pieces (rendering, the metrics parser, counting processes) are checked on their own.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from asya_cli import dev_state, ls
from asya_cli.dev_plan import ProcessSpec
from asya_cli.dev_state import ActorState, DevState
from tests.cli.test_dev_and_send import EVERY_BROKER, only_broker_env
from tests.support.dev_process import serving
from tests.support.pipeline import HANDLERS
from tests.support.waiting import wait_until

ASYA = str(Path(sys.executable).with_name("asya"))
TIMEOUT_S = 120.0
GATE_ACTOR = """\
apiVersion: asya.sh/v1alpha1
kind: AsyncActor
metadata: {name: gate}
spec: {handler: gated.gate}
"""


def asya(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ASYA, *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=env,
        check=False,
    )


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def a_state(pid: int, actors: tuple[ActorState, ...] = ()) -> DevState:
    return DevState(
        pid=pid,
        transport="local",
        namespace="default",
        started_at="2026-01-01T00:00:00Z",
        gateway=None,
        actors=actors,
    )


def row(actor: str, *, crew: bool = False, status: str = ls.READY, **kw: Any) -> ls.ActorRow:
    fields: dict[str, Any] = {"depth": 0, "in_flight": 0, "running": 2, "processes": 2}
    fields.update(kw)
    return ls.ActorRow(
        actor=actor, crew=crew, queue=f"asya-default-{actor}", status=status, **fields
    )


# The pure pieces.


def test_plain_table_aligns_columns_and_marks_the_crew() -> None:
    text = ls.render_plain(
        [row("classify", depth=12, in_flight=3), row("x-sink", crew=True, status=ls.DOWN,
                                                     depth=None, in_flight=None, running=0)]
    )  # fmt: skip

    assert text.splitlines() == [
        "NAME           QUEUE  IN-FLIGHT  PROCESSES    STATUS",
        "classify       12     3          2/2 running  ready",
        "x-sink (crew)  -      -          0/2 running  down",
    ]


def test_on_a_terminal_the_table_is_drawn_by_rich_under_a_title() -> None:
    out = io.StringIO()

    ls.print_rich(a_state(42), [row("prep"), row("x-join", crew=True, status=ls.DOWN)], out)

    text = out.getvalue()
    assert text.startswith("asya dev (pid 42) on local, namespace default\n")
    assert "┃ NAME" in text
    assert "│ prep " in text
    assert "│ x-join (crew) " in text
    assert "down" in text


def test_json_has_one_object_per_actor_with_the_documented_keys() -> None:
    [found] = json.loads(ls.render_json([row("prep", depth=None, in_flight=1, running=1)]))

    assert found == {
        "actor": "prep",
        "crew": False,
        "queue": "asya-default-prep",
        "depth": None,
        "in_flight": 1,
        "processes": {"running": 1, "total": 2},
        "status": "ready",
    }


def test_user_actors_come_before_the_crew_in_their_own_order() -> None:
    rows = [row("x-sink", crew=True), row("b"), row("x-join", crew=True), row("a")]

    assert [r.actor for r in ls.ordered(rows)] == ["b", "a", "x-sink", "x-join"]


def test_metrics_give_in_flight_and_whether_the_runtime_answers() -> None:
    text = (
        "# HELP asya_sidecar_envelopes_in_flight Envelopes being processed right now.\n"
        "# TYPE asya_sidecar_envelopes_in_flight gauge\n"
        'asya_sidecar_envelopes_in_flight{actor="a"} 3.0\n'
        "# HELP asya_sidecar_runtime_up 1 while the runtime answers, 0 otherwise.\n"
        "# TYPE asya_sidecar_runtime_up gauge\n"
        'asya_sidecar_runtime_up{actor="a"} 0.0\n'
    )

    assert ls.parse_metrics(text) == (3, False)
    assert ls.parse_metrics("<html>not metrics</html>") == (None, None)


def test_status_and_processes_follow_what_the_sidecar_answered() -> None:
    up = ls.SidecarReport(healthy=True, in_flight=0, runtime_up=True)
    starting = ls.SidecarReport(healthy=False, in_flight=0, runtime_up=False)
    silent = ls.SidecarReport(healthy=None, in_flight=None, runtime_up=None)

    assert [ls.status_of(r) for r in (up, starting, silent)] == ["ready", "not ready", "down"]
    assert ls.running_processes([True, True], silent) == 2
    assert ls.running_processes([False, False], silent) == 0
    # Restarted by `asya dev` under new pids: the recorded ones are gone, yet both serve.
    assert ls.running_processes([False, False], up) == 2
    assert ls.running_processes([True, False], starting) == 1


def test_dev_state_is_described_from_the_plan_with_the_crew_marked(tmp_path: Path) -> None:
    def sidecar(actor: str, port: int, concurrency: str) -> ProcessSpec:
        return ProcessSpec(actor=actor, role="sidecar", argv=("x",), cwd="/",
                           env={"ASYA_CONCURRENCY": concurrency}, health_port=port)  # fmt: skip

    specs = [
        ProcessSpec(actor="prep", role="runtime", argv=("x",), env={}, cwd="/"),
        sidecar("prep", 4001, "4"),
        sidecar("x-sink", 4002, "1"),
    ]
    pids = {"prep/sidecar": 11, "prep/runtime": 12, "x-sink/sidecar": 21, "x-sink/runtime": 22}

    state = dev_state.describe(specs, owner_pid=7, transport="local", namespace="ns",
                               started_at="t", gateway=None, pid_of=pids.__getitem__)  # fmt: skip
    dev_state.write(tmp_path, state)

    assert dev_state.read(tmp_path) == state
    assert [(a.name, a.crew, a.concurrency, a.metrics_url, a.pids) for a in state.actors] == [
        ("prep", False, 4, "http://127.0.0.1:4001", (11, 12)),
        ("x-sink", True, 1, "http://127.0.0.1:4002", (21, 22)),
    ]


def test_a_damaged_state_file_names_the_field(tmp_path: Path) -> None:
    data = a_state(os.getpid()).to_json()
    data["actors"] = [{"name": "a", "crew": "yes", "concurrency": 1, "metrics_url": "u",
                       "pids": []}]  # fmt: skip
    dev_state.state_file(tmp_path).write_text(json.dumps(data))

    with pytest.raises(dev_state.DevStateInvalid, match=r"actors\[0\]\.crew must be true or"):
        dev_state.read(tmp_path)


# The command, without `asya dev`.


def test_without_a_running_dev_it_exits_1_and_says_what_to_do(tmp_path: Path) -> None:
    done = asya(ls.COMMAND, "--state-dir", str(tmp_path))

    assert done.returncode == 1
    assert done.stdout == ""
    assert f"no `asya dev` running with state dir {tmp_path}" in done.stderr
    assert "start one, or pass the --state-dir" in done.stderr


def test_the_file_of_a_dev_that_died_is_reported_as_stale(tmp_path: Path) -> None:
    pid = dead_pid()
    dev_state.write(tmp_path, a_state(pid))

    done = asya(ls.COMMAND, "--state-dir", str(tmp_path), "--json")

    assert done.returncode == 1
    assert f"(pid {pid}, started 2026-01-01T00:00:00Z) is no longer running" in done.stderr
    assert done.stdout == ""


def test_a_sidecar_that_never_answers_shows_down_without_holding_the_command(
    tmp_path: Path,
) -> None:
    # Accepts connections (the kernel does, from the backlog) and never says a word.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        gone = dead_pid()
        actor = ActorState(name="mute", crew=False, concurrency=1,
                           metrics_url=f"http://127.0.0.1:{port}", pids=(gone, gone))  # fmt: skip
        dev_state.write(tmp_path, a_state(os.getpid(), (actor,)))

        started = time.monotonic()
        done = asya(ls.COMMAND, "--state-dir", str(tmp_path), "--json")
        took = time.monotonic() - started

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [{
        "actor": "mute", "crew": False, "queue": "asya-default-mute",
        "depth": None,  # the local broker has no such queue
        "in_flight": None,
        "processes": {"running": 0, "total": 2},
        "status": "down",
    }]  # fmt: skip
    # Sidecar timeouts are 1.5 s per request; the rest is starting Python.
    assert took < 15, f"took {took:.1f}s"


# Against a real `asya dev`.


@dataclass
class Dev:
    proc: subprocess.Popen[str]
    state_dir: Path
    env: dict[str, str]
    lines: list[str] = field(default_factory=list)

    def output(self) -> str:
        return "".join(self.lines[-60:])

    def asya(self, *args: str) -> subprocess.CompletedProcess[str]:
        return asya(*args, "--state-dir", str(self.state_dir), env=self.env)

    def actors(self) -> dict[str, dict[str, Any]]:
        done = self.asya(ls.COMMAND, "--json")
        assert done.returncode == 0, done.stderr
        return {found["actor"]: found for found in json.loads(done.stdout)}


@pytest.fixture(
    scope="module",
    params=EVERY_BROKER,
)
def dev(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    environ = only_broker_env(request, request.param)
    tmp = tmp_path_factory.mktemp("ls")
    (tmp / "actors.yaml").write_text(GATE_ACTOR)
    state_dir = tmp / "state"
    proc = subprocess.Popen(
        [ASYA, "dev", str(tmp / "actors.yaml"), "--state-dir", str(state_dir),
         "--gateway-port", "0", "--app-dir", str(HANDLERS), "--transport", request.param,
         "--namespace", f"ls{uuid.uuid4().hex[:6]}"],
        cwd=HANDLERS, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    running = Dev(proc, state_dir, environ)
    with serving(proc, running.lines):
        yield running
    # Gone with it, so that the command does not report a pipeline nobody runs.
    assert not dev_state.state_file(state_dir).exists()


@pytest.mark.slow
def test_lists_every_actor_with_the_crew_last_in_a_plain_table(dev: Dev) -> None:
    done = dev.asya(ls.COMMAND)  # stdout is a pipe here, so the plain table

    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split() == ["NAME", "QUEUE", "IN-FLIGHT", "PROCESSES", "STATUS"]
    assert [r.split()[0] for r in rows] == ["gate", "x-sink", "x-sump", "x-join", "x-pause"]
    # Pub/Sub's API does not tell a subscription's backlog: the depth is unknown, and said so.
    depth = "-" if dev_state.read(dev.state_dir).transport == "pubsub" else "0"
    if depth == "-":
        assert "queue depths unknown: Pub/Sub does not say" in done.stderr
    assert all(r.split()[1:] == ["(crew)", depth, "0", "2/2", "running", "ready"]
               for r in rows[1:]), done.stdout  # fmt: skip
    assert rows[0].split()[1:] == [depth, "0", "2/2", "running", "ready"], done.stdout


@pytest.mark.slow
def test_shows_the_backlog_and_the_envelope_being_processed(dev: Dev, tmp_path: Path) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    payload = json.dumps({"started": str(started), "release": str(release)})
    running = dev_state.read(dev.state_dir)  # which transport and namespace it uses
    knows_depth = running.transport != "pubsub"  # see the test above
    for _ in range(3):
        sent = dev.asya("send", "gate", "--payload", payload, "--transport", running.transport,
                        "--namespace", running.namespace)  # fmt: skip
        assert sent.returncode == 0, sent.stderr

    def backlog() -> dict[str, Any] | None:
        gate = dev.actors()["gate"]
        waiting = gate["depth"] >= 1 if knows_depth else gate["depth"] is None
        return gate if gate["in_flight"] == 1 and waiting else None

    gate = wait_until(backlog, what="gate holding one envelope with more waiting",
                      timeout=TIMEOUT_S, interval=0.2, details=dev.output)  # fmt: skip
    assert gate is not None
    assert gate["status"] == "ready"
    release.write_text("go")

    def drained() -> dict[str, Any] | None:
        gate = dev.actors()["gate"]
        empty = gate["depth"] == 0 if knows_depth else gate["depth"] is None
        return gate if gate["in_flight"] == 0 and empty else None

    wait_until(drained, what="gate's queue drained", timeout=TIMEOUT_S, interval=0.2,
               details=dev.output)  # fmt: skip
