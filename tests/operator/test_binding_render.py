"""AsyaBinding's pure parts: the mode chosen, the refusals, the inject patch and its exact
undoing, the bridge objects; every rendered object validated against the Kubernetes and KEDA
schemas. The workloads below are shaped as their tools create them (a vLLM Helm chart, KServe
RawDeployment, KubeRay, Triton's chart) and are shared with test_binding_operator.py."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from asya_operator import binding_decide, binding_render, render
from asya_operator import config as operator_config
from asya_operator.binding_decide import Refusal
from asya_operator.binding_models import AsyaBinding, Mode
from asya_operator.models import RUNTIME_CONTAINER, SIDECAR_CONTAINER
from tests.support.schemas import validate

CONFIG = operator_config.parse(
    {"transports": {"rabbit": {"type": "rabbitmq", "url": "amqp://127.0.0.1:5672/"}}}
)
SOURCE = "# the runtime\n"


# -- workloads, as their tools create them ---------------------------------------------------


def vllm_deployment(namespace: str = "models", name: str = "vllm") -> dict[str, Any]:
    """A plain Deployment from a Helm chart: nobody controls it."""
    labels = {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "uid": "uid-vllm", "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "vllm",
                            "image": "vllm/vllm-openai:v0.6.3",
                            "args": ["--model", "Qwen/Qwen2.5-0.5B-Instruct", "--port", "8000"],
                            "ports": [{"containerPort": 8000, "name": "http"}],
                            "resources": {"limits": {"nvidia.com/gpu": "1"}},
                            "volumeMounts": [{"name": "cache", "mountPath": "/root/.cache"}],
                        }
                    ],
                    "volumes": [{"name": "cache", "emptyDir": {}}],
                },
            },
        },
    }


def kserve_predictor(namespace: str = "models") -> tuple[dict[str, Any], dict[str, Any]]:
    """KServe RawDeployment: the predictor Deployment (controlled by the InferenceService) and
    the Service KServe creates for it."""
    name = "sentiment-classifier-predictor"
    labels = {
        "app": f"isvc.{name}",
        "serving.kserve.io/inferenceservice": "sentiment-classifier",
        "component": "predictor",
    }
    owner = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "name": "sentiment-classifier",
        "uid": "uid-isvc",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": "uid-predictor",
            "labels": labels,
            "ownerReferences": [owner],
        },
        "spec": {
            "selector": {"matchLabels": {"app": f"isvc.{name}"}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "kserve-container",
                            "image": "seldonio/mlserver:1.6.1",
                            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                        }
                    ]
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "ownerReferences": [owner]},
        "spec": {
            "selector": {"app": f"isvc.{name}"},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
        },
    }
    return deployment, service


def rayservice(namespace: str = "models") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A RayService and the two Services KubeRay creates for it: the head's (every head port,
    serving included) and the serve Service (only pods that serve)."""
    obj = {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": "llm", "namespace": namespace, "uid": "uid-ray"},
        "spec": {"serveConfigV2": "applications: []", "rayClusterConfig": {}},
    }
    owner = {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "name": "llm",
        "uid": "uid-ray",
        "controller": True,
    }
    head = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "llm-head-svc", "namespace": namespace, "ownerReferences": [owner]},
        "spec": {
            "selector": {"ray.io/node-type": "head"},
            "ports": [
                {"name": "dashboard", "port": 8265, "targetPort": 8265},
                {"name": "serve", "port": 8000, "targetPort": 8000},
            ],
        },
    }
    serve = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "llm-serve-svc", "namespace": namespace, "ownerReferences": [owner]},
        "spec": {
            "selector": {"ray.io/node-type": "head", "ray.io/serve": "true"},
            "ports": [{"name": "serve", "port": 8000, "targetPort": 8000}],
        },
    }
    return obj, [head, serve]


def triton_with_hpa(namespace: str = "models") -> tuple[dict[str, Any], dict[str, Any]]:
    deployment = vllm_deployment(namespace, "triton")
    deployment["spec"]["template"]["spec"]["containers"][0].update(
        name="triton", image="nvcr.io/nvidia/tritonserver:24.08-py3", args=["tritonserver"]
    )
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "triton", "namespace": namespace},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "triton"},
            "minReplicas": 1,
            "maxReplicas": 4,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 80},
                    },
                }
            ],
        },
    }
    return deployment, hpa


