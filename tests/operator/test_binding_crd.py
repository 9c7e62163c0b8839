"""The AsyaBinding CRD: in sync with binding_models.py (both copies), a valid
CustomResourceDefinition, and admission (OpenAPI schema + CEL rules) of the manifests users
write, with the field names of the issue that introduced it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from asya_operator import crd
from asya_operator.binding_models import AsyaBinding
from tests.support.schemas import CrdValidator

CRD = crd.build_binding_crd()
ADMISSION = CrdValidator(CRD)

# The manifest of the issue and of docs/bindings.md, as users write it.
SENTIMENT: dict[str, Any] = yaml.safe_load(
    """
apiVersion: asya.sh/v1alpha1
kind: AsyaBinding
metadata: {name: sentiment-async, namespace: models}
spec:
  workloadRef: {kind: Deployment, name: sentiment-classifier-predictor}
  transport: {name: sqs}
  scaling: {enabled: true, minReplicas: 0, maxReplicas: 20}
  caller:
    protocol: inference-v2
    port: 8080
    model: sentiment
  mode: auto
"""
)


def with_spec(**changes: Any) -> dict[str, Any]:
    manifest = copy.deepcopy(SENTIMENT)
    manifest["spec"].update(changes)
    return manifest


def test_committed_crds_are_up_to_date() -> None:
    for path in (crd.BINDING_CRD_PATH, crd.CHART_BINDING_CRD_PATH):
        assert path.read_text() == crd.render_binding(), f"{path} is stale: run `make crds`"


def test_check_covers_both_crds(tmp_path: Path) -> None:
    actor, binding = tmp_path / "asyncactor.yaml", tmp_path / "asyabinding.yaml"
    args = ["--output", str(actor), "--binding-output", str(binding)]
    assert crd.main(["--check", *args]) == 1
    assert crd.main(args) == 0
    assert crd.main(["--check", *args]) == 0
    binding.write_text(crd.render_binding().replace("maxLength: 63", "maxLength: 64", 1))
    assert crd.main(["--check", *args]) == 1


def test_is_a_valid_custom_resource_definition() -> None:
    kubernetes_validate.validate(CRD, latest_version(), strict=True)
    assert CRD["metadata"]["name"] == "asyabindings.asya.sh"
    version = CRD["spec"]["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns[:2] == ["Phase", "Mode"]
    assert "Age" in columns


def test_the_issue_manifest_is_admitted() -> None:
    assert ADMISSION.errors(SENTIMENT) == []
    AsyaBinding.from_object(SENTIMENT)


def test_the_optional_fields_are_admitted() -> None:
    manifest = with_spec(
        actor="sentiment",
        concurrency=4,
        resiliency={"actorTimeout": "30s", "policies": {"default": {"maxAttempts": 3}}},
        endpoint="http://sentiment.models.svc:8080",
        env=[{"name": "ASYA_V2_API_KEY", "valueFrom": {"secretKeyRef": {"name": "k", "key": "k"}}}],
        mode="bridge",
    )
    assert ADMISSION.errors(manifest) == []
    ray = with_spec(
        workloadRef={"apiVersion": "ray.io/v1", "kind": "RayService", "name": "llm"},
        scaling={"enabled": False},
        caller={"protocol": "openai-chat", "port": 8000, "maxTokens": 64},
    )
    assert ADMISSION.errors(ray) == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"mode": "sideways"}, "spec.mode"),
        ({"caller": {"protocol": "grpc", "port": 1}}, "spec.caller.protocol"),
        ({"caller": {"protocol": "inference-v2", "inputs": "x"}}, "caller.model is required"),
        (
            {"caller": {"protocol": "openai-chat", "inputs": "x"}},
            "caller.inputs applies only to protocol inference-v2",
        ),
        (
            {"caller": {"protocol": "http", "port": 80, "model": "m"}},
            "caller.model applies only to protocol",
        ),
        (
            {"caller": {"protocol": "openai-embeddings", "maxTokens": 5}},
            "caller.maxTokens applies only to protocol openai-chat or openai-completions",
        ),
        ({"mode": "inject", "endpoint": "http://x:1"}, "spec.endpoint is for bridge mode"),
        ({"endpoint": "ftp://x"}, "spec.endpoint"),
        ({"scaling": {"minReplicas": 5, "maxReplicas": 2}}, "minReplicas"),
        ({"transport": {}}, "spec.transport"),
        ({"workloadRef": {"name": "x"}}, "spec.workloadRef"),
        ({"replicas": 3}, "Additional properties"),
    ],
)
def test_refused_at_admission(changes: dict[str, Any], expected: str) -> None:
    errors = ADMISSION.errors(with_spec(**changes))
    assert any(expected in e for e in errors), errors


def test_a_name_too_long_for_the_bridge_is_refused() -> None:
    manifest = copy.deepcopy(SENTIMENT)
    manifest["metadata"]["name"] = "b" * 60
    assert any("-asya-bridge" in e for e in ADMISSION.errors(manifest))
