"""The job watcher against kmock's API emulator and the real RabbitMQ broker.

Launch (asya_callers.jobs) creates each job, as it would from an actor's pod; the tests then
play the job's controller (they write the status a Job controller, Volcano, the Training
Operator or Trainer would write) and read what the watcher put on the queues.

The emulator here also does what a real API server does with a merge patch that names a
resourceVersion: it refuses it (409) if the object has changed since, which is what the
watcher's claim relies on.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kmock
import pytest

import asya_operator.jobs_watch as jobs_watch
import asya_transports as transports
from asya_operator import kube
from asya_operator.config import OperatorConfig
from asya_shared import env, jobs, names
from tests.operator.test_operator import (  # noqa: F401  (fixtures used by name)
    cluster,
    start_operator,
)
from tests.support.job_templates import (
    PAYLOAD,
    TEMPLATES,
    envelope,
    make_launch,
    register_job_kinds,
    run_handler,
)
from tests.support.kube_emulator import VersionedEmulator
from tests.support.waiting import eventually

RABBIT_URL = "amqp://127.0.0.1:5672/"
RABBITMQ = {"rabbit": {"type": "rabbitmq", "url": RABBIT_URL}}
T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T02:00:00Z"


class PreconditionEmulator(VersionedEmulator):
    """VersionedEmulator that honours a merge patch's metadata.resourceVersion precondition."""

    async def _handle(self, request: kmock.Request) -> Any:
        if not (
            request.resource is not None
            and request.action == kmock.action.UPDATE
            and isinstance(request.data, dict)
        ):
            return await super()._handle(request)
        # One update at a time, so that the check and the write are one step.
        async with _UPDATES.setdefault(id(self), asyncio.Lock()):
            expected = (request.data.get("metadata") or {}).get("resourceVersion")
            objects: Any = self._objects  # keyed by (resource, namespace, name), as kmock does
            key = (request.resource, request.namespace, request.name)
            if expected is not None and key in objects and not objects[key].deleted:
                current = objects[key].raw["metadata"].get("resourceVersion")
                if current != expected:
                    raise kmock.KubernetesError(
                        status=409,
                        reason="Conflict",
                        message=f"the object has been modified ({expected} != {current})",
                    )
            return await super()._handle(request)


_UPDATES: dict[int, asyncio.Lock] = {}

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.kmock(cls=PreconditionEmulator),
    pytest.mark.rabbitmq,
]


# -- what the schedulers' controllers would write -----------------------------------------


def finished_status(kind: jobs.JobKind, *, ok: bool) -> dict[str, Any]:
    def condition(kind_of_end: str) -> dict[str, Any]:
        return {
            "type": kind_of_end,
            "status": "True",
            "reason": "BackoffLimitExceeded" if not ok else "Done",
            "message": "Job has reached the specified backoff limit" if not ok else "done",
            "lastTransitionTime": T1,
        }

    if kind == jobs.VOLCANO_JOB:
        phase = "Completed" if ok else "Failed"
        return {
            "state": {"phase": phase, "lastTransitionTime": T1, "reason": "x"},
            "conditions": [
                {"status": "Running", "lastTransitionTime": T0},
                {"status": phase, "lastTransitionTime": T1},
            ],
        }
    good = {jobs.BATCH_JOB: "Complete", jobs.PYTORCH_JOB: "Succeeded", jobs.TRAIN_JOB: "Complete"}
    status: dict[str, Any] = {"conditions": [condition(good[kind] if ok else "Failed")]}
    if kind != jobs.TRAIN_JOB:
        status["startTime"] = T0
        if ok:
            status["completionTime"] = T1
    return status


def resource(kind: jobs.JobKind) -> kube.Resource:
    return kube.Resource(kind.group, kind.version, kind.plural, kind.kind)


# -- fixtures -------------------------------------------------------------------------------


