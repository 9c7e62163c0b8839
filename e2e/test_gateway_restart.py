"""A gateway killed with SIGKILL in the middle of a run loses no task.

`asya dev` runs a two-actor pipeline (a slow first actor, so that tasks are in flight) and
its gateway; tasks are submitted over HTTP with client-chosen ids, the gateway process is
killed while envelopes move and reports wait to be posted, more tasks are submitted while
it is down (retried with the same id, as a client should), and `asya dev` restarts it as a
kubelet would. Every task must end `succeeded` with its result: the store survived the
kill, the sidecars and x-sink posted the reports they held once the gateway was back, and
a task recorded but not yet published was published by the outbox sweep.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from e2e.asya_dev import TIMEOUT_S, Dev, running_dev
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow

ACTORS = """\
apiVersion: asya.sh/v1alpha1
kind: AsyncActor
metadata: {name: slow}
spec: {handler: flow.sleepy_sync}
---
apiVersion: asya.sh/v1alpha1
kind: AsyncActor
metadata: {name: b}
spec: {handler: flow.mark_b}
"""
BEFORE, DURING = 60, 40  # tasks submitted before the kill, and while the gateway is down
STEP_S = 0.05  # the slow actor's time per task: 60 tasks keep it busy for about 3 s
TERMINAL = ("succeeded", "failed", "canceled")


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    tmp = tmp_path_factory.mktemp("gateway-restart")
    with running_dev(tmp, {"actors.yaml": ACTORS}) as running:
        yield running


def gateway_pid(dev: Dev) -> int | None:
    """The pid of the gateway `asya dev` runs for this state dir (its store is the marker)."""
    marker = str(dev.state_dir / "gateway.db")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        words = [arg.decode(errors="replace") for arg in argv]
        if "gateway" in words and any(marker in word for word in words):
            return int(entry.name)
    return None


def submit(client: httpx.Client, dev: Dev, task_id: str) -> None:
    """POST the task, retried with the same id until the gateway answers (201 or 200)."""
    body = {"route": ["slow", "b"], "payload": {"n": task_id, "sleep_s": STEP_S}, "id": task_id}

    def accepted() -> bool:
        try:
            response = client.post(f"{dev.url}/v1/tasks", json=body)
        except httpx.TransportError:
            return False  # the gateway is down: the same id again, later
        assert response.status_code in (200, 201), response.text
        return True

    wait_until(accepted, what=f"the gateway to take task {task_id}", timeout=TIMEOUT_S,
               interval=0.1, details=dev.output)  # fmt: skip


def statuses(client: httpx.Client, dev: Dev, ids: list[str]) -> dict[str, dict[str, Any]] | None:
    try:
        return {i: client.get(f"{dev.url}/v1/tasks/{i}").json() for i in ids}
    except httpx.TransportError:
        return None


def test_a_gateway_killed_mid_run_loses_no_task(dev: Dev) -> None:
    ids = [f"kill-{i:03d}" for i in range(BEFORE + DURING)]
    first_pid = gateway_pid(dev)
    assert first_pid is not None, "no gateway process found:\n" + dev.output()

    with httpx.Client(timeout=30) as client:
        for task_id in ids[:BEFORE]:
            submit(client, dev, task_id)
        # Killed while the slow actor still works through its backlog.
        os.kill(first_pid, signal.SIGKILL)
        for task_id in ids[BEFORE:]:
            submit(client, dev, task_id)
        restarted = gateway_pid(dev)
        assert restarted is not None
        assert restarted != first_pid

        def all_ended() -> dict[str, dict[str, Any]] | None:
            found = statuses(client, dev, ids)
            if found is None or any(t["status"] not in TERMINAL for t in found.values()):
                return None
            return found

        def stuck() -> str:
            found = statuses(client, dev, ids) or {}
            waiting = {i: t["status"] for i, t in found.items() if t["status"] not in TERMINAL}
            return f"not ended: {waiting}\n{dev.output()}"

        tasks = wait_until(all_ended, what="every task to end", timeout=TIMEOUT_S,
                           interval=0.5, details=stuck)  # fmt: skip

    assert tasks is not None
    failed = {i: (t["status"], t["error"]) for i, t in tasks.items() if t["status"] != "succeeded"}
    assert failed == {}
    for task_id, task in tasks.items():
        assert task["result"] == {"n": task_id, "sleep_s": STEP_S, "trail": ["b"]}
        assert task["progress"] == 1.0
    assert dev.line_matching(r"^\[gateway/gateway\] exited with code -9; restarting") is not None, (
        dev.output()
    )
