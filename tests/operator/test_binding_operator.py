"""The operator's AsyaBinding handlers in-process against kmock's API emulator, with RabbitMQ
as the binding's transport (see test_operator.py for what kmock plays and what it does not).

Every object the operator writes is read back and validated against the Kubernetes and KEDA
schemas; the workloads are those of test_binding_render.py, shaped as their tools create them.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import kmock
import pytest

from asya_operator import binding_handlers, binding_render, kube
from asya_operator.models import RUNTIME_CONTAINER, SIDECAR_CONTAINER
from tests.operator import test_operator
from tests.operator.test_binding_render import (
    binding_manifest,
    kserve_predictor,
    rayservice,
    triton_with_hpa,
    vllm_deployment,
)
from tests.operator.test_operator import (
    RABBITMQ,
    Cluster,
    eventually,
    rabbitmq_cleanup,
    rabbitmq_depth,
    unique,
)
from tests.support.kube_emulator import VersionedEmulator
from tests.support.schemas import validate

# test_operator.py's fixture, shared: the operator run in a task against kmock.
start_operator = test_operator.start_operator

pytestmark = [pytest.mark.timeout(180), pytest.mark.kmock(cls=VersionedEmulator)]

BINDINGS = binding_handlers.ASYABINDINGS
INFERENCESERVICES = kube.Resource(
    "serving.kserve.io", "v1beta1", "inferenceservices", "InferenceService"
)
RAYSERVICES = kube.Resource("ray.io", "v1", "rayservices", "RayService")
RESYNC_S = 0.5


@pytest.fixture
async def cluster(kmock: kmock.KubernetesEmulator) -> AsyncIterator[Cluster]:
    resources = (
        *kube.RESOURCES,
        kube.ASYNCACTORS,
        BINDINGS,
        binding_handlers.SERVICES,
        binding_handlers.HPAS,
        INFERENCESERVICES,
        RAYSERVICES,
    )
    for resource in resources:
        with_status = resource in (BINDINGS, kube.ASYNCACTORS, kube.DEPLOYMENTS, kube.SCALEDOBJECTS)
        kmock.resources[f"{resource.api_version}/{resource.plural}"] = kmock.ResourceInfo(
            kind=resource.kind,
            namespaced=resource.namespaced,
            verbs={"get", "list", "watch", "create", "patch", "update", "delete"},
            subresources={"status"} if with_status else set(),
        )
    kmock.resources["v1/namespaces"] = kmock.ResourceInfo(
        kind="Namespace", namespaced=False, verbs={"get", "list", "watch"}
    )
    async with kube.Client(str(kmock.url)) as api:
        yield Cluster(api, kmock)


def config() -> dict[str, Any]:
    return {"transports": RABBITMQ}


def with_uid(obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    obj["metadata"]["namespace"] = namespace
    obj["metadata"]["resourceVersion"] = "1"
    return obj


def manifest(namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    obj = binding_manifest(namespace, name, **spec)
    obj["metadata"]["resourceVersion"] = "1"
    obj["metadata"]["uid"] = unique("uid")
    return obj


async def phase_is(cluster: Cluster, ns: str, name: str, phase: str) -> dict[str, Any] | None:
    obj = await cluster.api.get(BINDINGS, ns, name)
    return obj if (obj.get("status") or {}).get("phase") == phase else None


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item["type"] == kind:
            return dict(item)
    return {}


async def warnings(cluster: Cluster, ns: str, reason: str) -> list[dict[str, Any]]:
    events = await cluster.api.list(kube.EVENTS, ns)
    return [e for e in events if e.get("reason") == reason and e.get("type") == "Warning"]


def names(containers: list[dict[str, Any]] | None) -> list[str]:
    return [c["name"] for c in containers or []]


def written(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as a schema sees it: without the fields the API server itself keeps."""
    obj = copy.deepcopy(obj)
    obj.pop("status", None)
    for key in ("resourceVersion", "uid", "generation", "creationTimestamp"):
        obj["metadata"].pop(key, None)
    return obj


# -- inject ---------------------------------------------------------------------------------


