"""The per-call timeout the sidecar sends in X-Asya-Timeout."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.support import waiting

from .conftest import RuntimeFactory, async_client_for, envelope


def call(runtime: Any, payload: Any, timeout: str | None) -> Any:
    headers = {} if timeout is None else {"x-asya-timeout": timeout}
    return runtime.client.post("/invoke", json=envelope(payload), headers=headers)


def calls_at_once(runtime: Any, *calls: tuple[Any, str]) -> list[Any]:
    """POST each (payload, timeout) on its own connection, all at once; the answers."""

    async def run() -> list[Any]:
        async with async_client_for(runtime.socket_path, connections=len(calls)) as client:
            posts = [
                client.post("/invoke", json=envelope(payload), headers={"x-asya-timeout": timeout})
                for payload, timeout in calls
            ]
            return list(await asyncio.gather(*posts))

    return asyncio.run(run())


def test_async_handler_over_its_timeout_is_cancelled_and_the_runtime_carries_on(
    start_runtime: RuntimeFactory,
) -> None:
    runtime = start_runtime("timing.async_sleep")

    slow = call(runtime, {"sleep_s": 30}, "0.2")
    fast = call(runtime, {"sleep_s": 0}, "5")

    assert slow.status_code == 500
    details = slow.json()["details"]
    assert details["type"] == "ActorTimeout"
    assert details["mro"][:2] == ["ActorTimeout", "TimeoutError"]
    assert "0.2s" in details["message"]
    assert fast.status_code == 200
    assert runtime.proc.poll() is None


def test_sync_handler_over_its_timeout_is_answered_then_the_runtime_restarts(
    start_runtime: RuntimeFactory,
) -> None:
    runtime = start_runtime("timing.sync_sleep", concurrency=2)

    stuck, other = calls_at_once(runtime, ({"sleep_s": 60}, "0.3"), ({"sleep_s": 1.0}, "30"))
    code, stderr = runtime.wait_exit(timeout=30)

    assert stuck.status_code == 500
    assert stuck.json()["details"]["type"] == "ActorTimeout"
    assert other.status_code == 200  # the other call in flight was finished first
    assert code == 75
    assert "kept running past its timeout" in stderr
    assert not runtime.socket_path.exists()
    assert not runtime.ready_path.exists()


@pytest.mark.parametrize("value", ["soon", "-1", "0", "nan"])
def test_a_bad_timeout_header_is_refused(start_runtime: RuntimeFactory, value: str) -> None:
    runtime = start_runtime("kinds.echo")

    response = call(runtime, {}, value)

    assert response.status_code == 400
    assert "x-asya-timeout" in response.json()["details"]["message"]


def test_without_the_header_there_is_no_limit(start_runtime: RuntimeFactory) -> None:
    runtime = start_runtime("timing.sync_sleep")

    assert call(runtime, {"sleep_s": 0.3}, None).status_code == 200


def test_a_handler_raising_timeouterror_in_time_is_its_own_error_not_an_actor_timeout(
    start_runtime: RuntimeFactory,
) -> None:
    runtime = start_runtime("timing.async_raises_timeout")

    answer = call(runtime, {"message": "the model server timed out"}, "5")

    assert answer.status_code == 500
    details = answer.json()["details"]
    assert details["type"] == "TimeoutError"
    assert details["message"] == "the model server timed out"


def test_a_call_queued_behind_a_stuck_one_times_out_instead_of_waiting_forever(
    start_runtime: RuntimeFactory, socket_dir: Path
) -> None:
    runtime = start_runtime("timing.gated", concurrency=1)
    started = socket_dir / "started"
    never = {"started": str(started), "release": str(socket_dir / "never"), "max_wait_s": 60}
    queued_payload = {"started": str(socket_dir / "queued-started"), "release": str(started)}

    async def run() -> tuple[Any, Any]:
        async with async_client_for(runtime.socket_path, connections=2) as client:
            # The stuck call must hold the only slot before the other one arrives. Its
            # timeout is the longer one so that the runtime, which drains once the stuck
            # call expires, still accepts the queued call on a slow machine.
            stuck = asyncio.ensure_future(
                client.post("/invoke", json=envelope(never), headers={"x-asya-timeout": "3"})
            )
            await waiting.eventually(started.exists, what="the stuck call to start", timeout=20)
            queued = await client.post(
                "/invoke", json=envelope(queued_payload), headers={"x-asya-timeout": "0.5"}
            )
            return await stuck, queued

    stuck, queued = asyncio.run(run())
    code, _ = runtime.wait_exit(timeout=30)

    assert stuck.json()["details"]["type"] == "ActorTimeout"
    assert queued.status_code == 500
    assert queued.json()["details"]["type"] == "ActorTimeout"
    assert "call slots" in queued.json()["details"]["message"]
    assert code == 75  # the stuck thread still needs a fresh process
