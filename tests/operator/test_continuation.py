"""Reading a launched job's state (job_state.py) and deciding what follows it
(continuation.py): pure functions, table-tested."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from asya_operator import continuation, job_state, jobs_watch
from asya_operator.job_state import JobState, Outcome
from asya_shared import jobs

NOW = datetime.datetime(2026, 1, 1, 3, tzinfo=datetime.UTC)
JOB = {"apiVersion": "batch/v1", "kind": "Job", "namespace": "ml", "name": "t-1", "uid": "u"}


def parked(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "e1",
        "route": {"prev": ["a"], "curr": "train", "next": ["b", "c"]},
        "headers": {"traceparent": "00-x"},
        "status": {"phase": "processing", "attempt": 2, "max_attempts": 3,
                   "created_at": "2026-01-01T00:00:00.000Z", "deadline_at": None},
        "payload": {"x": 1},
        "custom": "kept",
    }  # fmt: skip
    base.update(overrides)
    return base


def cond(kind: str, status: str = "True") -> dict[str, Any]:
    return {"type": kind, "status": status, "lastTransitionTime": "2026-01-01T02:00:00Z"}


@pytest.mark.parametrize(
    ("kind", "status", "expected"),
    [
        (jobs.BATCH_JOB, {}, Outcome.RUNNING),
        (jobs.BATCH_JOB, {"conditions": [cond("Suspended")]}, Outcome.RUNNING),
        (jobs.BATCH_JOB, {"conditions": [cond("Complete")]}, Outcome.SUCCEEDED),
        (jobs.BATCH_JOB, {"conditions": [cond("Complete", "False")]}, Outcome.RUNNING),
        (jobs.BATCH_JOB, {"conditions": [cond("FailureTarget"), cond("Failed")]}, Outcome.FAILED),
        (jobs.PYTORCH_JOB, {"conditions": [cond("Running")]}, Outcome.RUNNING),
        (jobs.PYTORCH_JOB, {"conditions": [cond("Succeeded")]}, Outcome.SUCCEEDED),
        (jobs.PYTORCH_JOB, {"conditions": [cond("Failed")]}, Outcome.FAILED),
        (jobs.TRAIN_JOB, {"conditions": [cond("Complete")]}, Outcome.SUCCEEDED),
        (jobs.TRAIN_JOB, {"conditions": [cond("Failed")]}, Outcome.FAILED),
        (jobs.VOLCANO_JOB, {"state": {"phase": "Running"}}, Outcome.RUNNING),
        (jobs.VOLCANO_JOB, {"state": {"phase": "Completing"}}, Outcome.RUNNING),
        (jobs.VOLCANO_JOB, {"state": {"phase": "Completed"}}, Outcome.SUCCEEDED),
        (jobs.VOLCANO_JOB, {"state": {"phase": "Aborted"}}, Outcome.FAILED),
        (jobs.VOLCANO_JOB, {"state": {"phase": "Terminated"}}, Outcome.FAILED),
    ],
)
def test_outcome_per_kind(kind: jobs.JobKind, status: dict[str, Any], expected: Outcome) -> None:
    assert job_state.read(kind, {"status": status}).outcome == expected


def test_times() -> None:
    state = job_state.read(
        jobs.BATCH_JOB,
        {"status": {"startTime": "T0", "completionTime": "T1", "conditions": [cond("Complete")]}},
    )
    assert (state.started_at, state.finished_at) == ("T0", "T1")
    train = job_state.read(
        jobs.TRAIN_JOB,
        {"metadata": {"creationTimestamp": "C"}, "status": {"conditions": [cond("Failed")]}},
    )
    assert (train.started_at, train.finished_at) == ("C", "2026-01-01T02:00:00Z")


class TestDecide:
    def test_running_waits(self) -> None:
        assert continuation.decide(parked(), JobState(Outcome.RUNNING), job=JOB, now=NOW) == (
            continuation.Wait()
        )

    def test_success_goes_to_the_next_actor_with_a_fresh_status(self) -> None:
        send = continuation.decide(parked(), JobState(Outcome.SUCCEEDED), job=JOB, now=NOW)
        assert isinstance(send, continuation.Send)
        assert send.actor == "b"
        out = send.envelope
        assert out["route"] == {"prev": ["a", "train"], "curr": "b", "next": ["c"]}
        assert out["status"]["phase"] == "pending"
        assert (out["status"]["attempt"], out["status"]["actor"]) == (1, "b")
        assert out["status"]["created_at"] == "2026-01-01T00:00:00.000Z"
        assert out["custom"] == "kept", "unknown top-level fields travel on"
        assert out["payload"]["x"] == 1
        assert out["payload"]["job"]["outcome"] == "succeeded"
        assert not send.delete_job

    def test_success_at_the_end_of_the_route_finishes_at_x_sink(self) -> None:
        last = parked(route={"prev": [], "curr": "train", "next": []})
        send = continuation.decide(last, JobState(Outcome.SUCCEEDED), job=JOB, now=NOW)
        assert isinstance(send, continuation.Send)
        assert send.actor == "x-sink"
        assert send.envelope["status"]["phase"] == "succeeded"
        assert send.envelope["status"]["actor"] == "train"

    def test_a_payload_that_is_not_an_object_is_kept_beside_the_job(self) -> None:
        send = continuation.decide(
            parked(payload=[1, 2]), JobState(Outcome.SUCCEEDED), job=JOB, now=NOW
        )
        assert isinstance(send, continuation.Send)
        assert send.envelope["payload"]["payload"] == [1, 2]

    def test_failure_names_the_conditions(self) -> None:
        state = JobState(Outcome.FAILED, [cond("Failed") | {"reason": "DeadlineExceeded"}])
        send = continuation.decide(parked(), state, job=JOB, now=NOW)
        assert isinstance(send, continuation.Send)
        status = send.envelope["status"]
        assert (status["phase"], status["reason"], status["attempt"]) == ("failed", "JobFailed", 2)
        assert "DeadlineExceeded" in status["error"]["message"]
        assert "ml/t-1" in status["error"]["message"]

    def test_the_deadline(self) -> None:
        late = parked(status={"deadline_at": "2026-01-01T02:59:59.000Z"})
        send = continuation.decide(late, JobState(Outcome.RUNNING), job=JOB, now=NOW)
        assert isinstance(send, continuation.Send)
        assert send.delete_job
        assert send.envelope["status"]["reason"] == "Timeout"
        on_time = parked(status={"deadline_at": "2026-01-01T03:00:01Z"})
        assert isinstance(
            continuation.decide(on_time, JobState(Outcome.RUNNING), job=JOB, now=NOW),
            continuation.Wait,
        )


@pytest.mark.parametrize(
    "text",
    [None, "", "{", "[]", json.dumps({"id": "x"}), json.dumps({"id": "x", "route": {"next": []}})],
)
def test_an_unreadable_parked_envelope(text: str | None) -> None:
    with pytest.raises(continuation.ParkedEnvelopeError):
        continuation.parse_parked(text)


class TestClaim:
    """jobs_watch.claim_of: whose claim a job's annotation shows, and whether it is stale."""

    ME = "pod-a/1111"

    @pytest.mark.parametrize(
        ("annotation", "expected"),
        [
            (None, "free"),
            ("", "free"),
            ("sent", "sent"),
            ("something else", "free"),
            ("claimed:pod-a/1111@2026-01-01T02:59:00Z", "ours"),
            ("claimed:pod-b/2222@2026-01-01T02:59:30Z", "fresh"),
            ("claimed:pod-b/2222@2026-01-01T02:58:00Z", "stale"),
            ("claimed:pod-b/2222@not-a-time", "stale"),
            ("claimed:pod-b/2222", "stale"),
        ],
    )
    def test_states(self, annotation: str | None, expected: str) -> None:
        assert str(jobs_watch.claim_of(annotation, holder=self.ME, now=NOW)) == expected

    def test_a_claim_value_reads_back_as_ours(self) -> None:
        value = jobs_watch.claim_value(self.ME, NOW)
        assert value == "claimed:pod-a/1111@2026-01-01T03:00:00Z"
        assert jobs_watch.claim_of(value, holder=self.ME, now=NOW) == jobs_watch.Claim.OURS