@pytest.mark.rabbitmq
async def test_vllm_is_injected_and_deleting_the_binding_restores_it_exactly(
    rabbitmq_url: str, cluster: Cluster, start_operator: Any
) -> None:
    ns, name = unique("inject"), "chat"
    queue = f"asya-{ns}-{name}"
    try:
        await cluster.api.create(kube.DEPLOYMENTS, ns, with_uid(vllm_deployment(ns), ns))
        original = await cluster.api.get(kube.DEPLOYMENTS, ns, "vllm")
        async with start_operator(ns, config()):
            await cluster.api.create(BINDINGS, ns, manifest(ns, name))
            bound = await eventually(lambda: phase_is(cluster, ns, name, "Bound"), "Bound")
            assert bound["status"]["mode"] == "inject"
            assert bound["status"]["queue"] == queue
            assert bound["status"]["target"]["name"] == "vllm"
            assert bound["status"]["target"]["uid"] == "uid-vllm"
            assert condition(bound, "Ready")["status"] == "True"
            assert condition(bound, "Injected")["status"] == "True"
            assert condition(bound, "Scaling")["status"] == "True"
            assert bound["status"]["injected"]["containers"] == [SIDECAR_CONTAINER]
            assert await rabbitmq_depth(queue) == 0, "the queue exists on the broker"

            deployment = await cluster.api.get(kube.DEPLOYMENTS, ns, "vllm")
            pod = deployment["spec"]["template"]["spec"]
            assert names(pod["containers"]) == ["vllm", SIDECAR_CONTAINER]
            assert names(pod["initContainers"]) == [RUNTIME_CONTAINER]
            annotations = deployment["metadata"]["annotations"]
            assert annotations[binding_render.BOUND_BY_ANNOTATION] == name
            assert "ownerReferences" not in deployment["metadata"], "the workload is not ours"
            scaled = await cluster.api.get(kube.SCALEDOBJECTS, ns, name)
            assert scaled["spec"]["scaleTargetRef"]["name"] == "vllm"
            runtime_map = await cluster.api.get(kube.CONFIGMAPS, ns, f"{name}-asya-runtime")
            for obj in (scaled, runtime_map):
                assert obj["metadata"]["ownerReferences"][0]["kind"] == "AsyaBinding"
            validate([written(deployment), written(scaled), written(runtime_map)])

            assert bound["status"]["injected"]["replicas"] == 1
            # KEDA scaled the idle server to zero meanwhile.
            await cluster.api.patch(kube.DEPLOYMENTS, ns, "vllm", {"spec": {"replicas": 0}})

            await cluster.api.delete(BINDINGS, ns, name)
            await eventually(lambda: cluster.gone(BINDINGS, ns, name), "the finalizer to finish")
            after = await cluster.api.get(kube.DEPLOYMENTS, ns, "vllm")
            assert after["spec"]["template"] == original["spec"]["template"]
            assert after["spec"]["replicas"] == 1, "given back the count it had before KEDA"
            assert binding_render.BOUND_BY_ANNOTATION not in (
                after["metadata"].get("annotations") or {}
            )
            assert await rabbitmq_depth(queue) is None, "the empty queue is removed"
    finally:
        await rabbitmq_cleanup(queue)


@pytest.mark.rabbitmq
async def test_a_wiped_injection_is_put_back(
    rabbitmq_url: str, cluster: Cluster, start_operator: Any
) -> None:
    ns, name = unique("drift"), "chat"
    try:
        await cluster.api.create(kube.DEPLOYMENTS, ns, with_uid(vllm_deployment(ns), ns))
        user_template = vllm_deployment(ns)["spec"]["template"]
        async with start_operator(ns, config(), resync_seconds=RESYNC_S):
            await cluster.api.create(BINDINGS, ns, manifest(ns, name))
            await eventually(lambda: phase_is(cluster, ns, name, "Bound"), "Bound")

            # `kubectl apply` of the chart's manifest again: the template as the user wrote it.
            await cluster.api.patch(
                kube.DEPLOYMENTS,
                ns,
                "vllm",
                {"spec": {"template": {**user_template, "spec": {**user_template["spec"]}}}},
            )
            wiped = await cluster.api.get(kube.DEPLOYMENTS, ns, "vllm")
            # A merge patch keeps keys it does not name; a re-apply would drop ours.
            wiped["spec"]["template"]["spec"].pop("initContainers", None)
            await cluster.api.patch(
                kube.DEPLOYMENTS,
                ns,
                "vllm",
                {"spec": {"template": {"spec": {"initContainers": None}}}},
            )

            async def restored() -> bool:
                live = await cluster.api.get(kube.DEPLOYMENTS, ns, "vllm")
                pod = live["spec"]["template"]["spec"]
                return names(pod.get("initContainers")) == [RUNTIME_CONTAINER] and names(
                    pod["containers"]
                ) == ["vllm", SIDECAR_CONTAINER]

            await eventually(restored, "the resync to put the injection back")
            (event, *_) = await eventually(
                lambda: warnings(cluster, ns, "InjectionRestored"), "an InjectionRestored Event"
            )
            assert "vllm" in event["message"]
            obj = await cluster.api.get(BINDINGS, ns, name)
            assert condition(obj, "Injected")["reason"] == "InjectionRestored"
    finally:
        await rabbitmq_cleanup(f"asya-{ns}-{name}")


