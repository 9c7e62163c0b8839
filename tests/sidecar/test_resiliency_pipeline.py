"""Retry policies, timeouts and deadlines through real pipelines on every transport."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from tests.support.pipeline import StartPipeline, actor

pytestmark = pytest.mark.slow

RETRY_TWICE = {
    "policies": {"default": {"maxAttempts": 3, "backoff": "constant", "initialDelay": "1s"}}
}


def calls(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


async def test_a_handler_failing_n_times_then_succeeding_arrives_with_attempt_n_plus_1(
    start_pipeline: StartPipeline, tmp_path: Path
) -> None:
    pipeline = await start_pipeline([actor("flaky", "flow.flaky", resiliency=RETRY_TWICE)])
    log = tmp_path / "calls"

    envelope_id = await pipeline.send(["flaky"], {"fail_times": 2, "calls": str(log)})
    result = await pipeline.result(envelope_id)

    assert result["status"]["phase"] == "succeeded"
    assert result["status"]["attempt"] == 3
    assert result["payload"]["succeeded_on"] == 3
    assert calls(log) == [1, 2, 3]


async def test_an_always_failing_handler_reaches_the_sump_after_exactly_max_attempts(
    start_pipeline: StartPipeline, tmp_path: Path
) -> None:
    pipeline = await start_pipeline([actor("doomed", "flow.always_fails", resiliency=RETRY_TWICE)])
    log = tmp_path / "calls"

    envelope_id = await pipeline.send(["doomed"], {"calls": str(log)})
    [sumped] = await pipeline.wait_sump(1)

    assert sumped["id"] == envelope_id
    assert sumped["status"]["reason"] == "PolicyExhausted"
    assert sumped["status"]["attempt"] == 3
    assert sumped["status"]["error"]["type"] == "flow.BadInput"
    assert calls(log) == [1, 2, 3]


async def test_then_route_is_taken_when_a_rule_matches_a_base_class(
    start_pipeline: StartPipeline,
) -> None:
    policies = {
        "policies": {"to-fallback": {"maxAttempts": 1, "thenRoute": ["fallback"]}},
        "rules": [{"errors": ["flow.BadInput"], "policy": "to-fallback"}],
    }
    pipeline = await start_pipeline(
        [
            actor("worse", "flow.worse", resiliency=policies),
            actor("fallback", "flow.fallback"),
            actor("never", "flow.mark_c"),
        ]
    )

    envelope_id = await pipeline.send(["worse", "never"], {"trail": []})
    result = await pipeline.result(envelope_id)

    assert result["status"]["phase"] == "succeeded"
    assert result["route"]["prev"] == ["worse", "fallback"]
    assert result["payload"]["trail"] == ["fallback"]


async def test_a_call_over_the_actor_timeout_fails_as_timeout(
    start_pipeline: StartPipeline,
) -> None:
    pipeline = await start_pipeline([actor("sleepy", "flow.sleepy", timeout="1s")])

    envelope_id = await pipeline.send(["sleepy"], {"sleep_s": 30})
    result = await pipeline.result(envelope_id)

    assert result["status"]["phase"] == "failed"
    assert result["status"]["reason"] == "Timeout"
    assert result["status"]["error"]["type"] == "ActorTimeout"


async def test_a_stuck_sync_handler_restarts_the_runtime_and_loses_nothing(
    start_pipeline: StartPipeline,
) -> None:
    pipeline = await start_pipeline(
        [actor("sleepy", "flow.sleepy_sync", timeout="2s", concurrency=2)]
    )

    stuck = await pipeline.send(["sleepy"], {"sleep_s": 60})
    others = [await pipeline.send(["sleepy"], {"sleep_s": 0.2}) for _ in range(5)]
    results = await pipeline.results([stuck, *others])

    assert results[stuck]["status"]["reason"] == "Timeout"
    assert all(results[i]["status"]["phase"] == "succeeded" for i in others)
    assert 75 in pipeline.pipeline.supervisor.exit_codes("sleepy/runtime")


async def test_timeouts_follow_a_timeout_rule(start_pipeline: StartPipeline) -> None:
    policies = {
        "actorTimeout": "1s",
        "policies": {"patient": {"maxAttempts": 2, "initialDelay": "1s"}},
        "rules": [{"errors": ["TimeoutError"], "policy": "patient"}],
    }
    pipeline = await start_pipeline([actor("sleepy", "flow.sleepy", resiliency=policies)])

    envelope_id = await pipeline.send(["sleepy"], {"sleep_s": 30})
    result = await pipeline.result(envelope_id)

    assert result["status"]["reason"] == "PolicyExhausted"
    assert result["status"]["attempt"] == 2
    assert result["status"]["error"]["type"] == "ActorTimeout"


async def test_an_envelope_past_its_deadline_fails_without_running_the_handler(
    start_pipeline: StartPipeline, tmp_path: Path
) -> None:
    pipeline = await start_pipeline([actor("guarded", "flow.must_not_run")])
    ran = tmp_path / "ran"
    past = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)).isoformat()

    envelope_id = await pipeline.send(["guarded"], {"ran": str(ran)}, status={"deadline_at": past})
    result = await pipeline.result(envelope_id)

    assert result["status"]["phase"] == "failed"
    assert result["status"]["reason"] == "Timeout"
    assert result["status"]["error"]["type"] == "DeadlineExceeded"
    assert not ran.exists()