class Setup:
    def __init__(self, api: kube.Client, emulator: kmock.KubernetesEmulator, ns: str) -> None:
        self.api, self.emulator, self.ns = api, emulator, ns
        self.queues: list[str] = []

    def queue(self, actor: str) -> str:
        return names.queue_name(self.ns, actor)

    async def launch(
        self, kind: jobs.JobKind, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **kw: Any
    ) -> dict[str, Any]:
        """Launch one job for a new envelope; returns the job as stored."""
        launch = make_launch(
            TEMPLATES[kind], tmp_path=tmp_path, monkeypatch=monkeypatch,
            api_url=str(self.emulator.url), namespace=self.ns,
        )  # fmt: skip
        env_ = envelope(PAYLOAD, id=kw.pop("id", f"env-{uuid.uuid4().hex[:6]}"), **kw)
        parked, _ = await run_handler(launch, env_)
        await launch.api.aclose()
        name = parked["job"].rsplit("/", 1)[1]
        # kmock keeps no uid; the API server would have set one.
        return await self.api.patch(
            resource(kind), self.ns, name, {"metadata": {"uid": str(uuid.uuid4())}}
        )

    async def finish(self, kind: jobs.JobKind, job: dict[str, Any], *, ok: bool) -> dict[str, Any]:
        name = job["metadata"]["name"]
        return await self.api.patch_status(
            resource(kind), self.ns, name, finished_status(kind, ok=ok)
        )

    async def job(self, kind: jobs.JobKind, job: dict[str, Any]) -> dict[str, Any]:
        return await self.api.get(resource(kind), self.ns, job["metadata"]["name"])


@pytest.fixture
async def setup(
    cluster: Any,  # noqa: F811  (the fixture imported above)
    rabbitmq_url: str,
) -> AsyncIterator[Setup]:
    register_job_kinds(cluster.emulator)
    ns = f"jobs-{uuid.uuid4().hex[:8]}"
    result = Setup(cluster.api, cluster.emulator, ns)
    queues = [result.queue("evaluate"), result.queue(names.SINK)]
    async with transports.create("rabbitmq", {env.RABBITMQ_URL: rabbitmq_url}) as broker:
        for queue in queues:
            await broker.ensure_queue(queue)
    try:
        yield result
    finally:
        async with transports.create("rabbitmq", {env.RABBITMQ_URL: rabbitmq_url}) as broker:
            for queue in queues:
                await broker.delete_queue(queue)


def watcher(api: kube.Client) -> jobs_watch.Watcher:
    config = OperatorConfig.model_validate({"transports": RABBITMQ})
    return jobs_watch.Watcher(config, api, jobs_watch.Sender(config, api))


async def depth(queue: str) -> int:
    async with transports.create("rabbitmq", {env.RABBITMQ_URL: RABBIT_URL}) as broker:
        return await broker.queue_depth(queue)


async def take(queue: str, expected: int) -> list[dict[str, Any]]:
    """Wait for `expected` messages on `queue`, take them, and check no more are waiting."""
    await eventually(lambda: _at_least(queue, expected), f"{expected} message(s) on {queue}")
    async with transports.create("rabbitmq", {env.RABBITMQ_URL: RABBIT_URL}) as broker:
        receiver = broker.receive(queue, prefetch=expected + 1)
        bodies = []
        for _ in range(expected):
            delivery = await asyncio.wait_for(receiver.__anext__(), timeout=20)
            bodies.append(json.loads(delivery.body))
            await delivery.ack()
        await receiver.aclose()
        assert await broker.queue_depth(queue) == 0, f"more than {expected} on {queue}"
    return bodies


async def _at_least(queue: str, count: int) -> bool:
    return await depth(queue) >= count


NOW = datetime.datetime(2026, 1, 1, 3, tzinfo=datetime.UTC)
KIND_IDS = [k.kind + "." + k.group for k in jobs.KINDS]


# -- the watcher's steps, one job at a time -------------------------------------------------