@pytest.mark.rabbitmq
async def test_moving_the_binding_to_another_workload_releases_the_first(
    rabbitmq_url: str, cluster: Cluster, start_operator: Any
) -> None:
    ns, name = unique("move"), "chat"
    try:
        await cluster.api.create(kube.DEPLOYMENTS, ns, with_uid(vllm_deployment(ns), ns))
        other = with_uid(vllm_deployment(ns, "vllm-next"), ns)
        other["metadata"]["uid"] = "uid-vllm-next"
        await cluster.api.create(kube.DEPLOYMENTS, ns, other)
        original = await cluster.api.get(kube.DEPLOYMENTS, ns, "vllm")
        async with start_operator(ns, config()):
            await cluster.api.create(BINDINGS, ns, manifest(ns, name))
            await eventually(lambda: phase_is(cluster, ns, name, "Bound"), "Bound")
            ref = {"kind": "Deployment", "name": "vllm-next"}
            await cluster.api.patch(BINDINGS, ns, name, {"spec": {"workloadRef": ref}})

            async def moved() -> dict[str, Any] | None:
                obj = await cluster.api.get(BINDINGS, ns, name)
                target = (obj.get("status") or {}).get("target") or {}
                return obj if target.get("name") == "vllm-next" else None

            await eventually(moved, "the binding on vllm-next")
            first = await cluster.api.get(kube.DEPLOYMENTS, ns, "vllm")
            assert first["spec"]["template"] == original["spec"]["template"]
            second = await cluster.api.get(kube.DEPLOYMENTS, ns, "vllm-next")
            assert SIDECAR_CONTAINER in names(second["spec"]["template"]["spec"]["containers"])
            scaled = await cluster.api.get(kube.SCALEDOBJECTS, ns, name)
            assert scaled["spec"]["scaleTargetRef"]["name"] == "vllm-next"
    finally:
        await rabbitmq_cleanup(f"asya-{ns}-{name}")


# -- bridge ---------------------------------------------------------------------------------


@pytest.mark.rabbitmq
async def test_a_kserve_predictor_gets_a_bridge_calling_its_service(
    rabbitmq_url: str, cluster: Cluster, start_operator: Any
) -> None:
    ns, name = unique("kserve"), "sentiment-async"
    deployment, service = kserve_predictor(ns)
    try:
        await cluster.api.create(kube.DEPLOYMENTS, ns, with_uid(deployment, ns))
        await cluster.api.create(binding_handlers.SERVICES, ns, with_uid(service, ns))
        original = await cluster.api.get(kube.DEPLOYMENTS, ns, deployment["metadata"]["name"])
        spec = {
            "workloadRef": {"kind": "Deployment", "name": "sentiment-classifier-predictor"},
            "caller": {
                "protocol": "inference-v2",
                "port": 8080,
                "model": "sentiment",
                "inputs": "text",
            },
        }
        async with start_operator(ns, config()):
            await cluster.api.create(BINDINGS, ns, manifest(ns, name, **spec))
            bound = await eventually(lambda: phase_is(cluster, ns, name, "Bound"), "Bound")
            assert bound["status"]["mode"] == "bridge"
            endpoint = f"http://sentiment-classifier-predictor.{ns}.svc:80"
            assert bound["status"]["endpoint"] == endpoint
            assert "InferenceService sentiment-classifier" in bound["status"]["replicas"]
            assert condition(bound, "BridgeReady")["type"] == "BridgeReady"
            assert not condition(bound, "Injected")

            bridge = await cluster.api.get(kube.DEPLOYMENTS, ns, f"{name}-asya-bridge")
            runtime = bridge["spec"]["template"]["spec"]["initContainers"][0]
            env = {e["name"]: e.get("value") for e in runtime["env"]}
            assert env["ASYA_V2_BASE_URL"] == endpoint
            assert env["ASYA_HANDLER"] == "asya_callers.inference_v2.Infer.handle"
            scaled = await cluster.api.get(kube.SCALEDOBJECTS, ns, f"{name}-asya-bridge")
            assert scaled["spec"]["scaleTargetRef"]["name"] == f"{name}-asya-bridge"
            validate([written(bridge), written(scaled)])
            # The predictor is KServe's: not a byte of it changed.
            live = await cluster.api.get(kube.DEPLOYMENTS, ns, deployment["metadata"]["name"])
            assert live["spec"] == original["spec"]
            assert live["metadata"].get("annotations") == original["metadata"].get("annotations")
    finally:
        await rabbitmq_cleanup(f"asya-{ns}-{name}")