def binding_manifest(namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "workloadRef": {"kind": "Deployment", "name": "vllm"},
        "transport": {"name": "rabbit"},
        "scaling": {"enabled": True, "minReplicas": 0, "maxReplicas": 20},
        "caller": {"protocol": "openai-chat", "port": 8000},
    }
    base.update(spec)
    return {
        "apiVersion": "asya.sh/v1alpha1",
        "kind": "AsyaBinding",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
        "spec": base,
    }


def binding(name: str = "chat", **spec: Any) -> AsyaBinding:
    return AsyaBinding.from_object(binding_manifest("models", name, **spec))


def plan(b: AsyaBinding) -> render.Plan:
    return binding_render.plan(b, CONFIG)


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


# -- mode ------------------------------------------------------------------------------------


def test_auto_injects_a_deployment_nobody_controls() -> None:
    target = binding_decide.workload(vllm_deployment())
    assert binding_decide.choose_mode(binding(), target) == Mode.INJECT


def test_auto_bridges_a_deployment_another_controller_owns() -> None:
    deployment, _ = kserve_predictor()
    target = binding_decide.workload(deployment)
    assert target.controller == binding_decide.Owner("InferenceService", "sentiment-classifier")
    assert binding_decide.choose_mode(binding(), target) == Mode.BRIDGE


def test_inject_is_refused_where_the_owner_would_revert_it() -> None:
    deployment, _ = kserve_predictor()
    decided = binding_decide.choose_mode(
        binding(mode="inject"), binding_decide.workload(deployment)
    )
    assert isinstance(decided, Refusal)
    assert decided.reason == binding_decide.CANNOT_INJECT
    assert "InferenceService sentiment-classifier" in decided.message
    assert "mode bridge" in decided.message


def test_other_kinds_are_always_bridged() -> None:
    ray, _ = rayservice()
    target = binding_decide.workload(ray)
    ref = {"apiVersion": "ray.io/v1", "kind": "RayService", "name": "llm"}
    assert binding_decide.choose_mode(binding(workloadRef=ref), target) == Mode.BRIDGE
    refused = binding_decide.choose_mode(binding(workloadRef=ref, mode="inject"), target)
    assert isinstance(refused, Refusal)
    assert "RayService" in refused.message


def test_an_endpoint_asks_auto_for_a_bridge() -> None:
    target = binding_decide.workload(vllm_deployment())
    chosen = binding_decide.choose_mode(binding(endpoint="http://vllm:8000"), target)
    assert chosen == Mode.BRIDGE


# -- refusals --------------------------------------------------------------------------------


def test_an_hpa_on_the_workload_is_a_conflict_named_with_the_way_out() -> None:
    deployment, hpa = triton_with_hpa()
    b = binding(workloadRef={"kind": "Deployment", "name": "triton"})
    refusal = binding_decide.scaling_conflict(
        b, binding_decide.workload(deployment), autoscalers=[hpa], scaled_objects=[]
    )
    assert refusal is not None
    assert refusal.reason == binding_decide.SCALED_BY_OTHERS
    assert "HorizontalPodAutoscaler triton" in refusal.message
    assert "scaling.enabled: false" in refusal.message
    assert "mode bridge" in refusal.message


def test_kedas_own_hpa_and_scaled_object_are_no_conflict() -> None:
    deployment = vllm_deployment()
    target = binding_decide.workload(deployment)
    ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "vllm"}
    keda_hpa = {
        "metadata": {
            "name": "keda-hpa-chat",
            "ownerReferences": [{"kind": "ScaledObject", "name": "chat", "controller": True}],
        },
        "spec": {"scaleTargetRef": ref},
    }
    ours = {"metadata": {"name": "chat"}, "spec": {"scaleTargetRef": ref}}
    theirs = {"metadata": {"name": "other"}, "spec": {"scaleTargetRef": ref}}
    assert (
        binding_decide.scaling_conflict(
            binding(), target, autoscalers=[keda_hpa], scaled_objects=[ours]
        )
        is None
    )
    refusal = binding_decide.scaling_conflict(
        binding(), target, autoscalers=[], scaled_objects=[ours, theirs]
    )
    assert refusal is not None
    assert "ScaledObject other" in refusal.message


