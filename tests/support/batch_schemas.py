"""Validation of launched jobs against the real schemas: batch/v1 Jobs through
kubernetes-validate, Volcano, Kubeflow and Trainer jobs against their projects' published
CRDs in tests/data/batch (copied unchanged; see the README there)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from asya_shared import jobs

BATCH_SCHEMAS = Path(__file__).resolve().parents[1] / "data" / "batch"
K8S_VERSION = kubernetes_validate.latest_version()
_FILES = {
    jobs.VOLCANO_JOB: "batch.volcano.sh_jobs.yaml",
    jobs.PYTORCH_JOB: "kubeflow.org_pytorchjobs.yaml",
    jobs.TRAIN_JOB: "trainer.kubeflow.org_trainjobs.yaml",
}


def _strict(schema: Any) -> Any:
    """The CRD's schema as plain JSON Schema that refuses unknown fields (the API server
    would prune a misspelled one silently), except where the CRD preserves them."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    result = {k: _strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    preserves = schema.get("x-kubernetes-preserve-unknown-fields") is True
    if "properties" in result and "additionalProperties" not in result and not preserves:
        result["additionalProperties"] = False
    if schema.get("x-kubernetes-int-or-string") is True and "type" not in schema:
        result.pop("anyOf", None)
        result["type"] = ["integer", "string"]
    return result


@functools.cache
def crd_validator(kind: jobs.JobKind) -> jsonschema.Draft7Validator:
    crd = yaml.safe_load((BATCH_SCHEMAS / _FILES[kind]).read_text())
    assert crd["spec"]["group"] == kind.group
    assert crd["spec"]["names"]["kind"] == kind.kind
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == kind.version]
    return jsonschema.Draft7Validator(_strict(version["schema"]["openAPIV3Schema"]))


def validate_job(obj: dict[str, Any]) -> None:
    """Raise when the job's schema refuses it (unknown fields included)."""
    kind = jobs.kind_of(obj.get("apiVersion"), obj.get("kind"))
    assert kind is not None, f"not a job kind: {obj.get('apiVersion')} {obj.get('kind')}"
    if kind == jobs.BATCH_JOB:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    else:
        crd_validator(kind).validate(obj)
