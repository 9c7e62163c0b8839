"""Join and pause under `asya dev` with its gateway, driven by the commands a user runs.

One `asya dev` (embedded transport, real runtimes, sidecars, crew, gateway) serves the test
handlers; `asya submit`, `get`, `resume` and `cancel` run as subprocesses. The last test stops
everything while a task is paused, starts it again on the same state directory and resumes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.asya_dev import TIMEOUT_S, Dev, actors, running_dev
from tests.conftest import ensure_rabbitmq
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

ACTORS = actors(
    ask="pausing.ask",
    deadline="pausing.deadline",
    b="flow.mark_b",
    split="fanin.split",
    shout="fanin.shout",
    combine="fanin.combine",
)
REVIEW = {
    "prompt": "Send the reply?",
    "fields": [
        {"name": "approved", "type": "boolean", "payload_key": "/review/approved"},
        {"name": "reply", "type": "string", "required": False, "payload_key": "/review/reply"},
    ],
}


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    tmp = tmp_path_factory.mktemp("patterns-dev")
    with running_dev(tmp, {"actors.yaml": ACTORS}) as running:
        yield running


def submit(dev: Dev, route: str, payload: dict[str, Any], *args: str) -> str:
    done = dev.asya("submit", route, "--payload", json.dumps(payload), *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


# --------------------------------------------------------------------------------- pause


def test_a_paused_task_shows_what_it_asks_and_resumes_with_a_persons_input(dev: Dev) -> None:
    task_id = submit(dev, "ask,x-pause,b", {"text": "hi", "pause": REVIEW})

    paused = dev.wait_status(task_id, "paused")

    assert paused["actor"] == "x-pause"
    assert paused["pause"]["prompt"] == "Send the reply?"
    assert [f["name"] for f in paused["pause"]["fields"]] == ["approved", "reply"]
    assert paused["pause"]["expires_at"] > paused["pause"]["paused_at"]

    wrong = dev.asya("resume", task_id, "--input", '{"approved": "yes"}')
    assert wrong.returncode == 1
    assert "input.approved" in wrong.stderr
    assert dev.task(task_id)["status"] == "paused"  # a bad input changes nothing

    done = dev.asya("resume", task_id, "--input", '{"approved": false, "reply": "Call us."}')
    assert done.returncode == 0, done.stderr
    finished = dev.wait_status(task_id, "succeeded", "failed")

    assert finished["status"] == "succeeded"
    assert finished["result"] == {
        "text": "hi",
        "review": {"approved": False, "reply": "Call us."},
        "trail": ["b"],
    }
    assert finished["route"]["prev"] == ["ask", "x-pause", "b"]
    again = dev.asya("resume", task_id, "--input", '{"approved": true}')
    assert again.returncode == 1
    assert "succeeded" in again.stderr


def test_a_handler_can_insert_the_pause_at_run_time(dev: Dev, tmp_path: Path) -> None:
    task_id = submit(dev, "ask,b", {"insert": True, "pause": {"prompt": "OK?"}})
    dev.wait_status(task_id, "paused")
    answer = tmp_path / "answer.json"
    answer.write_text("{}")

    done = dev.asya("resume", task_id, "--input", f"@{answer}")

    assert done.returncode == 0, done.stderr
    assert dev.wait_status(task_id, "succeeded")["result"] == {"trail": ["b"]}


def test_the_deadline_does_not_run_while_paused(dev: Dev) -> None:
    task_id = submit(dev, "deadline,x-pause,deadline", {}, "--timeout", "10m")
    paused = dev.wait_status(task_id, "paused")
    before = paused["deadline_at"]

    assert dev.asya("resume", task_id, "--input", "{}").returncode == 0
    finished = dev.wait_status(task_id, "succeeded")

    first, second = finished["result"]["deadline_seen"]
    assert first == before
    assert second > first  # moved later by the time spent paused
    assert finished["deadline_at"] == second


def test_a_pause_past_its_limit_fails_with_pause_expired(dev: Dev) -> None:
    task_id = submit(dev, "ask,x-pause,b", {"pause_timeout": "1s"})

    failed = dev.wait_status(task_id, "failed")

    assert failed["reason"] == "PauseExpired"
    record = wait_until(lambda: dev.result(task_id), what="x-sink's record",
                        timeout=TIMEOUT_S, details=dev.output)  # fmt: skip
    assert record is not None
    assert record["status"]["reason"] == "PauseExpired"


def test_a_paused_task_can_be_canceled(dev: Dev) -> None:
    task_id = submit(dev, "ask,x-pause,b", {"n": 1})
    dev.wait_status(task_id, "paused")

    canceled = dev.asya("cancel", task_id, "--json")

    assert canceled.returncode == 0, canceled.stderr
    assert json.loads(canceled.stdout)["status"] == "canceled"
    record = wait_until(lambda: dev.result(task_id), what="x-sink's record",
                        timeout=TIMEOUT_S, details=dev.output)  # fmt: skip
    assert record is not None
    assert record["status"]["phase"] == "canceled"
    assert dev.asya("resume", task_id, "--input", "{}").returncode == 1


def test_a_bad_pause_header_fails_the_task_naming_it(dev: Dev) -> None:
    bad = {"fields": [{"name": "approved", "type": "yes-or-no"}]}
    task_id = submit(dev, "ask,x-pause,b", {"pause": bad})

    failed = dev.wait_status(task_id, "failed")

    assert "x-asya-pause.fields[0].type" in failed["error"]["message"]


# ---------------------------------------------------------------------------------- join


def test_a_join_submitted_through_the_gateway_ends_with_the_joined_result(dev: Dev) -> None:
    done = dev.asya("submit", "split,shout,x-join,combine", "--payload",
                    '{"text": "red green blue"}', "--wait", "90")  # fmt: skip

    assert done.returncode == 0, done.stderr
    finished = json.loads(done.stdout)
    assert finished["result"]["results"] == ["RED", "GREEN", "BLUE"]
    assert finished["route"]["prev"] == ["split", "shout", "x-join", "combine"]


def test_the_gateway_shows_a_waiting_join_running_with_joined_parts_over_n(dev: Dev) -> None:
    # One part never arrives and the join waits an hour: it stays at 3 of 4.
    payload = {"text": "a b lost c", "join": {"timeout": "1h"}}
    task_id = submit(dev, "split,shout,x-join,combine", payload)

    def three_of_four() -> dict[str, Any] | None:
        found = dev.task(task_id)
        return found if found["progress"] == 0.75 else None

    waiting = wait_until(three_of_four, what="progress 3/4", timeout=TIMEOUT_S,
                         interval=0.1, details=dev.output)  # fmt: skip
    assert waiting is not None
    assert waiting["status"] == "running"
    assert waiting["actor"] == "x-join"
    canceled = dev.asya("cancel", task_id, "--json")
    assert json.loads(canceled.stdout)["status"] == "canceled"


# ------------------------------------------------------------------- restart while paused


@pytest.mark.parametrize(
    "transport", ["local", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)]
)
def test_pause_then_restart_everything_then_resume(tmp_path: Path, transport: str) -> None:
    if transport == "rabbitmq":
        ensure_rabbitmq()  # the broker runs (started here if need be), or the test fails
    # A namespace of its own: queues left on the broker never meet another run's.
    args = ("--transport", transport, "--namespace", f"p{uuid.uuid4().hex[:8]}")
    with running_dev(tmp_path, {"actors.yaml": ACTORS}, *args) as first:
        task_id = submit(first, "ask,x-pause,b", {"text": "later", "pause": REVIEW})
        first.wait_status(task_id, "paused")
    # Every process is gone; the gateway's database and the queues stay in the state dir.
    with running_dev(tmp_path, {"actors.yaml": ACTORS}, *args) as second:
        assert second.task(task_id)["status"] == "paused"
        done = second.asya("resume", task_id, "--input", '{"approved": true}')
        assert done.returncode == 0, done.stderr
        finished = second.wait_status(task_id, "succeeded")
    assert finished["result"]["review"] == {"approved": True}
