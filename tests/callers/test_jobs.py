"""asya_callers.jobs.Launch against kmock's Kubernetes API emulator: one job per envelope, of
each kind, checked against the real schemas; redelivery; bad payloads and bad settings."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import kmock
import pytest

from asya_callers import job_template
from asya_callers.errors import (
    BadRequest,
    ConfigError,
    InvalidInput,
    RateLimited,
    ServerError,
    Unreachable,
)
from asya_shared import jobs
from tests.support.batch_schemas import validate_job
from tests.support.job_templates import (
    PAYLOAD,
    TEMPLATES,
    envelope,
    make_launch,
    register_job_kinds,
    run_handler,
)
from tests.support.scripted_server import Answer, ScriptedServer
from tests.support.services import free_port

NS = "ml"


@pytest.fixture
def api(kmock: kmock.KubernetesEmulator) -> kmock.KubernetesEmulator:
    register_job_kinds(kmock)
    return kmock


def stored(emulator: kmock.KubernetesEmulator, kind: jobs.JobKind) -> list[dict[str, Any]]:
    """The jobs of `kind` the emulator holds (not deleted)."""
    return [
        dict(obj.raw)
        for (resource, _namespace, _name), obj in emulator.objects.items()
        if (resource.group, resource.version, resource.plural)
        == (kind.group, kind.version, kind.plural)
        and not obj.deleted
    ]


def launch_for(api: kmock.KubernetesEmulator, kind: jobs.JobKind, **kw: Any) -> Any:
    return make_launch(TEMPLATES[kind], api_url=str(api.url), namespace=NS, **kw)


@pytest.mark.parametrize("kind", jobs.KINDS, ids=lambda k: k.kind + "." + k.group)
async def test_each_kind_is_created_valid_and_the_envelope_parked(
    api: kmock.KubernetesEmulator,
    kind: jobs.JobKind,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    launch = launch_for(api, kind, tmp_path=tmp_path, monkeypatch=monkeypatch)
    env = envelope(PAYLOAD)
    parked, fly = await run_handler(launch, env)

    (job,) = stored(api, kind)
    validate_job(job)
    name = job_template.job_name("env-1", "train")
    assert job["metadata"]["name"] == name
    assert job["metadata"]["namespace"] == NS
    assert json.loads(job["metadata"]["annotations"][jobs.ANNOTATION_ENVELOPE]) == env
    assert job["metadata"]["labels"][jobs.LABEL_LAUNCHED_BY] == "train"
    assert parked == {"job": f"{kind.plural}.{kind.group}/{name}"}
    assert fly == [
        {
            "job": {
                "apiVersion": kind.api_version,
                "kind": kind.kind,
                "namespace": NS,
                "name": name,
                "created": True,
            }
        }
    ]
    await launch.api.aclose()


async def test_a_redelivered_envelope_finds_its_job(
    api: kmock.KubernetesEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    launch = launch_for(api, jobs.BATCH_JOB, tmp_path=tmp_path, monkeypatch=monkeypatch)
    await run_handler(launch, envelope(PAYLOAD))
    # The same envelope again, as a broker redelivers it after a sidecar died before its ack.
    parked, fly = await run_handler(launch, envelope(PAYLOAD))
    assert len(stored(api, jobs.BATCH_JOB)) == 1
    assert fly[0]["job"]["created"] is False
    assert parked["job"].endswith(job_template.job_name("env-1", "train"))
    # Another envelope is another job.
    await run_handler(launch, envelope(PAYLOAD, id="env-2"))
    assert len(stored(api, jobs.BATCH_JOB)) == 2
    await launch.api.aclose()


async def test_a_name_taken_by_another_envelope_is_refused(
    api: kmock.KubernetesEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    launch = launch_for(api, jobs.BATCH_JOB, tmp_path=tmp_path, monkeypatch=monkeypatch)
    await run_handler(launch, envelope(PAYLOAD))
    (job,) = stored(api, jobs.BATCH_JOB)
    path = f"/apis/batch/v1/namespaces/{NS}/jobs/{job['metadata']['name']}"
    patch = {"metadata": {"annotations": {jobs.ANNOTATION_ENVELOPE_ID: "someone-else"}}}
    async with httpx.AsyncClient(base_url=str(api.url)) as client:
        response = await client.patch(
            path, json=patch, headers={"Content-Type": "application/merge-patch+json"}
        )
        assert response.status_code == 200
    with pytest.raises(InvalidInput, match="was not launched for envelope 'env-1'"):
        await run_handler(launch, envelope(PAYLOAD))
    await launch.api.aclose()


async def test_a_missing_field_fails_the_call_and_creates_nothing(
    api: kmock.KubernetesEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    launch = launch_for(api, jobs.PYTORCH_JOB, tmp_path=tmp_path, monkeypatch=monkeypatch)
    with pytest.raises(InvalidInput, match="'dataset'"):
        await run_handler(launch, envelope({"workers": 2}))
    assert stored(api, jobs.PYTORCH_JOB) == []
    await launch.api.aclose()


async def test_yaml_in_a_payload_value_lands_as_a_string(
    api: kmock.KubernetesEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    launch = launch_for(api, jobs.BATCH_JOB, tmp_path=tmp_path, monkeypatch=monkeypatch)
    evil = "x\n      securityContext: {privileged: true}\nkind: Pod"
    await run_handler(launch, envelope({**PAYLOAD, "dataset": evil}))
    (job,) = stored(api, jobs.BATCH_JOB)
    validate_job(job)
    (pod_container,) = job["spec"]["template"]["spec"]["containers"]
    assert pod_container["args"][0] == f"--input={evil}"
    assert "securityContext" not in pod_container
    assert job["kind"] == "Job"
    await launch.api.aclose()


async def test_kueue_queue_from_the_environment(
    api: kmock.KubernetesEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    launch = launch_for(
        api, jobs.BATCH_JOB, tmp_path=tmp_path, monkeypatch=monkeypatch,
        ASYA_JOB_KUEUE_QUEUE="team-a",
    )  # fmt: skip
    await run_handler(launch, envelope(PAYLOAD))
    (job,) = stored(api, jobs.BATCH_JOB)
    validate_job(job)
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert job["spec"]["suspend"] is True
    await launch.api.aclose()


class TestSettings:
    def test_kueue_with_a_volcano_template_is_refused(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        with pytest.raises(ConfigError, match="Volcano queues itself"):
            make_launch(
                TEMPLATES[jobs.VOLCANO_JOB], tmp_path=tmp_path, monkeypatch=monkeypatch,
                api_url="http://127.0.0.1:1", namespace=NS, ASYA_JOB_KUEUE_QUEUE="q",
            )  # fmt: skip

    def test_an_unreadable_template_names_the_variable_and_the_path(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        launch_template = tmp_path / "missing.yaml"
        monkeypatch.setenv("ASYA_JOB_TEMPLATE", str(launch_template))
        from asya_callers.jobs import Launch

        with pytest.raises(ConfigError, match=r"ASYA_JOB_TEMPLATE=.*missing\.yaml.*ConfigMap"):
            Launch(account_dir=tmp_path)

    def test_no_template_is_a_clear_error(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("ASYA_JOB_TEMPLATE", raising=False)
        from asya_callers.jobs import Launch

        with pytest.raises(ConfigError, match="ASYA_JOB_TEMPLATE is required"):
            Launch()

    def test_outside_a_pod_without_an_api_url(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        path = tmp_path / "t.yaml"
        path.write_text(TEMPLATES[jobs.BATCH_JOB])
        monkeypatch.setenv("ASYA_JOB_TEMPLATE", str(path))
        monkeypatch.setenv("ASYA_JOB_NAMESPACE", NS)
        monkeypatch.delenv("ASYA_JOB_KUBE_API", raising=False)
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        from asya_callers.jobs import Launch

        with pytest.raises(ConfigError, match="KUBERNETES_SERVICE_HOST is unset"):
            Launch(account_dir=tmp_path)

    def test_the_pods_namespace_is_the_default(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        path = tmp_path / "t.yaml"
        path.write_text(TEMPLATES[jobs.BATCH_JOB])
        (tmp_path / "namespace").write_text("team-a\n")
        (tmp_path / "token").write_text("t0ken")
        monkeypatch.setenv("ASYA_JOB_TEMPLATE", str(path))
        monkeypatch.delenv("ASYA_JOB_NAMESPACE", raising=False)
        monkeypatch.delenv("ASYA_JOB_KUBE_API", raising=False)
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
        from asya_callers.jobs import Launch

        launch = Launch(account_dir=tmp_path)
        assert launch.namespace == "team-a"
        assert launch.api.conn.url == "https://10.0.0.1:6443"
        assert launch.api.conn.token_file == tmp_path / "token"


class TestApiFailures:
    """What the API server answers becomes the callers' typed errors (a real HTTP server
    scripted with the answers an API server gives)."""

    PATH = f"/apis/batch/v1/namespaces/{NS}/jobs"

    @pytest.mark.parametrize(
        ("answer", "error", "named"),
        [
            (
                Answer(403, {"kind": "Status", "message": 'jobs.batch is forbidden: User "x"'}),
                BadRequest,
                "needs create and get on jobs.batch",
            ),
            (
                Answer(404, {"kind": "Status", "message": "the server could not find it"}),
                BadRequest,
                "does not serve jobs.batch",
            ),
            (
                Answer(422, {"kind": "Status", "message": 'Job.batch "x" is invalid: spec'}),
                BadRequest,
                "is invalid",
            ),
            (Answer(429, {"message": "slow down"}, {"Retry-After": "3"}), RateLimited, "429"),
            (Answer(503, {"message": "etcd leader changed"}), ServerError, "etcd leader"),
        ],
    )
    async def test_answers(
        self,
        scripted_server: ScriptedServer,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        answer: Answer,
        error: type[Exception],
        named: str,
    ) -> None:
        scripted_server.script(self.PATH, answer)
        launch = make_launch(
            TEMPLATES[jobs.BATCH_JOB], tmp_path=tmp_path, monkeypatch=monkeypatch,
            api_url=scripted_server.url, namespace=NS,
        )  # fmt: skip
        with pytest.raises(error, match=named) as caught:
            await run_handler(launch, envelope(PAYLOAD))
        if isinstance(caught.value, RateLimited):
            assert caught.value.retry_after == 3.0
        await launch.api.aclose()

    async def test_an_api_server_that_does_not_answer(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        launch = make_launch(
            TEMPLATES[jobs.BATCH_JOB], tmp_path=tmp_path, monkeypatch=monkeypatch,
            api_url=f"http://127.0.0.1:{free_port()}", namespace=NS,
        )  # fmt: skip
        with pytest.raises(Unreachable, match="ConnectError"):
            await run_handler(launch, envelope(PAYLOAD))
        await launch.api.aclose()

    async def test_the_token_is_sent_and_read_afresh_each_call(
        self, scripted_server: ScriptedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        launch = make_launch(
            TEMPLATES[jobs.BATCH_JOB], tmp_path=tmp_path, monkeypatch=monkeypatch,
            api_url=scripted_server.url, namespace=NS,
        )  # fmt: skip
        token = tmp_path / "token"
        launch.api.conn = replace(launch.api.conn, token_file=token)
        for value in ("first", "rotated"):
            token.write_text(value + "\n")
            scripted_server.script(self.PATH, Answer(201, {"metadata": {}}))
            await run_handler(launch, envelope(PAYLOAD, id=value))
        seen = [r.headers.get("Authorization") for r in scripted_server.requests]
        assert seen == ["Bearer first", "Bearer rotated"]
        await launch.api.aclose()