@pytest.mark.rabbitmq
async def test_a_rayservice_without_scaling_gets_a_bridge_and_no_scaled_object(
    rabbitmq_url: str, cluster: Cluster, start_operator: Any
) -> None:
    ns, name = unique("ray"), "llm"
    ray, services = rayservice(ns)
    try:
        await cluster.api.create(RAYSERVICES, ns, with_uid(ray, ns))
        for service in services:
            await cluster.api.create(binding_handlers.SERVICES, ns, with_uid(service, ns))
        spec = {
            "workloadRef": {"apiVersion": "ray.io/v1", "kind": "RayService", "name": "llm"},
            "scaling": {"enabled": False},
            "caller": {"protocol": "openai-chat", "port": 8000},
        }
        async with start_operator(ns, config()):
            await cluster.api.create(BINDINGS, ns, manifest(ns, name, **spec))
            bound = await eventually(lambda: phase_is(cluster, ns, name, "Bound"), "Bound")
            assert bound["status"]["mode"] == "bridge"
            assert bound["status"]["endpoint"] == f"http://llm-serve-svc.{ns}.svc:8000"
            assert condition(bound, "Scaling")["reason"] == "ScalingDisabled"
            bridge = await cluster.api.get(kube.DEPLOYMENTS, ns, f"{name}-asya-bridge")
            assert bridge["spec"]["replicas"] == 1
            validate([written(bridge)])
            assert await cluster.gone(kube.SCALEDOBJECTS, ns, f"{name}-asya-bridge")
            assert await cluster.gone(kube.SCALEDOBJECTS, ns, name)
    finally:
        await rabbitmq_cleanup(f"asya-{ns}-{name}")


# -- refusals -------------------------------------------------------------------------------


@pytest.mark.rabbitmq
async def test_triton_under_an_hpa_is_refused_until_the_hpa_goes(
    rabbitmq_url: str, cluster: Cluster, start_operator: Any
) -> None:
    ns, name = unique("hpa"), "triton-async"
    deployment, hpa = triton_with_hpa(ns)
    spec = {
        "workloadRef": {"kind": "Deployment", "name": "triton"},
        "caller": {"protocol": "inference-v2", "port": 8000, "model": "resnet", "inputs": "x"},
    }
    try:
        await cluster.api.create(kube.DEPLOYMENTS, ns, with_uid(deployment, ns))
        await cluster.api.create(binding_handlers.HPAS, ns, with_uid(hpa, ns))
        async with start_operator(ns, config(), resync_seconds=RESYNC_S):
            await cluster.api.create(BINDINGS, ns, manifest(ns, name, **spec))
            refused = await eventually(lambda: phase_is(cluster, ns, name, "Refused"), "Refused")
            ready = condition(refused, "Ready")
            assert (ready["status"], ready["reason"]) == ("False", "ScaledByOthers")
            assert "HorizontalPodAutoscaler triton" in ready["message"]
            (event,) = await eventually(
                lambda: warnings(cluster, ns, "ScaledByOthers"), "a ScaledByOthers Event"
            )
            assert "HorizontalPodAutoscaler triton" in event["message"]
            assert "scaling.enabled: false" in event["message"]
            live = await cluster.api.get(kube.DEPLOYMENTS, ns, "triton")
            assert SIDECAR_CONTAINER not in names(live["spec"]["template"]["spec"]["containers"])
            assert await cluster.gone(kube.SCALEDOBJECTS, ns, name)

            await cluster.api.delete(binding_handlers.HPAS, ns, "triton")
            await eventually(lambda: phase_is(cluster, ns, name, "Bound"), "Bound once it goes")
            # One Event for the refusal, not one per resync.
            assert len(await warnings(cluster, ns, "ScaledByOthers")) == 1
    finally:
        await rabbitmq_cleanup(f"asya-{ns}-{name}")