def test_the_older_binding_keeps_the_workload() -> None:
    first = binding_manifest("models", "first")
    first["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    second = binding_manifest("models", "second")
    second["metadata"]["creationTimestamp"] = "2026-01-02T00:00:00Z"
    elsewhere = binding_manifest("models", "other", workloadRef={"kind": "Deployment", "name": "x"})
    everyone = [first, second, elsewhere]
    assert binding_decide.other_claim(AsyaBinding.from_object(first), everyone) is None
    refusal = binding_decide.other_claim(AsyaBinding.from_object(second), everyone)
    assert refusal is not None
    assert refusal.reason == binding_decide.ALREADY_BOUND
    assert "AsyaBinding first" in refusal.message


def test_a_workload_in_another_namespace_is_refused() -> None:
    b = binding(workloadRef={"kind": "Deployment", "name": "vllm", "namespace": "elsewhere"})
    refusal = binding_decide.other_namespace(b)
    assert refusal is not None
    assert refusal.reason == binding_decide.WORKLOAD_IN_OTHER_NAMESPACE
    assert binding_decide.other_namespace(binding()) is None


def test_a_missing_workload_is_retried() -> None:
    refusal = binding_decide.missing(binding())
    assert refusal.retry
    assert "keeps checking" in refusal.message


def test_a_transport_the_operator_lacks_is_refused() -> None:
    with pytest.raises(render.UnknownTransport, match="'kafka' is not configured"):
        binding_render.plan(binding(transport={"name": "kafka"}), CONFIG)


# -- the Service a bridge calls --------------------------------------------------------------


def test_the_service_selecting_the_pods_on_the_callers_port() -> None:
    deployment, service = kserve_predictor()
    b = binding(
        workloadRef={"kind": "Deployment", "name": deployment["metadata"]["name"]},
        caller={"protocol": "inference-v2", "port": 8080, "model": "sentiment", "inputs": "text"},
    )
    unrelated = copy.deepcopy(service)
    unrelated["metadata"]["name"] = "unrelated"
    unrelated["spec"]["selector"] = {"app": "something-else"}
    found = binding_decide.endpoint(b, binding_decide.workload(deployment), [unrelated, service])
    assert found == "http://sentiment-classifier-predictor.models.svc:80"


def test_the_narrowest_of_a_custom_resources_services() -> None:
    ray, services = rayservice()
    b = binding(workloadRef={"apiVersion": "ray.io/v1", "kind": "RayService", "name": "llm"})
    found = binding_decide.endpoint(b, binding_decide.workload(ray), services)
    assert found == "http://llm-serve-svc.models.svc:8000"


def test_no_service_on_the_port_says_what_to_do() -> None:
    deployment, service = kserve_predictor()
    b = binding(caller={"protocol": "openai-chat", "port": 9999})
    refusal = binding_decide.endpoint(b, binding_decide.workload(deployment), [service])
    assert isinstance(refusal, Refusal)
    assert refusal.reason == binding_decide.NO_SERVICE
    assert "spec.endpoint" in refusal.message


def test_two_equally_good_services_are_ambiguous() -> None:
    deployment, service = kserve_predictor()
    twin = copy.deepcopy(service)
    twin["metadata"]["name"] = "twin"
    refusal = binding_decide.endpoint(
        binding(caller={"protocol": "openai-chat", "port": 8080}),
        binding_decide.workload(deployment),
        [service, twin],
    )
    assert isinstance(refusal, Refusal)
    assert refusal.reason == binding_decide.AMBIGUOUS_SERVICE


# -- inject ----------------------------------------------------------------------------------


def injected(b: AsyaBinding, deployment: dict[str, Any]) -> binding_render.Injected:
    return binding_render.inject(
        b,
        deployment["spec"]["template"],
        grace_period=30,
        workload_name=deployment["metadata"]["name"],
        config=CONFIG,
        plan=plan(b),
        runtime_source=SOURCE,
    )


def test_inject_adds_the_sidecar_and_the_caller_to_the_pod_template() -> None:
    deployment = vllm_deployment()
    b = binding(caller={"protocol": "openai-chat", "port": 8000, "model": "qwen"})
    result = injected(b, deployment)
    pod = result.template["spec"]
    assert [c["name"] for c in pod["containers"]] == ["vllm", SIDECAR_CONTAINER]
    assert [c["name"] for c in pod["initContainers"]] == [RUNTIME_CONTAINER]
    runtime = pod["initContainers"][0]
    assert env_of(runtime)["ASYA_HANDLER"] == "asya_callers.openai.Chat.handle"
    assert env_of(runtime)["ASYA_OPENAI_BASE_URL"] == "http://127.0.0.1:8000"
    assert env_of(runtime)["ASYA_OPENAI_MODEL"] == "qwen"
    assert runtime["image"] == CONFIG.sidecar.image, "built-in callers run in the Asya image"
    assert env_of(pod["containers"][1])["ASYA_QUEUE"] == "asya-models-chat"
    # The user's pod settings are theirs; our containers pin their own non-root user.
    assert "securityContext" not in pod
    for ours in (runtime, pod["containers"][1]):
        assert ours["securityContext"]["runAsUser"] == render.NONROOT_ID
        assert ours["securityContext"]["runAsNonRoot"] is True
    assert next(v["name"] for v in pod["volumes"]) == "cache"
    patched = {**deployment, "spec": {**deployment["spec"], "template": result.template}}
    validate([patched, *result.objects])


def test_inject_scales_the_workload_itself() -> None:
    result = injected(binding(), vllm_deployment())
    kinds = [o["kind"] for o in result.objects]
    assert kinds == ["ConfigMap", "ScaledObject"]
    (scaled,) = [o for o in result.objects if o["kind"] == "ScaledObject"]
    assert scaled["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "vllm",
    }
    assert scaled["spec"]["maxReplicaCount"] == 20
    assert scaled["metadata"]["labels"][binding_render.BINDING_LABEL] == "chat"


def test_without_scaling_inject_makes_no_scaled_object() -> None:
    result = injected(binding(scaling={"enabled": False}), vllm_deployment())
    assert [o["kind"] for o in result.objects] == ["ConfigMap"]


def test_uninject_gives_back_the_template_exactly() -> None:
    deployment = vllm_deployment()
    before = copy.deepcopy(deployment["spec"]["template"])
    result = injected(binding(), deployment)
    assert binding_render.uninject(result.template, result.injection) == before


def test_uninject_keeps_an_annotation_the_user_had() -> None:
    deployment = vllm_deployment()
    template = deployment["spec"]["template"]
    template["metadata"]["annotations"] = {
        binding_render.RUNTIME_DIGEST_ANNOTATION: "theirs",
        "team": "ml",
    }
    before = copy.deepcopy(template)
    result = injected(binding(), deployment)
    assert result.injection.replaced_annotations == {
        binding_render.RUNTIME_DIGEST_ANNOTATION: "theirs"
    }
    assert binding_render.uninject(result.template, result.injection) == before


def test_the_patch_is_empty_once_injected_and_whole_lists_otherwise() -> None:
    deployment = vllm_deployment()
    template = deployment["spec"]["template"]
    result = injected(binding(), deployment)
    assert binding_render.template_patch(result.template, result.template) is None
    patch = binding_render.template_patch(template, result.template)
    assert patch is not None
    spec = patch["spec"]["template"]["spec"]
    assert set(spec) == {"initContainers", "containers", "volumes"}
    undo = binding_render.template_patch(result.template, template)
    assert undo is not None
    assert undo["spec"]["template"]["spec"]["initContainers"] is None


def test_a_container_of_the_same_name_is_not_overwritten() -> None:
    deployment = vllm_deployment()
    deployment["spec"]["template"]["spec"]["containers"].append(
        {"name": SIDECAR_CONTAINER, "image": "someone/else"}
    )
    with pytest.raises(render.RenderError, match="already has a container named 'asya-sidecar'"):
        injected(binding(), deployment)


# -- bridge ----------------------------------------------------------------------------------


def test_bridge_is_an_actor_deployment_calling_the_service() -> None:
    b = binding(
        "sentiment-async",
        workloadRef={"kind": "Deployment", "name": "sentiment-classifier-predictor"},
        caller={"protocol": "inference-v2", "port": 8080, "model": "sentiment", "inputs": "text"},
    )
    objects = binding_render.bridge(
        b,
        "http://sentiment-classifier-predictor.models.svc:80",
        config=CONFIG,
        plan=plan(b),
        runtime_source=SOURCE,
    )
    validate(objects)
    assert [o["kind"] for o in objects] == ["ConfigMap", "Deployment", "ScaledObject"]
    deployment = objects[1]
    assert deployment["metadata"]["name"] == "sentiment-async-asya-bridge"
    runtime = deployment["spec"]["template"]["spec"]["initContainers"][0]
    assert env_of(runtime)["ASYA_HANDLER"] == "asya_callers.inference_v2.Infer.handle"
    assert env_of(runtime)["ASYA_V2_BASE_URL"] == (
        "http://sentiment-classifier-predictor.models.svc:80"
    )
    assert env_of(runtime)["ASYA_V2_MODEL"] == "sentiment"
    # The queue is the binding's actor's, whatever the bridge Deployment is called.
    sidecar = deployment["spec"]["template"]["spec"]["containers"][0]
    assert env_of(sidecar)["ASYA_QUEUE"] == "asya-models-sentiment-async"
    assert objects[2]["spec"]["scaleTargetRef"]["name"] == "sentiment-async-asya-bridge"


def test_http_caller_gets_the_path_on_the_url() -> None:
    b = binding(caller={"protocol": "http", "port": 8000, "path": "/classify"})
    variables = {e["name"]: e["value"] for e in binding_render.caller_env(b, "http://svc:8000/")}
    assert variables["ASYA_HTTP_URL"] == "http://svc:8000/classify"


def test_a_setting_of_another_protocol_is_refused() -> None:
    b = binding(caller={"protocol": "http", "port": 8000, "model": "x"})
    with pytest.raises(render.RenderError, match=r"caller\.model does not apply to protocol http"):
        binding_render.caller_env(b, "http://svc")


def test_spec_env_may_not_move_the_server() -> None:
    b = binding(env=[{"name": "ASYA_OPENAI_BASE_URL", "value": "http://elsewhere"}])
    with pytest.raises(render.RenderError, match=r"set spec\.endpoint instead"):
        binding_render.caller_env(b, "http://svc")


def test_the_workloads_above_are_valid_objects() -> None:
    """The fixtures are what their tools would create: the schemas take them as they are."""
    deployment, service = kserve_predictor()
    triton, hpa = triton_with_hpa()
    _, ray_services = rayservice()
    validate([vllm_deployment(), deployment, service, triton, hpa, *ray_services])


def test_what_was_injected_is_the_record_of_this_very_workload() -> None:
    deployment = vllm_deployment()
    target = binding_decide.workload(deployment)
    record = injected(binding(), deployment).injection
    assert binding_render.current_injection(record, "uid-vllm", target, "chat") == record
    # Re-created under the same name: nothing of ours is in it.
    assert binding_render.current_injection(record, "uid-older", target, "chat") is None
    # The record was lost, but the workload says who bound it: the parts are known by name.
    deployment["metadata"]["annotations"] = {binding_render.BOUND_BY_ANNOTATION: "chat"}
    marked = binding_decide.workload(deployment)
    assert binding_render.current_injection(None, None, marked, "chat") == binding_render.ASSUMED
    assert binding_render.current_injection(None, None, marked, "other") is None


def test_the_assumed_record_takes_an_injection_out() -> None:
    deployment = vllm_deployment()
    before = copy.deepcopy(deployment["spec"]["template"])
    result = injected(binding(), deployment)
    assert binding_render.uninject(result.template, binding_render.ASSUMED) == before
