"""`asya render binding.yaml --workload deployment.yaml`: what the operator would patch or
create for an AsyaBinding, printed for `kubectl diff`; and `asya dev` reading a binding as
the bridge actor it runs locally."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from asya_cli import manifests
from asya_operator.models import RUNTIME_CONTAINER, SIDECAR_CONTAINER
from tests.operator.test_binding_render import (
    binding_manifest,
    kserve_predictor,
    triton_with_hpa,
    vllm_deployment,
)
from tests.support.schemas import validate

ASYA = str(Path(sys.executable).with_name("asya"))
CONFIG = "transports:\n  rabbit: {type: rabbitmq, url: 'amqp://rabbitmq:5672/'}\n"


def asya_render(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ASYA, "render", *args], capture_output=True, text=True, timeout=60, check=False
    )


def write(path: Path, *documents: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump_all(documents))
    return str(path)


@pytest.fixture
def config(tmp_path: Path) -> str:
    path = tmp_path / "operator.yaml"
    path.write_text(CONFIG)
    return str(path)


def printed(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def test_inject_prints_the_patched_deployment_and_its_scaled_object(
    tmp_path: Path, config: str
) -> None:
    deployment = vllm_deployment()
    binding = write(tmp_path / "binding.yaml", binding_manifest("models", "chat"))
    workload = write(tmp_path / "vllm.yaml", deployment)
    objects = printed(asya_render(binding, "--workload", workload, "--operator-config", config))
    assert [o["kind"] for o in objects] == ["ConfigMap", "Deployment", "ScaledObject"]
    patched = objects[1]
    assert patched["metadata"]["name"] == "vllm"
    assert "uid" not in patched["metadata"], "the API server's own fields are left out"
    assert patched["metadata"]["annotations"]["asya.sh/bound-by"] == "chat"
    pod = patched["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["vllm", SIDECAR_CONTAINER]
    assert [c["name"] for c in pod["initContainers"]] == [RUNTIME_CONTAINER]
    # Everything else is the user's, untouched.
    assert pod["containers"][0] == deployment["spec"]["template"]["spec"]["containers"][0]
    assert patched["spec"]["selector"] == deployment["spec"]["selector"]
    validate(objects)


def test_bridge_prints_the_bridge_calling_the_service(tmp_path: Path, config: str) -> None:
    deployment, service = kserve_predictor()
    spec = {
        "workloadRef": {"kind": "Deployment", "name": deployment["metadata"]["name"]},
        "caller": {"protocol": "inference-v2", "port": 8080, "model": "m", "inputs": "x"},
    }
    binding = write(tmp_path / "binding.yaml", binding_manifest("models", "sentiment", **spec))
    workload = write(tmp_path / "predictor.yaml", deployment, service)
    objects = printed(asya_render(binding, "--workload", workload, "--operator-config", config))
    assert [o["kind"] for o in objects] == ["ConfigMap", "Deployment", "ScaledObject"]
    assert objects[1]["metadata"]["name"] == "sentiment-asya-bridge"
    validate(objects)


def test_a_refusal_is_the_operators_message(tmp_path: Path, config: str) -> None:
    deployment, hpa = triton_with_hpa()
    binding = write(
        tmp_path / "binding.yaml",
        binding_manifest("models", "t", workloadRef={"kind": "Deployment", "name": "triton"}),
    )
    workload = write(tmp_path / "triton.yaml", deployment, hpa)
    result = asya_render(binding, "--workload", workload, "--operator-config", config)
    assert result.returncode == 2
    assert "HorizontalPodAutoscaler triton" in result.stderr
    assert "ScaledByOthers" in result.stderr
    assert not result.stdout


def test_without_the_workload_it_says_to_pass_it(tmp_path: Path, config: str) -> None:
    binding = write(tmp_path / "binding.yaml", binding_manifest("models", "chat"))
    result = asya_render(binding, "--operator-config", config)
    assert result.returncode == 2
    assert "--workload FILE" in result.stderr


def test_a_workload_file_without_the_named_workload(tmp_path: Path, config: str) -> None:
    binding = write(tmp_path / "binding.yaml", binding_manifest("models", "chat"))
    other = write(tmp_path / "other.yaml", vllm_deployment(name="other"))
    result = asya_render(binding, "--workload", other, "--operator-config", config)
    assert result.returncode == 2
    assert "Deployment vllm" in result.stderr
    assert "Deployment other" in result.stderr


def test_dev_reads_a_binding_with_an_endpoint_as_its_bridge_actor() -> None:
    document = binding_manifest(
        "models",
        "iris",
        endpoint="http://127.0.0.1:8080",
        caller={"protocol": "inference-v2", "port": 8080, "model": "iris", "inputs": "x"},
        concurrency=2,
    )
    actor = manifests.parse_binding(document, source="b.yaml")
    assert actor.name == "iris"
    assert actor.handler == "asya_callers.inference_v2.Infer.handle"
    assert actor.concurrency == 2
    assert actor.env["ASYA_V2_BASE_URL"] == "http://127.0.0.1:8080"
    assert actor.env["ASYA_V2_MODEL"] == "iris"


def test_dev_needs_the_endpoint_of_a_binding() -> None:
    with pytest.raises(manifests.ManifestError, match=r"set it to the local server's URL"):
        manifests.parse_binding(binding_manifest("models", "chat"), source="b.yaml")
