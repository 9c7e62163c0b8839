"""Regression: an operator killed after creating a resource's queue and before writing the
status that names it, and the resource deleted before the operator came back.

The deletion handler took the queue only from the status, found none there and left the
queue on the broker for good (found by `python -m faults --scenario operator-kill`). The
state such a kill leaves is built here directly: the resource holds the operator's
finalizer and is being deleted, its status names no queue, and its queue exists.
"""

from __future__ import annotations

from typing import Any

import pytest

import asya_transports as transports
from asya_operator import binding_handlers, kube
from asya_operator.handlers import FINALIZER
from asya_shared import env
from tests.operator.test_binding_operator import cluster, manifest
from tests.operator.test_binding_render import vllm_deployment
from tests.operator.test_operator import (
    RABBITMQ,
    Cluster,
    actor_manifest,
    eventually,
    rabbitmq_cleanup,
    rabbitmq_depth,
    start_operator,
    unique,
)
from tests.support.kube_emulator import VersionedEmulator

pytestmark = [pytest.mark.timeout(120), pytest.mark.kmock(cls=VersionedEmulator)]

__all__ = ["cluster", "start_operator"]  # the fixtures, used by name


async def leave_as_a_kill_would(
    rabbitmq_url: str, cluster: Cluster, resource: kube.Resource, obj: dict[str, Any]
) -> None:
    namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    obj["metadata"]["finalizers"] = [FINALIZER]
    await cluster.api.create(resource, namespace, obj)
    async with transports.create("rabbitmq", {env.RABBITMQ_URL: rabbitmq_url}) as t:
        await t.ensure_queue(f"asya-{namespace}-{name}")
    await cluster.api.delete(resource, namespace, name)
    deleting = await cluster.api.get(resource, namespace, name)
    assert deleting["metadata"].get("deletionTimestamp"), "held by the finalizer"


@pytest.mark.rabbitmq
async def test_an_actor_deleted_before_its_status_named_its_queue_still_has_it_deleted(
    rabbitmq_url: str, cluster: Cluster, start_operator: Any
) -> None:
    ns, name = unique("killed"), "echo"
    queue = f"asya-{ns}-{name}"
    try:
        await leave_as_a_kill_would(
            rabbitmq_url, cluster, kube.ASYNCACTORS, actor_manifest(ns, name)
        )
        assert await rabbitmq_depth(queue) == 0
        async with start_operator(ns, {"transports": RABBITMQ}):
            await eventually(
                lambda: cluster.gone(kube.ASYNCACTORS, ns, name), "the finalizer to be cleared"
            )
        assert await rabbitmq_depth(queue) is None, "the queue is left on the broker"
    finally:
        await rabbitmq_cleanup(queue)


@pytest.mark.rabbitmq
async def test_a_binding_deleted_before_its_status_named_its_queue_still_has_it_deleted(
    rabbitmq_url: str, cluster: Cluster, start_operator: Any
) -> None:
    ns, name = unique("killed"), "chat"
    queue = f"asya-{ns}-{name}"
    bindings = binding_handlers.ASYABINDINGS
    try:
        workload = vllm_deployment(ns)
        workload["metadata"]["resourceVersion"] = "1"
        await cluster.api.create(kube.DEPLOYMENTS, ns, workload)
        await leave_as_a_kill_would(rabbitmq_url, cluster, bindings, manifest(ns, name))
        assert await rabbitmq_depth(queue) == 0
        async with start_operator(ns, {"transports": RABBITMQ}):
            await eventually(
                lambda: cluster.gone(bindings, ns, name), "the finalizer to be cleared"
            )
        assert await rabbitmq_depth(queue) is None, "the queue is left on the broker"
    finally:
        await rabbitmq_cleanup(queue)
