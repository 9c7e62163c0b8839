"""A batch job in a whole pipeline: `a -> train (Launch) -> c` as real runtime and sidecar
processes on RabbitMQ, the Kubernetes API played by kmock, and the operator's job watcher
continuing the envelope when the test (playing the Job controller) finishes the job."""

from __future__ import annotations

import datetime
import json
from dataclasses import replace
from pathlib import Path

import kmock
import pytest

from asya_cli.local_pipeline import LocalPipeline
from asya_operator import jobs_watch, kube
from asya_operator.config import OperatorConfig
from asya_shared import jobs
from tests.support.job_templates import PAYLOAD, TEMPLATES, register_job_kinds
from tests.support.pipeline import StartPipeline, actor
from tests.support.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.rabbitmq]
BATCH = kube.Resource("batch", "v1", "jobs", "Job")
DONE = {
    "startTime": "2026-01-01T00:00:00Z",
    "completionTime": "2026-01-01T01:00:00Z",
    "conditions": [{"type": "Complete", "status": "True"}],
}


@pytest.mark.parametrize("transport_kind", ["rabbitmq"], indirect=True)
async def test_a_job_parks_the_envelope_and_the_watcher_continues_it(
    kmock: kmock.KubernetesEmulator, start_pipeline: StartPipeline, tmp_path: Path
) -> None:
    register_job_kinds(kmock)
    template = tmp_path / "job.yaml"
    template.write_text(TEMPLATES[jobs.BATCH_JOB])

    def jobs_in_the_pipelines_namespace(pipeline: LocalPipeline) -> None:
        # As in a cluster, jobs go to the actor's own namespace, where its queues are too.
        extra = {"ASYA_JOB_NAMESPACE": pipeline.settings.namespace}
        pipeline.specs = [
            replace(spec, env={**spec.env, **extra}) if spec.name == "train/runtime" else spec
            for spec in pipeline.specs
        ]

    pipeline = await start_pipeline(
        [
            actor("a", "flow.mark_a"),
            actor(
                "train",
                "asya_callers.jobs.Launch.handle",
                env={"ASYA_JOB_TEMPLATE": str(template), "ASYA_JOB_KUBE_API": str(kmock.url)},
            ),
            actor("c", "flow.mark_c"),
        ],
        prepare=jobs_in_the_pipelines_namespace,
    )
    ns = pipeline.pipeline.settings.namespace
    envelope_id = await pipeline.send(["a", "train", "c"], {**PAYLOAD, "trail": []})

    async with kube.Client(str(kmock.url)) as api:
        (job,) = await eventually(lambda: api.list(BATCH, ns), "the job Launch creates")
        name = job["metadata"]["name"]
        # Parked: nothing reached x-sink while the job runs.
        assert pipeline.stored(envelope_id) is None
        await api.patch_status(BATCH, ns, name, DONE)
        job = await api.patch(BATCH, ns, name, {"metadata": {"uid": "uid-1"}})

        config = OperatorConfig.model_validate(
            {"transports": {"rabbit": {"type": "rabbitmq", "url": "amqp://127.0.0.1:5672/"}}}
        )
        watcher = jobs_watch.Watcher(config, api, jobs_watch.Sender(config, api))
        now = datetime.datetime.now(datetime.UTC)
        assert await watcher.advance(jobs.BATCH_JOB, job, now=now) == "sent"
        await watcher.sender.aclose()

    result = await pipeline.result(envelope_id)
    assert result["payload"]["trail"] == ["a", "c"]
    assert result["payload"]["job"]["outcome"] == "succeeded"
    assert result["payload"]["job"]["name"] == name
    assert result["route"] == {"prev": ["a", "train", "c"], "curr": "x-sink", "next": []}
    assert result["status"]["phase"] == "succeeded"
    parked = json.loads(job["metadata"]["annotations"][jobs.ANNOTATION_ENVELOPE])
    assert parked["route"] == {"prev": ["a"], "curr": "train", "next": ["c"]}