@pytest.mark.parametrize("kind", jobs.KINDS, ids=KIND_IDS)
async def test_a_finished_job_of_each_kind_continues_the_route(
    setup: Setup, kind: jobs.JobKind, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await setup.launch(kind, tmp_path, monkeypatch)
    w = watcher(setup.api)
    assert await w.advance(kind, job, now=NOW) == "waiting"
    done = await setup.finish(kind, job, ok=True)

    assert await w.advance(kind, done, now=NOW) == "sent"

    (sent,) = await take(setup.queue("evaluate"), 1)
    assert sent["id"] == job["metadata"]["annotations"][jobs.ANNOTATION_ENVELOPE_ID]
    assert sent["route"] == {"prev": ["prepare", "train"], "curr": "evaluate", "next": []}
    assert sent["status"]["phase"] == "pending"
    assert sent["headers"]["traceparent"].startswith("00-0af7651916cd43dd")
    facts = sent["payload"]["job"]
    assert {k: sent["payload"][k] for k in PAYLOAD} == PAYLOAD
    assert (facts["kind"], facts["name"], facts["outcome"]) == (
        kind.kind,
        job["metadata"]["name"],
        "succeeded",
    )
    assert facts["uid"] == job["metadata"]["uid"]
    assert facts["finished_at"] == T1
    assert facts["conditions"], "the job's conditions travel with it"
    stored = await setup.job(kind, job)
    assert stored["metadata"]["annotations"][jobs.ANNOTATION_CONTINUATION] == "sent"
    assert await w.advance(kind, stored, now=NOW) == "done"
    await w.sender.aclose()


@pytest.mark.parametrize("kind", [jobs.BATCH_JOB, jobs.VOLCANO_JOB], ids=lambda k: k.group)
async def test_a_failed_job_fails_the_envelope_with_its_conditions(
    setup: Setup, kind: jobs.JobKind, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await setup.launch(kind, tmp_path, monkeypatch)
    failed = await setup.finish(kind, job, ok=False)
    w = watcher(setup.api)

    assert await w.advance(kind, failed, now=NOW) == "sent"

    (sunk,) = await take(setup.queue(names.SINK), 1)
    assert sunk["route"] == {"prev": ["prepare", "train"], "curr": "x-sink", "next": ["evaluate"]}
    status = sunk["status"]
    assert (status["phase"], status["reason"], status["actor"]) == ("failed", "JobFailed", "train")
    assert status["error"]["type"] == "JobFailed"
    assert "Failed" in status["error"]["message"]
    if kind == jobs.BATCH_JOB:
        assert "BackoffLimitExceeded" in status["error"]["message"]
    assert sunk["payload"]["job"]["outcome"] == "failed"
    assert await depth(setup.queue("evaluate")) == 0
    await w.sender.aclose()


async def test_the_deadline_applies_while_the_job_runs(
    setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await setup.launch(
        jobs.PYTORCH_JOB, tmp_path, monkeypatch, deadline_at="2026-01-01T01:00:00.000Z"
    )
    w = watcher(setup.api)
    early = datetime.datetime(2026, 1, 1, 0, 30, tzinfo=datetime.UTC)
    assert await w.advance(jobs.PYTORCH_JOB, job, now=early) == "waiting"

    assert await w.advance(jobs.PYTORCH_JOB, job, now=NOW) == "sent"

    (sunk,) = await take(setup.queue(names.SINK), 1)
    assert (sunk["status"]["phase"], sunk["status"]["reason"]) == ("failed", "Timeout")
    assert sunk["status"]["error"]["mro"] == ["DeadlineExceeded", "TimeoutError"]
    assert sunk["status"]["deadline_at"] == "2026-01-01T01:00:00.000Z"
    with pytest.raises(kube.NotFound):
        await setup.job(jobs.PYTORCH_JOB, job)  # stopped: nothing will read its result
    await w.sender.aclose()


async def test_the_sweep_applies_a_deadline_without_any_event(
    setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=1)
    deadline = soon.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    job = await setup.launch(jobs.BATCH_JOB, tmp_path, monkeypatch, deadline_at=deadline)
    w = watcher(setup.api)
    now = datetime.datetime.now(datetime.UTC)
    assert await w.advance(jobs.BATCH_JOB, job, now=now) == "waiting"
    assert job["metadata"]["uid"] in w.pending, "a job with a deadline is watched over"

    sweeping = asyncio.create_task(jobs_watch.sweep(w, interval=0.2))
    try:
        (sunk,) = await take(setup.queue(names.SINK), 1)
    finally:
        sweeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeping
    assert sunk["status"]["reason"] == "Timeout"
    assert w.pending == {}
    await w.sender.aclose()


async def test_a_running_job_without_a_deadline_is_left_to_its_events(
    setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await setup.launch(jobs.BATCH_JOB, tmp_path, monkeypatch)
    w = watcher(setup.api)
    assert await w.advance(jobs.BATCH_JOB, job, now=NOW) == "waiting"
    assert w.pending == {}
    await w.sender.aclose()


async def test_two_watchers_at_once_send_one_continuation(
    setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await setup.launch(jobs.BATCH_JOB, tmp_path, monkeypatch)
    done = await setup.finish(jobs.BATCH_JOB, job, ok=True)
    first, second = watcher(setup.api), watcher(setup.api)

    results = await asyncio.gather(
        first.advance(jobs.BATCH_JOB, done, now=NOW),
        second.advance(jobs.BATCH_JOB, done, now=NOW),
    )

    assert sorted(results) == ["conflict", "sent"]
    assert len(await take(setup.queue("evaluate"), 1)) == 1
    await first.sender.aclose()
    await second.sender.aclose()


@pytest.mark.parametrize(
    ("claimed_at", "expected", "messages"),
    [
        # Claimed 2 minutes ago by a process that is gone: taken over, sent once.
        (NOW - datetime.timedelta(minutes=2), "sent", 1),
        # Claimed a moment ago by another live process: it may be sending right now.
        (NOW - datetime.timedelta(seconds=5), "claimed-elsewhere", 0),
    ],
    ids=["stale", "fresh"],
)
async def test_another_watchers_claim(
    setup: Setup,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    claimed_at: datetime.datetime,
    expected: str,
    messages: int,
) -> None:
    job = await setup.launch(jobs.TRAIN_JOB, tmp_path, monkeypatch)
    await setup.finish(jobs.TRAIN_JOB, job, ok=True)
    value = jobs_watch.claim_value("old-pod/1234", claimed_at)
    claimed = await setup.api.patch(
        resource(jobs.TRAIN_JOB), setup.ns, job["metadata"]["name"],
        {"metadata": {"annotations": {jobs.ANNOTATION_CONTINUATION: value}}},
    )  # fmt: skip
    w = watcher(setup.api)

    assert await w.advance(jobs.TRAIN_JOB, claimed, now=NOW) == expected

    if messages:
        assert len(await take(setup.queue("evaluate"), messages)) == messages
    else:
        assert await depth(setup.queue("evaluate")) == 0
        assert claimed["metadata"]["uid"] in w.pending, "the sweep looks again later"
    await w.sender.aclose()


async def test_a_continuation_sent_but_not_marked_is_only_marked_later(
    setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await setup.launch(jobs.BATCH_JOB, tmp_path, monkeypatch)
    done = await setup.finish(jobs.BATCH_JOB, job, ok=True)
    w = watcher(setup.api)
    # As if the mark after the send had failed: the job still shows this process's claim.
    w.delivered.add(done["metadata"]["uid"])
    ours = {jobs.ANNOTATION_CONTINUATION: jobs_watch.claim_value(w.holder, NOW)}
    claimed = await setup.api.patch(
        resource(jobs.BATCH_JOB), setup.ns, job["metadata"]["name"],
        {"metadata": {"annotations": ours}},
    )  # fmt: skip

    assert await w.advance(jobs.BATCH_JOB, claimed, now=NOW) == "sent"

    assert await depth(setup.queue("evaluate")) == 0, "not sent a second time"
    assert await _sent(setup, jobs.BATCH_JOB, job)
    await w.sender.aclose()


async def test_a_send_that_fails_releases_the_claim_for_a_later_try(
    setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await setup.launch(jobs.BATCH_JOB, tmp_path, monkeypatch)
    done = await setup.finish(jobs.BATCH_JOB, job, ok=True)
    config = OperatorConfig.model_validate(
        {"transports": {"rabbit": {"type": "rabbitmq", "url": "amqp://127.0.0.1:1/"}}}
    )
    broken = jobs_watch.Watcher(
        config, setup.api, jobs_watch.Sender(config, setup.api, timeout=5.0)
    )

    assert await broken.advance(jobs.BATCH_JOB, done, now=NOW) == "retry"

    stored = await setup.job(jobs.BATCH_JOB, job)
    assert jobs.ANNOTATION_CONTINUATION not in stored["metadata"]["annotations"]
    assert stored["metadata"]["uid"] in broken.pending, "the sweep will look again"
    w = watcher(setup.api)
    assert await w.advance(jobs.BATCH_JOB, stored, now=NOW) == "sent"
    assert len(await take(setup.queue("evaluate"), 1)) == 1
    await broken.sender.aclose()
    await w.sender.aclose()


# -- in the operator ------------------------------------------------------------------------


async def test_the_operator_continues_a_job_exactly_once_across_a_restart(
    setup: Setup,
    start_operator: Any,  # noqa: F811  (the fixture imported above)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kind = jobs.BATCH_JOB
    async with start_operator(setup.ns, {"transports": RABBITMQ}):
        first = await setup.launch(kind, tmp_path, monkeypatch)
        await setup.finish(kind, first, ok=True)
        (sent,) = await take(setup.queue("evaluate"), 1)
        assert sent["payload"]["job"]["name"] == first["metadata"]["name"]
        await eventually(
            lambda: _sent(setup, kind, first), "the first job marked sent", ignore=kube.NotFound
        )
        # A second job is still running when the operator stops.
        second = await setup.launch(kind, tmp_path, monkeypatch)

    # It finishes while no operator runs.
    await setup.finish(kind, second, ok=True)
    assert await depth(setup.queue("evaluate")) == 0

    async with start_operator(setup.ns, {"transports": RABBITMQ}):
        (sent,) = await take(setup.queue("evaluate"), 1)
        assert sent["payload"]["job"]["name"] == second["metadata"]["name"]
        await eventually(lambda: _sent(setup, kind, second), "the second job marked sent")

    # Once more: both jobs are marked sent, so a third start sends nothing for them. A third
    # job launched then is continued after kopf's initial listing has shown the first two.
    async with start_operator(setup.ns, {"transports": RABBITMQ}):
        third = await setup.launch(kind, tmp_path, monkeypatch)
        await setup.finish(kind, third, ok=True)
        (sent,) = await take(setup.queue("evaluate"), 1)
        assert sent["payload"]["job"]["name"] == third["metadata"]["name"]
        await eventually(lambda: _sent(setup, kind, third), "the third job marked sent")
    assert await depth(setup.queue("evaluate")) == 0
    # kopf watched the user's jobs without writing its own state into them.
    stored = await setup.job(kind, first)
    assert not stored["metadata"].get("finalizers")
    assert set(stored["metadata"]["annotations"]) == {
        jobs.ANNOTATION_ENVELOPE,
        jobs.ANNOTATION_ENVELOPE_ID,
        jobs.ANNOTATION_CONTINUATION,
    }


async def _sent(setup: Setup, kind: jobs.JobKind, job: dict[str, Any]) -> bool:
    stored = await setup.job(kind, job)
    annotations: dict[str, str] = stored["metadata"]["annotations"]
    return annotations.get(jobs.ANNOTATION_CONTINUATION) == jobs.CONTINUATION_SENT
