"""The task commands (`asya submit`, `get`, `ls`, `watch`, `cancel`, `resume`) against a
real gateway.

The gateway is the real one (GatewayServer: uvicorn on free ports, SQLite, the local
transport) running in a thread of this process; the commands run in process through
`asya_cli.main.main` when only their result matters, and as subprocesses (as a user runs
them) when a test must interleave with them: `--wait` and `watch` while the test posts the
hop reports a sidecar would post to the internal port.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import queue
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import asya_transports as transports
from asya_cli import gateway_client, sse, tasks
from asya_cli.dev_plan import gateway_url_file
from asya_cli.local_pipeline import free_ports
from asya_cli.main import main
from asya_gateway.server import GatewayServer, GatewaySettings
from asya_gateway.store.urls import sqlite_url
from asya_shared import names
from tests.gateway.gateway_fixtures import report
from tests.support.waiting import wait_until

ASYA = str(Path(sys.executable).with_name("asya"))
NAMESPACE = "cli"
ACTORS = ("a", "b")
FLOWS = """\
flows:
  - name: greet
    route: [a, b]
    timeout: 5m
    input_schema:
      type: object
      required: [name]
      properties: {name: {type: string}}
"""
KEY = "secret-key-of-acme"
# Generous: other test runs share the machine.
PROCESS_TIMEOUT_S = 60.0


@dataclass
class Gateway:
    url: str
    internal_url: str
    state_dir: Path

    def post_reports(self, *reports: Any) -> None:
        response = httpx.post(
            f"{self.internal_url}/internal/v1/reports", json={"reports": list(reports)}, timeout=30
        )
        assert response.status_code == 200, response.text

    def task(self, task_id: str, api_key: str | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        response = httpx.get(f"{self.url}/v1/tasks/{task_id}", headers=headers, timeout=30)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result


@contextmanager
def running_gateway(
    tmp: Path, *, keys_file: Path | None = None, ports: tuple[int, int] = (0, 0)
) -> Iterator[Gateway]:
    """A real gateway in a thread with its own event loop, on `ports` (0: free ones); its
    store is a SQLite file in `tmp`, so a second one started there finds the same tasks."""
    state_dir = tmp / "state"
    environ = {"ASYA_STATE_DIR": str(state_dir)}
    (tmp / "flows.yaml").write_text(FLOWS)
    asyncio.run(_ensure_queues(environ))
    settings = GatewaySettings(
        port=ports[0],
        internal_port=ports[1],
        store_url=sqlite_url(tmp / "gateway.db"),
        flows_file=str(tmp / "flows.yaml"),
        api_keys_file=None if keys_file is None else str(keys_file),
        namespace=NAMESPACE,
        transport="local",
    )
    started = threading.Event()
    holder: dict[str, Any] = {}

    async def life() -> None:
        server = GatewayServer(settings, environ)
        try:
            await server.start()
        except BaseException as exc:
            holder["error"] = exc
            started.set()
            raise
        holder["server"], holder["loop"] = server, asyncio.get_running_loop()
        started.set()
        await server.wait()

    thread = threading.Thread(target=asyncio.run, args=(life(),), daemon=True)
    thread.start()
    assert started.wait(PROCESS_TIMEOUT_S), "the gateway did not start"
    if "error" in holder:
        raise holder["error"]
    server: GatewayServer = holder["server"]
    try:
        yield Gateway(server.url, server.internal_url, state_dir)
    finally:
        holder["loop"].call_soon_threadsafe(server.stop)
        thread.join(PROCESS_TIMEOUT_S)
        assert not thread.is_alive(), "the gateway did not stop"


async def _ensure_queues(environ: dict[str, str]) -> None:
    async with transports.create("local", environ) as transport:
        for actor in (*ACTORS, *names.CREW):
            await transport.ensure_queue(names.queue_name(NAMESPACE, actor))


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with running_gateway(tmp_path_factory.mktemp("gateway")) as running:
        yield running


@pytest.fixture(autouse=True)
def no_gateway_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands read these; a developer's shell must not change what the tests see."""
    for name in ("ASYA_GATEWAY_URL", "ASYA_API_KEY", "ASYA_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def asya(capsys: pytest.CaptureFixture[str], gateway: Gateway) -> Any:
    """Run `asya ARGS --gateway URL` in this process; the exit code and the output."""

    def run(*args: str, url: str | None = gateway.url) -> Result:
        capsys.readouterr()
        argv = [*args, "--gateway", url] if url else list(args)
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse refusing the arguments
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def spawn(*args: str, gateway: Gateway) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [ASYA, *args, "--gateway", gateway.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def lines_of(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    return lines


def next_line(lines: queue.Queue[str], proc: subprocess.Popen[str]) -> str:
    try:
        return lines.get(timeout=PROCESS_TIMEOUT_S)
    except queue.Empty:
        proc.kill()
        raise AssertionError(f"no output line; stderr: {proc.communicate()[1]}") from None


def new_id() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


# --- submit ---------------------------------------------------------------------------------


def test_submit_prints_the_id_of_a_pending_task_on_its_route(asya: Any, gateway: Gateway) -> None:
    result = asya("submit", "a,b", "--payload", '{"x": 1}', "--header", "x-user=ann")

    assert result.code == 0, result.err
    task_id = result.out.strip()
    task = gateway.task(task_id)
    assert task["status"] == "pending"
    assert task["route"] == {"prev": [], "curr": "a", "next": ["b"]}


def test_submit_with_an_id_is_idempotent(asya: Any, gateway: Gateway) -> None:
    task_id = new_id()

    first = asya("submit", "a", "--payload", "{}", "--id", task_id, "--timeout", "5m")
    second = asya("submit", "a", "--payload", "{}", "--id", task_id)

    assert (first.code, second.code) == (0, 0)
    assert first.out.strip() == second.out.strip() == task_id
    assert gateway.task(task_id)["deadline_at"] is not None


def test_submit_reads_the_payload_from_a_file_or_stdin(
    asya: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = tmp_path / "payload.json"
    payload.write_text('{"from": "file"}')
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"from": "stdin"}'))

    from_file = asya("submit", "a", "--payload", f"@{payload}")
    from_stdin = asya("submit", "a", "--payload", "-")

    assert (from_file.code, from_stdin.code) == (0, 0), from_file.err + from_stdin.err


def test_submit_a_named_flow(asya: Any, gateway: Gateway) -> None:
    result = asya("submit", "--flow", "greet", "--payload", '{"name": "Ann"}')

    assert result.code == 0, result.err
    task = gateway.task(result.out.strip())
    assert task["route"]["curr"] == "a"
    assert task["deadline_at"] is not None  # the flow's timeout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["a", "--flow", "greet", "--payload", "{}"], "either ROUTE"),
        (["--payload", "{}"], "either ROUTE"),
        (["a", "--payload", "{not json"], "--payload is not valid JSON"),
        (["a", "--payload", "@/does/not/exist.json"], "cannot read payload file"),
        (["Bad_Name", "--payload", "{}"], "not a DNS label"),
        (["--flow", "greet", "--payload", '{"name": 1}'], "$.name"),
        (["--flow", "nope", "--payload", "{}"], "nope"),
        (["a", "--payload", "{}", "--timeout", "soon"], "not understood"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(asya: Any, args: list[str], message: str) -> None:
    result = asya("submit", *args)

    assert result.code == 2
    assert message in result.err
    assert result.out == ""


def test_an_actor_without_a_queue_cannot_be_submitted_to_exit_3(asya: Any) -> None:
    result = asya("submit", "ghost", "--payload", "{}")

    assert result.code == 3
    assert "ghost" in result.err
    assert result.err.count("\n") == 1  # one line


def test_an_unreachable_gateway_exits_3_naming_the_url_and_what_to_do(asya: Any) -> None:
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"

    result = asya("submit", "a", "--payload", "{}", url=url)

    assert result.code == 3
    assert url in result.err
    assert "asya dev" in result.err
    assert "--gateway" in result.err
    assert result.err.count("\n") == 1


def test_without_any_gateway_the_commands_say_how_to_name_one(asya: Any, tmp_path: Path) -> None:
    result = asya("get", "x", "--state-dir", str(tmp_path), url=None)

    assert result.code == 3
    assert "--gateway" in result.err
    assert "ASYA_GATEWAY_URL" in result.err
    assert "asya dev" in result.err


def test_the_gateway_comes_from_the_environment_else_from_the_state_dir(
    asya: Any, gateway: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_id = asya("submit", "a", "--payload", "{}").out.strip()
    gateway_url_file(tmp_path).write_text(gateway.url + "\n")

    from_state_dir = asya("get", task_id, "--state-dir", str(tmp_path), url=None)
    monkeypatch.setenv("ASYA_GATEWAY_URL", "http://127.0.0.1:9")  # wins over the file
    from_environment = asya("get", task_id, "--state-dir", str(tmp_path), url=None)

    assert from_state_dir.code == 0, from_state_dir.err
    assert from_state_dir.json()["id"] == task_id
    assert from_environment.code == 3
    assert "http://127.0.0.1:9 (from $ASYA_GATEWAY_URL)" in from_environment.err


def test_wait_prints_the_final_task_and_exits_0_once_it_succeeds(gateway: Gateway) -> None:
    task_id = new_id()
    proc = spawn("submit", "a,b", "--payload", '{"n": 1}', "--id", task_id, "--wait", "60",
                 gateway=gateway)  # fmt: skip
    wait_until(lambda: _exists(gateway, task_id), what="the submitted task", ignore=AssertionError)

    gateway.post_reports(
        report(task_id, "received", curr="a", next_=["b"]),
        report(task_id, "routed", prev=["a"], curr="b"),
        report(task_id, "succeeded", prev=["a", "b"], curr="x-sink", result={"n": 2}),
    )
    out, err = proc.communicate(timeout=PROCESS_TIMEOUT_S)

    assert proc.returncode == 0, err
    final = json.loads(out)
    assert final["id"] == task_id
    assert final["status"] == "succeeded"
    assert final["result"] == {"n": 2}
    assert final["progress"] == 1.0


def test_wait_exits_1_when_the_task_fails(gateway: Gateway) -> None:
    task_id = new_id()
    proc = spawn("submit", "a", "--payload", "{}", "--id", task_id, "--wait", "60",
                 gateway=gateway)  # fmt: skip
    wait_until(lambda: _exists(gateway, task_id), what="the submitted task", ignore=AssertionError)

    error = {"type": "flow.BadInput", "message": "no", "mro": ["BadInput"]}
    gateway.post_reports(report(task_id, "failed", curr="x-sump", error=error, reason="Error"))
    out, err = proc.communicate(timeout=PROCESS_TIMEOUT_S)

    assert proc.returncode == 1, err
    assert json.loads(out)["status"] == "failed"
    assert json.loads(out)["error"]["type"] == "flow.BadInput"


def test_wait_outlives_a_gateway_restart(tmp_path: Path) -> None:
    public, internal = free_ports(2)
    ports = (public, internal)
    task_id = new_id()
    with running_gateway(tmp_path, ports=ports) as first:
        proc = spawn("submit", "a", "--payload", "{}", "--id", task_id, "--wait", "60",
                     gateway=first)  # fmt: skip
        wait_until(lambda: _exists(first, task_id), what="the task", ignore=AssertionError)
        first.post_reports(report(task_id, "received", curr="a"))
        wait_until(lambda: first.task(task_id)["status"] == "running", what="running")
    # The stream ends with the first gateway; the command polls until the second answers.
    with running_gateway(tmp_path, ports=ports) as second:
        assert (second.url, second.internal_url) == (first.url, first.internal_url)
        assert proc.poll() is None, proc.communicate()
        second.post_reports(report(task_id, "succeeded", curr="x-sink", result={"ok": 1}))
        out, err = proc.communicate(timeout=PROCESS_TIMEOUT_S)

    assert proc.returncode == 0, err
    assert json.loads(out)["result"] == {"ok": 1}


def test_a_wait_that_runs_out_exits_2(asya: Any) -> None:
    result = asya("submit", "a", "--payload", "{}", "--wait", "0.5")

    assert result.code == 2
    assert "did not finish within 0.5s" in result.err
    assert "asya watch" in result.err
    assert result.out == ""


# --- get, ls, cancel ------------------------------------------------------------------------


def test_get_prints_one_json_line(asya: Any) -> None:
    task_id = asya("submit", "a", "--payload", "{}").out.strip()

    result = asya("get", task_id, "--json")

    assert result.code == 0
    assert result.out.count("\n") == 1
    task = result.json()
    assert set(task) >= {"id", "status", "route", "actor", "progress", "result", "error"}
    assert task["id"] == task_id


def test_get_an_unknown_task_exits_1(asya: Any) -> None:
    result = asya("get", "no-such-task")

    assert result.code == 1
    assert "no task 'no-such-task'" in result.err
    assert "HTTP 404" in result.err


def test_ls_lists_newest_first_with_a_status_filter_and_a_limit(
    asya: Any, gateway: Gateway
) -> None:
    ids = [asya("submit", "b", "--payload", "{}").out.strip() for _ in range(3)]
    gateway.post_reports(report(ids[0], "received", curr="b"))

    pending = asya("ls", "--status", "pending", "--limit", "2")
    running = asya("ls", "--status", "running", "--json")

    assert pending.code == 0, pending.err
    page = pending.json()
    assert [task["id"] for task in page["tasks"]] == [ids[2], ids[1]]
    assert page["next_cursor"] is not None
    assert ids[0] in [task["id"] for task in running.json()["tasks"]]


def test_tasks_lists_them_without_a_filter(asya: Any, gateway: Gateway) -> None:
    ids = [asya("submit", "b", "--payload", "{}").out.strip() for _ in range(2)]

    listed = asya("tasks", "--json")
    more = asya("tasks", "--limit", "1")

    assert listed.code == 0, listed.err
    assert [task["id"] for task in listed.json()["tasks"]][:2] == [ids[1], ids[0]]
    assert [task["id"] for task in more.json()["tasks"]] == [ids[1]]


def test_ls_refuses_a_limit_out_of_range(asya: Any) -> None:
    result = asya("ls", "--limit", "501")

    assert result.code == 2
    assert "between 1 and 500" in result.err


def test_cancel_a_pending_task_then_again_then_a_finished_one(asya: Any, gateway: Gateway) -> None:
    task_id = asya("submit", "a", "--payload", "{}").out.strip()
    done = asya("submit", "a", "--payload", "{}").out.strip()
    gateway.post_reports(report(done, "succeeded", curr="x-sink", result={}))

    first = asya("cancel", task_id)
    again = asya("cancel", task_id)
    finished = asya("cancel", done)
    unknown = asya("cancel", "no-such-task")

    assert (first.code, again.code) == (0, 0), first.err
    assert first.json()["status"] == again.json()["status"] == "canceled"
    assert first.json()["reason"] == "Canceled"
    assert finished.code == 1
    assert "already succeeded" in finished.err
    assert unknown.code == 1


# --- watch ----------------------------------------------------------------------------------


def test_watch_shows_each_status_and_fly_event_until_the_task_ends(gateway: Gateway) -> None:
    task_id = new_id()
    proc = spawn("submit", "a,b", "--payload", "{}", "--id", task_id, gateway=gateway)
    assert proc.wait(PROCESS_TIMEOUT_S) == 0
    watch = spawn("watch", task_id, gateway=gateway)
    lines = lines_of(watch)

    assert next_line(lines, watch) == "status pending  actor=a  progress=0%"
    gateway.post_reports(report(task_id, "processing", curr="a", next_=["b"]))
    assert next_line(lines, watch) == "status running  actor=a  progress=0%"
    gateway.post_reports(report(task_id, "fly", curr="a", next_=["b"], events=[{"token": "Hi"}]))
    assert next_line(lines, watch) == 'fly {"token": "Hi"}'
    gateway.post_reports(report(task_id, "routed", prev=["a"], curr="b"))
    assert next_line(lines, watch) == "status running  actor=b  progress=50%"
    gateway.post_reports(report(task_id, "succeeded", prev=["a", "b"], curr="x-sink", result={}))
    assert next_line(lines, watch).startswith("status succeeded")
    assert watch.wait(PROCESS_TIMEOUT_S) == 0


def test_watch_json_lines_and_exit_1_for_a_canceled_task(asya: Any, gateway: Gateway) -> None:
    task_id = asya("submit", "a", "--payload", "{}").out.strip()
    asya("cancel", task_id)

    result = asya("watch", task_id, "--json")

    assert result.code == 1
    (line,) = result.out.splitlines()
    event = json.loads(line)
    assert event["event"] == "status"
    assert event["data"]["status"] == "canceled"


def test_watch_an_unknown_task_exits_1(asya: Any) -> None:
    result = asya("watch", "no-such-task")

    assert result.code == 1
    assert "no task 'no-such-task'" in result.err


# --- auth -----------------------------------------------------------------------------------


def test_the_api_key_is_sent_and_a_wrong_one_exits_3_saying_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text(f"{hashlib.sha256(KEY.encode()).hexdigest()}: acme\n")
    with running_gateway(tmp_path, keys_file=keys) as secured:
        monkeypatch.setenv("ASYA_API_KEY", KEY)
        submitted = main(["submit", "a", "--payload", "{}", "--gateway", secured.url])
        task_id = capsys.readouterr().out.strip()
        monkeypatch.delenv("ASYA_API_KEY")
        without = main(["get", task_id, "--gateway", secured.url])
        without_err = capsys.readouterr().err
        wrong = main(["get", task_id, "--gateway", secured.url, "--api-key", "guess"])
        wrong_err = capsys.readouterr().err

        assert submitted == 0
        assert secured.task(task_id, api_key=KEY)["status"] == "pending"
    assert (without, wrong) == (3, 3)
    assert "HTTP 401" in without_err
    assert "--api-key" in without_err
    assert "not valid" in wrong_err


# --- pure parts -----------------------------------------------------------------------------


def test_sse_parser_joins_data_lines_skips_comments_and_keeps_the_last_id() -> None:
    parser = sse.Parser()
    lines = [": keep-alive", "", "event: status", "id: 7", "data: {\"a\":", "data: 1}", "",
             "event: fly", "data:no-space", "", "data: plain", "", "id: 9", ""]  # fmt: skip

    events = [event for line in lines if (event := parser.feed(line)) is not None]

    assert events == [
        sse.Event("status", '{"a":\n1}', "7"),
        sse.Event("fly", "no-space", "7"),
        sse.Event("message", "plain", "7"),
    ]
    assert parser.last_id == "9"


def test_render_task_for_a_terminal() -> None:
    task = {
        "id": "t1",
        "status": "running",
        "route": {"prev": ["a"], "curr": "b", "next": ["c"]},
        "actor": "b",
        "progress": 1 / 3,
        "result": None,
        "error": None,
        "reason": None,
        "created_at": "2030-01-01T00:00:00Z",
        "updated_at": "2030-01-01T00:00:01Z",
        "deadline_at": None,
    }

    assert tasks.render_task(task).splitlines() == [
        "id          t1",
        "status      running",
        "route       a > [b] > c",
        "progress    33%",
        "created_at  2030-01-01T00:00:00Z",
        "updated_at  2030-01-01T00:00:01Z",
    ]
    done = {**task, "status": "succeeded", "progress": 1.0, "result": {"k": [1]}}
    assert tasks.render_task(done).splitlines()[-5:] == [
        "result      {",
        '              "k": [',
        "                1",
        "              ]",
        "            }",
    ]


def test_render_table_aligns_columns() -> None:
    rows: list[dict[str, Any]] = [
        {"id": "long-id-1", "status": "pending", "actor": "a", "progress": 0.0,
         "created_at": "T1"},
        {"id": "t2", "status": "succeeded", "actor": None, "progress": 1.0, "created_at": "T2"},
    ]  # fmt: skip

    assert tasks.render_table(rows).splitlines() == [
        "ID         STATUS     ACTOR  PROGRESS  CREATED",
        "long-id-1  pending    a      0%        T1",
        "t2         succeeded  -      100%      T2",
    ]


def test_resolve_prefers_the_flag_then_the_environment_then_the_state_dir(
    tmp_path: Path,
) -> None:
    gateway_url_file(tmp_path).write_text("http://from-file:1/\n")
    environ = {"ASYA_GATEWAY_URL": "http://from-env:2"}

    assert gateway_client.resolve("http://flag:3/", environ, tmp_path).url == "http://flag:3"
    assert gateway_client.resolve(None, environ, tmp_path).url == "http://from-env:2"
    from_file = gateway_client.resolve(None, {}, tmp_path)
    assert from_file.url == "http://from-file:1"
    assert from_file.source == str(gateway_url_file(tmp_path))
    with pytest.raises(gateway_client.NoGateway, match="asya dev"):
        gateway_client.resolve(None, {}, tmp_path / "elsewhere")


def _exists(gateway: Gateway, task_id: str) -> bool:
    return httpx.get(f"{gateway.url}/v1/tasks/{task_id}", timeout=30).status_code == 200


# --- resume ---------------------------------------------------------------------------------

APPROVAL = {"prompt": "Send it?", "fields": [{"name": "approved", "type": "boolean"}]}


def paused_task(asya: Any, gateway: Gateway) -> str:
    """A task on a, x-pause, b, parked by x-pause (as x-pause posts it) with APPROVAL."""
    task_id = new_id()
    assert asya("submit", "a,x-pause,b", "--payload", '{"d": 1}', "--id", task_id).code == 0
    envelope = {
        "id": task_id,
        "parent_id": None,
        "route": {"prev": ["a"], "curr": "x-pause", "next": ["b"]},
        "headers": {},
        "status": {"phase": "pending", "actor": "x-pause", "attempt": 1},
        "payload": {"d": 1},
    }
    response = httpx.post(
        f"{gateway.internal_url}/internal/v1/pauses",
        json={
            "envelope": envelope,
            "pause": APPROVAL,
            "paused_at": "2030-01-01T00:00:00Z",
            "expires_at": "2030-01-08T00:00:00Z",
        },
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return task_id


def test_resume_prints_the_running_task_and_a_second_resume_exits_1(
    asya: Any, gateway: Gateway
) -> None:
    task_id = paused_task(asya, gateway)
    shown = asya("get", task_id, "--json").json()
    assert shown["pause"]["prompt"] == "Send it?"

    result = asya("resume", task_id, "--input", '{"approved": true}', "--json")
    again = asya("resume", task_id, "--input", '{"approved": false}')

    assert result.code == 0, result.err
    assert (result.json()["status"], result.json()["actor"]) == ("running", "b")
    assert gateway.task(task_id)["route"]["prev"] == ["a", "x-pause"]
    assert again.code == 1
    assert "is running, not paused" in again.err
    assert "HTTP 409" in again.err


def test_resume_reads_the_input_from_a_file_and_prints_the_task_for_people(
    asya: Any, gateway: Gateway, tmp_path: Path
) -> None:
    task_id = paused_task(asya, gateway)
    answer = tmp_path / "answer.json"
    answer.write_text('{"approved": false}')

    result = asya("resume", task_id, "--input", f"@{answer}")

    assert result.code == 0, result.err
    assert task_id in result.out
    assert "running" in result.out


def test_resume_with_input_that_does_not_fit_exits_1_naming_the_field(
    asya: Any, gateway: Gateway
) -> None:
    task_id = paused_task(asya, gateway)

    missing = asya("resume", task_id, "--input", "{}")
    wrong = asya("resume", task_id, "--input", '{"approved": "yes"}')
    unknown = asya("resume", "no-such-task", "--input", "{}")

    assert missing.code == wrong.code == unknown.code == 1
    assert "input.approved is required" in missing.err
    assert "input.approved must be a boolean" in wrong.err
    assert "no task 'no-such-task'" in unknown.err
    assert gateway.task(task_id)["status"] == "paused"


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("{not json", "--input is not JSON"),
        ("[1, 2]", "--input must be a JSON object"),
        ("@/no/such/answer.json", "cannot read --input file '/no/such/answer.json'"),
    ],
)
def test_resume_with_a_bad_input_argument_exits_2(asya: Any, given: str, says: str) -> None:
    result = asya("resume", "any-task", "--input", given)

    assert result.code == 2
    assert says in result.err
