"""The job template and the job object Launch builds from it: pure functions, no I/O."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from asya_callers import job_manifest, job_template
from asya_callers.errors import ConfigError, InvalidInput
from asya_shared import jobs
from tests.support.batch_schemas import validate_job
from tests.support.job_templates import PAYLOAD, TEMPLATES, envelope
from tests.support.schemas import CrdValidator, validate

SOURCE = "ASYA_JOB_TEMPLATE (t.yaml)"


def parse(text: str) -> job_template.Template:
    return job_template.parse(text, SOURCE)


def container(job: dict[str, Any]) -> dict[str, Any]:
    return dict(job["spec"]["template"]["spec"]["containers"][0])


class TestFill:
    def test_a_lone_placeholder_keeps_the_json_type(self) -> None:
        job = job_template.fill(parse(TEMPLATES[jobs.BATCH_JOB]), PAYLOAD)
        assert job["spec"]["parallelism"] == 2
        assert container(job)["args"] == ["--input=s3://bucket/day-1", "--model", "ranker"]

    def test_inside_text_a_value_is_its_text_and_nested_fields_are_reached(self) -> None:
        template = parse(
            "apiVersion: batch/v1\nkind: Job\nspec:\n  x: 'lr=${params.lr} tags=${tags} $${HOME}'"
        )
        job = job_template.fill(template, {"params": {"lr": 0.01}, "tags": ["a", "b"]})
        assert job["spec"]["x"] == 'lr=0.01 tags=["a", "b"] ${HOME}'

    @pytest.mark.parametrize(
        "evil",
        [
            "x\nkind: Pod\nspec: {hostNetwork: true}",
            "'], privileged: true, x: ['",
            "${other}",
            '"}, "hostPID": true, "x": {"',
            "!!python/object/apply:os.system ['id']",
        ],
    )
    def test_payload_values_are_data_never_yaml(self, evil: str) -> None:
        template = parse(TEMPLATES[jobs.BATCH_JOB])
        job = job_template.fill(template, {**PAYLOAD, "dataset": evil, "other": "no"})
        assert container(job)["args"][0] == f"--input={evil}"
        assert job["kind"] == "Job"
        # The object survives a round trip through YAML unchanged: nothing was spliced in.
        assert yaml.safe_load(yaml.safe_dump(job)) == job
        assert "hostNetwork" not in job["spec"]["template"]["spec"]

    def test_a_lone_placeholder_takes_an_object_as_data(self) -> None:
        template = parse("apiVersion: batch/v1\nkind: Job\nspec:\n  template: ${pod}")
        pod = {"spec": {"containers": [{"name": "a", "image": "b"}], "restartPolicy": "Never"}}
        job = job_template.fill(template, {"pod": pod})
        assert job["spec"]["template"] == pod
        assert job["spec"]["template"] is not pod

    def test_every_missing_field_is_named(self) -> None:
        template = parse(TEMPLATES[jobs.BATCH_JOB])
        with pytest.raises(InvalidInput) as caught:
            job_template.fill(template, {"workers": 1, "unrelated": True})
        message = str(caught.value)
        assert "'dataset'" in message
        assert "'model'" in message
        assert SOURCE in message
        assert "'unrelated'" in message, "the message lists what the payload has"

    def test_a_missing_nested_field_is_named_by_its_path(self) -> None:
        template = parse("apiVersion: batch/v1\nkind: Job\nspec:\n  x: ${params.lr}")
        with pytest.raises(InvalidInput, match=re.escape("'params.lr'")):
            job_template.fill(template, {"params": {"epochs": 1}})

    def test_a_payload_that_is_not_an_object(self) -> None:
        with pytest.raises(InvalidInput, match="must be a JSON object, got list"):
            job_template.fill(parse(TEMPLATES[jobs.BATCH_JOB]), [1, 2])


class TestParse:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("a: [", "is not valid YAML"),
            ("- a\n- b", "must hold one job manifest"),
            ("apiVersion: v1\nkind: Pod\nspec: {}", "not a job kind Asya launches"),
            (
                "apiVersion: batch/v1\nkind: Job\nmetadata: {name: x}\nspec: {}",
                "remove metadata.name",
            ),
            ("apiVersion: batch/v1\nkind: Job\nspec: {'${k}': 1}", "placeholders fill values only"),
            ("apiVersion: batch/v1\nkind: Job\nspec: {a: '${a b}'}", "does not name a payload"),
            ("apiVersion: batch/v1\nkind: Job", "has no spec"),
        ],
    )
    def test_mistakes_stop_the_actor_at_start(self, text: str, expected: str) -> None:
        with pytest.raises(ConfigError, match=re.escape(expected)) as caught:
            parse(text)
        assert SOURCE in str(caught.value)

    def test_fields_are_listed_once_in_order(self) -> None:
        assert parse(TEMPLATES[jobs.BATCH_JOB]).fields == ("workers", "dataset", "model")


class TestJobName:
    def test_stable_dns_safe_and_short(self) -> None:
        name = job_template.job_name("0d6f1c2e-aaaa-bbbb-cccc-123456789abc", "train")
        assert name == job_template.job_name("0d6f1c2e-aaaa-bbbb-cccc-123456789abc", "train")
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name)
        assert len(name) <= job_template.MAX_NAME
        assert name.startswith("train-")

    def test_ids_a_name_cannot_tell_apart_still_differ(self) -> None:
        names = {job_template.job_name(i, "t") for i in ("Ab_1", "ab-1", "ab_1", "AB_1", "ab-1-1")}
        assert len(names) == 5

    @pytest.mark.parametrize("prefix", ["Nightly_Train!", "9lives", "-", "x" * 80])
    def test_any_prefix_gives_a_valid_name(self, prefix: str) -> None:
        name = job_template.job_name("id", prefix)
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name)
        assert len(name) <= job_template.MAX_NAME


def build(kind: jobs.JobKind, *, kueue: str | None = None, payload: Any = None) -> dict[str, Any]:
    filled = job_template.fill(parse(TEMPLATES[kind]), payload or PAYLOAD)
    return job_manifest.build(
        filled,
        kind=kind,
        name="train-0123456789abcdef",
        namespace="ml",
        actor="train",
        envelope=envelope(payload or PAYLOAD),
        kueue_queue=kueue,
    )


class TestManifest:
    @pytest.mark.parametrize("kind", jobs.KINDS, ids=lambda k: k.kind + "." + k.group)
    def test_every_kind_is_valid_and_carries_its_envelope(self, kind: jobs.JobKind) -> None:
        job = build(kind)
        validate_job(job)
        meta = job["metadata"]
        assert (meta["name"], meta["namespace"]) == ("train-0123456789abcdef", "ml")
        assert meta["labels"][jobs.LABEL_LAUNCHED_BY] == "train"
        assert json.loads(meta["annotations"][jobs.ANNOTATION_ENVELOPE]) == envelope(PAYLOAD)
        assert meta["annotations"][jobs.ANNOTATION_ENVELOPE_ID] == "env-1"

    @pytest.mark.parametrize("kind", jobs.KINDS, ids=lambda k: k.kind + "." + k.group)
    def test_the_schemas_refuse_a_misspelled_field(self, kind: jobs.JobKind) -> None:
        job = build(kind)
        job["spec"]["sheduler"] = "typo"
        with pytest.raises(Exception, match="sheduler"):
            validate_job(job)

    def test_volcano_gang_schedules_all_replicas(self) -> None:
        spec = build(jobs.VOLCANO_JOB)["spec"]
        assert spec["schedulerName"] == "volcano"
        assert spec["minAvailable"] == 2

    def test_volcano_keeps_the_templates_own_choices(self) -> None:
        text = TEMPLATES[jobs.VOLCANO_JOB].replace("  queue: default\n", "  minAvailable: 1\n")
        filled = job_template.fill(parse(text), PAYLOAD)
        job = job_manifest.build(
            filled, kind=jobs.VOLCANO_JOB, name="n", namespace="ml", actor="a",
            envelope=envelope(PAYLOAD), kueue_queue=None,
        )  # fmt: skip
        assert job["spec"]["minAvailable"] == 1

    def test_kueue_labels_and_suspends_a_batch_job(self) -> None:
        job = build(jobs.BATCH_JOB, kueue="team-a")
        validate_job(job)
        assert job["metadata"]["labels"][job_manifest.KUEUE_QUEUE_LABEL] == "team-a"
        assert job["metadata"]["labels"]["team"] == "ml", "the template's labels stay"
        assert job["spec"]["suspend"] is True

    def test_a_kueue_label_in_the_template_also_suspends(self) -> None:
        text = TEMPLATES[jobs.BATCH_JOB].replace(
            "labels: {team: ml}", "labels: {kueue.x-k8s.io/queue-name: gpu}"
        )
        filled = job_template.fill(parse(text), PAYLOAD)
        job = job_manifest.build(
            filled, kind=jobs.BATCH_JOB, name="n", namespace="ml", actor="a",
            envelope=envelope(PAYLOAD), kueue_queue=None,
        )  # fmt: skip
        assert job["spec"]["suspend"] is True

    def test_kueue_suspends_kubeflow_jobs_where_each_kind_says(self) -> None:
        pytorch = build(jobs.PYTORCH_JOB, kueue="q")
        train = build(jobs.TRAIN_JOB, kueue="q")
        validate_job(pytorch)
        validate_job(train)
        assert pytorch["spec"]["runPolicy"]["suspend"] is True
        assert train["spec"]["suspend"] is True

    def test_without_kueue_nothing_is_suspended(self) -> None:
        job = build(jobs.BATCH_JOB)
        assert "suspend" not in job["spec"]
        assert job_manifest.KUEUE_QUEUE_LABEL not in job["metadata"]["labels"]

    def test_an_envelope_too_large_to_park_is_refused(self) -> None:
        payload = {**PAYLOAD, "blob": "x" * (jobs.MAX_PARKED_BYTES + 1)}
        with pytest.raises(InvalidInput, match="by reference"):
            build(jobs.BATCH_JOB, payload=payload)


DOC = Path(__file__).resolve().parents[2] / "docs" / "jobs.md"
DOC_PAYLOAD = {"dataset": "s3://b/d", "output": "s3://b/o", "workers": 3, "base_model": "m"}


def doc_objects() -> list[dict[str, Any]]:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    return [obj for block in blocks for obj in yaml.safe_load_all(block) if obj]


class TestDocs:
    """docs/jobs.md: every example is what it claims to be."""

    def test_every_actor_is_admitted_by_the_crd(self) -> None:
        validator = CrdValidator.from_file(
            Path(__file__).resolve().parents[2] / "crds" / "asyncactor.yaml"
        )
        actors = [o for o in doc_objects() if o["kind"] == "AsyncActor"]
        assert len(actors) == 4
        for actor in actors:
            assert validator.errors(actor) == [], actor["metadata"]["name"]
            assert actor["spec"]["handler"] == "asya_callers.jobs.Launch.handle"

    def test_every_template_makes_a_valid_job_of_each_kind(self) -> None:
        configmaps = [o for o in doc_objects() if o["kind"] == "ConfigMap"]
        kinds = set()
        for configmap in configmaps:
            template = job_template.parse(
                configmap["data"]["job.yaml"], configmap["metadata"]["name"]
            )
            filled = job_template.fill(template, DOC_PAYLOAD)
            job = job_manifest.build(
                filled, kind=template.kind, name="doc-0123456789abcdef", namespace="ml",
                actor="doc", envelope=envelope(DOC_PAYLOAD), kueue_queue=None,
            )  # fmt: skip
            validate_job(job)
            kinds.add(template.kind)
        assert kinds == set(jobs.KINDS)

    def test_the_rbac_example_is_valid_and_grants_only_create_and_get(self) -> None:
        rbac = [
            o
            for o in doc_objects()
            if o["apiVersion"].startswith("rbac.") or o["kind"] == "ServiceAccount"
        ]
        validate(rbac)
        (role,) = [o for o in rbac if o["kind"] == "Role"]
        assert {tuple(r["verbs"]) for r in role["rules"]} == {("create", "get")}
        assert {(r["apiGroups"][0], r["resources"][0]) for r in role["rules"]} == {
            (k.group, k.plural) for k in jobs.KINDS
        }