@pytest.mark.rabbitmq
async def test_a_binding_waits_for_its_workload(
    rabbitmq_url: str, cluster: Cluster, start_operator: Any
) -> None:
    ns, name = unique("early"), "chat"
    try:
        async with start_operator(ns, config(), resync_seconds=RESYNC_S):
            await cluster.api.create(BINDINGS, ns, manifest(ns, name))
            pending = await eventually(lambda: phase_is(cluster, ns, name, "Pending"), "Pending")
            ready = condition(pending, "Ready")
            assert (ready["status"], ready["reason"]) == ("False", "WorkloadNotFound")
            assert "vllm" in ready["message"]
            await eventually(lambda: warnings(cluster, ns, "WorkloadNotFound"), "an Event")

            await cluster.api.create(kube.DEPLOYMENTS, ns, with_uid(vllm_deployment(ns), ns))
            bound = await eventually(
                lambda: phase_is(cluster, ns, name, "Bound"), "Bound once it exists"
            )
            assert bound["status"]["mode"] == "inject"
    finally:
        await rabbitmq_cleanup(f"asya-{ns}-{name}")


@pytest.mark.rabbitmq
async def test_a_second_binding_on_one_workload_is_refused(
    rabbitmq_url: str, cluster: Cluster, start_operator: Any
) -> None:
    ns = unique("twice")
    first, second = manifest(ns, "first"), manifest(ns, "second")
    first["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    second["metadata"]["creationTimestamp"] = "2026-01-02T00:00:00Z"
    try:
        await cluster.api.create(kube.DEPLOYMENTS, ns, with_uid(vllm_deployment(ns), ns))
        async with start_operator(ns, config()):
            await cluster.api.create(BINDINGS, ns, first)
            await eventually(lambda: phase_is(cluster, ns, "first", "Bound"), "first Bound")
            await cluster.api.create(BINDINGS, ns, second)
            refused = await eventually(
                lambda: phase_is(cluster, ns, "second", "Refused"), "second Refused"
            )
            ready = condition(refused, "Ready")
            assert ready["reason"] == "WorkloadAlreadyBound"
            assert "AsyaBinding first" in ready["message"]
            await eventually(lambda: warnings(cluster, ns, "WorkloadAlreadyBound"), "an Event")
            live = await cluster.api.get(kube.DEPLOYMENTS, ns, "vllm")
            sidecars = [
                c
                for c in live["spec"]["template"]["spec"]["containers"]
                if c["name"] == SIDECAR_CONTAINER
            ]
            assert len(sidecars) == 1
    finally:
        await rabbitmq_cleanup(f"asya-{ns}-first")
        await rabbitmq_cleanup(f"asya-{ns}-second")


async def test_a_transport_the_operator_lacks_is_refused(
    cluster: Cluster, start_operator: Any
) -> None:
    ns, name = unique("transport"), "chat"
    await cluster.api.create(kube.DEPLOYMENTS, ns, with_uid(vllm_deployment(ns), ns))
    async with start_operator(ns, config()):
        await cluster.api.create(BINDINGS, ns, manifest(ns, name, transport={"name": "sqs"}))
        refused = await eventually(lambda: phase_is(cluster, ns, name, "Refused"), "Refused")
        ready = condition(refused, "Ready")
        assert ready["reason"] == "TransportNotConfigured"
        assert "'sqs'" in ready["message"]
        assert "rabbit" in ready["message"]
        await eventually(lambda: warnings(cluster, ns, "TransportNotConfigured"), "an Event")
        live = await cluster.api.get(kube.DEPLOYMENTS, ns, "vllm")
        assert names(live["spec"]["template"]["spec"]["containers"]) == ["vllm"]


async def test_a_workload_in_another_namespace_is_refused(
    cluster: Cluster, start_operator: Any
) -> None:
    ns, name = unique("elsewhere"), "chat"
    ref = {"kind": "Deployment", "name": "vllm", "namespace": "models"}
    async with start_operator(ns, config()):
        await cluster.api.create(BINDINGS, ns, manifest(ns, name, workloadRef=ref))
        refused = await eventually(lambda: phase_is(cluster, ns, name, "Refused"), "Refused")
        assert condition(refused, "Ready")["reason"] == "WorkloadInOtherNamespace"
