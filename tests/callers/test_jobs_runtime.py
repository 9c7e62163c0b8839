"""asya_callers.jobs.Launch.handle in the real runtime process: the call parks the envelope
(`yield "PARK"`), so the runtime answers no frames and the sidecar sends nothing on."""

from __future__ import annotations

import json
from pathlib import Path

import kmock

from asya_shared import jobs
from tests.support.job_templates import PAYLOAD, TEMPLATES, envelope, register_job_kinds
from tests.support.runtime import RuntimeFactory, async_client_for


async def test_launch_parks_the_envelope_in_the_runtime(
    kmock: kmock.KubernetesEmulator, start_runtime: RuntimeFactory, tmp_path: Path
) -> None:
    register_job_kinds(kmock)
    template = tmp_path / "job.yaml"
    template.write_text(TEMPLATES[jobs.BATCH_JOB])
    runtime = start_runtime(
        "asya_callers.jobs.Launch.handle",
        env={
            "ASYA_JOB_TEMPLATE": str(template),
            "ASYA_JOB_KUBE_API": str(kmock.url),
            "ASYA_JOB_NAMESPACE": "ml",
        },
    )
    sent = envelope(PAYLOAD)

    async with async_client_for(runtime.socket_path, 1) as client:
        response = await client.post("/invoke", json=sent)

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["frames"] == []
    name = answer["fly"][0]["job"]["name"]
    assert answer["parked"] == {"job": f"jobs.batch/{name}"}
    job = kmock.objects["batch/v1/jobs", "ml", name].raw
    assert json.loads(job["metadata"]["annotations"][jobs.ANNOTATION_ENVELOPE]) == sent
