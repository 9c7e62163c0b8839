"""The operator in-process (kopf.operator in a task) against kmock's API emulator, with real
brokers: RabbitMQ on 127.0.0.1:5672 and SQS on moto.

kmock plays the API server only: there is no Deployment controller, no KEDA and no garbage
collector, so the tests write what those would (a Deployment's status, KEDA's verdict) and
check ownerReferences rather than cascading deletion.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import kmock
import kopf
import pytest
import yaml

import asya_operator.handlers as handlers
import asya_transports as transports
from asya_operator import kube
from asya_operator.config import CONFIG_ENV
from asya_shared import env
from tests.support.kube_emulator import VersionedEmulator
from tests.support.services import ServiceProcess, free_port

pytestmark = [pytest.mark.timeout(180), pytest.mark.kmock(cls=VersionedEmulator)]

RABBITMQ = {"rabbit": {"type": "rabbitmq", "url": "amqp://127.0.0.1:5672/"}}
ACCOUNT = "123456789012"


# -- helpers --------------------------------------------------------------------------------


async def eventually(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 30.0) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = await check()
        except (kube.NotFound, AssertionError) as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        await asyncio.sleep(0.05)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def actor_manifest(namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "asya.sh/v1alpha1",
        "kind": "AsyncActor",
        # kmock keeps neither uid nor resourceVersion itself; kopf's patches test the latter.
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": str(uuid.uuid4()),
            "resourceVersion": "1",
        },
        "spec": {"handler": "handler.run", "image": "example/handler:1", **spec},
    }


def sidecar_env(deployment: dict[str, Any]) -> dict[str, str]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    sidecar = next(c for c in containers if c["name"] == "asya-sidecar")
    return {item["name"]: item.get("value", "") for item in sidecar["env"]}


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item["type"] == kind:
            return dict(item)
    return {}


class Cluster:
    """The test's view of the API (through our own client) and of the brokers."""

    def __init__(self, api: kube.Client, emulator: kmock.KubernetesEmulator) -> None:
        self.api = api
        self.emulator = emulator

    async def actor(self, namespace: str, name: str) -> dict[str, Any]:
        return await self.api.get(kube.ASYNCACTORS, namespace, name)

    async def status_is(self, namespace: str, name: str, word: str) -> dict[str, Any] | None:
        obj = await self.actor(namespace, name)
        return obj if (obj.get("status") or {}).get("status") == word else None

    async def gone(self, resource: kube.Resource, namespace: str, name: str) -> bool:
        try:
            await self.api.get(resource, namespace, name)
        except kube.NotFound:
            return True
        return False

    async def play_deployment_controller(
        self, namespace: str, name: str, *, ready: int | None = None
    ) -> None:
        """Write the status a Deployment controller would: every replica ready."""
        deployment = await self.api.get(kube.DEPLOYMENTS, namespace, name)
        desired = deployment["spec"].get("replicas", 1)
        ready = desired if ready is None else ready
        available = "True" if ready >= desired else "False"
        status = {
            "observedGeneration": deployment["metadata"].get("generation", 1),
            "replicas": desired,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "conditions": [
                {"type": "Available", "status": available, "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
            ],
        }
        await self.api.patch_status(kube.DEPLOYMENTS, namespace, name, status)

    async def play_keda(self, namespace: str, name: str) -> None:
        ready = [{"type": "Ready", "status": "True", "reason": "ScaledObjectReady"}]
        await self.api.patch_status(kube.SCALEDOBJECTS, namespace, name, {"conditions": ready})


@pytest.fixture
async def cluster(kmock: kmock.KubernetesEmulator) -> AsyncIterator[Cluster]:
    for resource in (*kube.RESOURCES, kube.ASYNCACTORS):
        with_status = resource in (kube.ASYNCACTORS, kube.DEPLOYMENTS, kube.SCALEDOBJECTS)
        kmock.resources[f"{resource.api_version}/{resource.plural}"] = kmock.ResourceInfo(
            kind=resource.kind,
            namespaced=resource.namespaced,
            # kopf serves only what discovery says it can list and watch.
            verbs={"get", "list", "watch", "create", "patch", "update", "delete"},
            subresources={"status"} if with_status else set(),
        )
    # kopf waits for namespaces to be discoverable before it watches in any namespace.
    kmock.resources["v1/namespaces"] = kmock.ResourceInfo(
        kind="Namespace", namespaced=False, verbs={"get", "list", "watch"}
    )
    async with kube.Client(str(kmock.url)) as api:
        yield Cluster(api, kmock)


@pytest.fixture
def start_operator(
    kmock: kmock.KubernetesEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., contextlib.AbstractAsyncContextManager[None]]:
    """Run the operator on the namespace with this configuration; stop it on leaving."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "kmock",
                "clusters": [{"name": "kmock", "cluster": {"server": str(kmock.url)}}],
                "users": [{"name": "tester", "user": {"token": "test-token"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "tester"}}],
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))

    @contextlib.asynccontextmanager
    async def run(
        namespace: str, config: dict[str, Any], *, resync_seconds: float = 60.0
    ) -> AsyncIterator[None]:
        path = tmp_path / f"config-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(yaml.safe_dump({"queueRefreshSeconds": 5, **config}))
        monkeypatch.setenv(CONFIG_ENV, str(path))
        stop, ready = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(
            kopf.operator(
                namespaces=[namespace],
                standalone=True,
                stop_flag=stop,
                ready_flag=ready,
                memo=kopf.Memo(resync_seconds=resync_seconds),
            )
        )
        try:
            ready_or_done = asyncio.ensure_future(ready.wait())
            await asyncio.wait([ready_or_done, task], return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()  # raises why the operator did not start
            yield
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=30)

    return run


async def rabbitmq_depth(queue: str) -> int | None:
    """Messages in the queue, or None when it does not exist."""
    async with transports.create("rabbitmq", {env.RABBITMQ_URL: "amqp://127.0.0.1:5672/"}) as t:
        try:
            return await t.queue_depth(queue)
        except transports.QueueNotFound:
            return None


async def rabbitmq_cleanup(queue: str) -> None:
    async with transports.create("rabbitmq", {env.RABBITMQ_URL: "amqp://127.0.0.1:5672/"}) as t:
        await t.delete_queue(queue)


class Proxy:
    """A TCP forwarder to the broker that the test can close and open again on one port."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target_port = target_port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


# -- create, update -------------------------------------------------------------------------


@pytest.mark.rabbitmq
async def test_create_makes_queue_objects_and_status(
    rabbitmq_url: str, cluster: Cluster, start_operator: Any
) -> None:
    ns, name = unique("create"), "echo"
    queue = f"asya-{ns}-{name}"
    manifest = actor_manifest(ns, name)
    uid = manifest["metadata"]["uid"]
    try:
        async with start_operator(ns, {"transports": RABBITMQ}):
            await cluster.api.create(kube.ASYNCACTORS, ns, manifest)

            actor = await eventually(
                lambda: cluster.status_is(ns, name, "Creating"), "status Creating"
            )
            assert await rabbitmq_depth(queue) == 0, "the queue exists on the broker"
            assert condition(actor, "QueueReady")["status"] == "True"
            assert condition(actor, "QueueReady")["reason"] == "QueueExists"
            assert condition(actor, "WorkloadReady")["status"] == "Unknown"
            assert actor["status"]["queue"] == queue
            assert actor["status"]["transport"] == "rabbit"
            assert handlers.FINALIZER in actor["metadata"]["finalizers"]

            owned = [
                (kube.CONFIGMAPS, f"{name}-asya-runtime"),
                (kube.DEPLOYMENTS, name),
                (kube.SCALEDOBJECTS, name),
            ]
            for resource, object_name in owned:
                obj = await cluster.api.get(resource, ns, object_name)
                (ref,) = obj["metadata"]["ownerReferences"]
                assert (ref["uid"], ref["kind"], ref["controller"]) == (uid, "AsyncActor", True)
            deployment = await cluster.api.get(kube.DEPLOYMENTS, ns, name)
            assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
            assert sidecar_env(deployment)[env.QUEUE] == queue
            # A URL without a Secret needs no TriggerAuthentication.
            assert await cluster.gone(kube.TRIGGERAUTHENTICATIONS, ns, f"{name}-asya")

            # What the Deployment controller and KEDA would report next.
            await cluster.play_deployment_controller(ns, name)
            await cluster.play_keda(ns, name)
            actor = await eventually(
                lambda: cluster.status_is(ns, name, "Running"), "status Running", timeout=20
            )
            assert actor["status"]["readyReplicas"] == 1
            assert actor["status"]["desiredReplicas"] == 1
            assert actor["status"]["queueDepth"] == 0
            assert condition(actor, "ScalingReady")["reason"] == "ScalerReady"

            # KEDA scales it to zero with nothing queued: napping.
            await cluster.api.patch(kube.DEPLOYMENTS, ns, name, {"spec": {"replicas": 0}})
            await cluster.play_deployment_controller(ns, name)
            await eventually(
                lambda: cluster.status_is(ns, name, "Napping"), "status Napping", timeout=20
            )
            # Work arrives while it naps: the depth shows, and KEDA is about to wake it.
            async with transports.create("rabbitmq", {env.RABBITMQ_URL: rabbitmq_url}) as t:
                for i in range(2):
                    await t.send(queue, f"message {i}".encode())
            actor = await eventually(
                lambda: cluster.status_is(ns, name, "Running"), "waking up", timeout=20
            )
            assert actor["status"]["queueDepth"] == 2
            # Replica-only changes are KEDA's: the operator never writes them back.
            writes = [
                r
                for r in cluster.emulator
                if r.method == "PATCH"
                and r.url.path.endswith(f"/deployments/{name}")
                and "replicas" in ((r.data or {}).get("spec") or {})
            ]
            assert len(writes) == 1, "only the test's own replica patch"
    finally:
        await rabbitmq_cleanup(queue)


@pytest.mark.rabbitmq
async def test_update_changes_the_deployment(
    rabbitmq_url: str, cluster: Cluster, start_operator: Any
) -> None:
    ns, name = unique("update"), "echo"
    try:
        async with start_operator(ns, {"transports": RABBITMQ}):
            await cluster.api.create(kube.ASYNCACTORS, ns, actor_manifest(ns, name, concurrency=1))
            await eventually(lambda: cluster.status_is(ns, name, "Creating"), "first reconcile")

            await cluster.api.patch(kube.ASYNCACTORS, ns, name, {"spec": {"concurrency": 4}})

            async def concurrency_is_4() -> bool:
                deployment = await cluster.api.get(kube.DEPLOYMENTS, ns, name)
                return sidecar_env(deployment)[env.CONCURRENCY] == "4"

            await eventually(concurrency_is_4, "ASYA_CONCURRENCY=4 in the Deployment")
    finally:
        await rabbitmq_cleanup(f"asya-{ns}-{name}")


# -- drift ------------------------------------------------------------------------------------


@pytest.mark.rabbitmq
async def test_drift_is_corrected_by_resync_and_on_resume(
    rabbitmq_url: str, cluster: Cluster, start_operator: Any
) -> None:
    ns, name = unique("drift"), "echo"

    async def sidecar_image() -> str:
        deployment = await cluster.api.get(kube.DEPLOYMENTS, ns, name)
        containers = deployment["spec"]["template"]["spec"]["containers"]
        return str(next(c for c in containers if c["name"] == "asya-sidecar")["image"])

    async def tamper() -> None:
        deployment = await cluster.api.get(kube.DEPLOYMENTS, ns, name)
        containers = deployment["spec"]["template"]["spec"]["containers"]
        for container in containers:
            container["image"] = "tampered:1"
        await cluster.api.patch(
            kube.DEPLOYMENTS, ns, name, {"spec": {"template": {"spec": {"containers": containers}}}}
        )
        assert await sidecar_image() == "tampered:1"

    try:
        async with start_operator(ns, {"transports": RABBITMQ}, resync_seconds=1.0):
            await cluster.api.create(kube.ASYNCACTORS, ns, actor_manifest(ns, name))
            await eventually(lambda: cluster.status_is(ns, name, "Creating"), "first reconcile")
            original = await sidecar_image()
            await tamper()
            await eventually(
                lambda: _equals(sidecar_image(), original), "the resync to restore the image"
            )
            # A deleted ConfigMap comes back too.
            await cluster.api.delete(kube.CONFIGMAPS, ns, f"{name}-asya-runtime")
            await eventually(
                lambda: cluster.api.get(kube.CONFIGMAPS, ns, f"{name}-asya-runtime"),
                "the resync to recreate the ConfigMap",
            )

        # Edited while no operator runs: the next one puts it back when it resumes.
        await tamper()
        async with start_operator(ns, {"transports": RABBITMQ}):
            await eventually(
                lambda: _equals(sidecar_image(), original), "resume to restore the image"
            )
    finally:
        await rabbitmq_cleanup(f"asya-{ns}-{name}")


async def _equals(value: Awaitable[Any], expected: Any) -> bool:
    return bool(await value == expected)


# -- scaling toggled ----------------------------------------------------------------------------


@pytest.mark.rabbitmq
async def test_scaling_off_then_on(
    rabbitmq_url: str, cluster: Cluster, start_operator: Any
) -> None:
    ns, name = unique("scaling"), "echo"
    try:
        async with start_operator(ns, {"transports": RABBITMQ}):
            await cluster.api.create(kube.ASYNCACTORS, ns, actor_manifest(ns, name))
            await eventually(lambda: cluster.api.get(kube.SCALEDOBJECTS, ns, name), "ScaledObject")
            # KEDA scaled it to 3 meanwhile.
            await cluster.api.patch(kube.DEPLOYMENTS, ns, name, {"spec": {"replicas": 3}})

            await cluster.api.patch(
                kube.ASYNCACTORS, ns, name, {"spec": {"scaling": {"enabled": False}, "replicas": 2}}
            )

            async def fixed_at_2() -> bool:
                deployment = await cluster.api.get(kube.DEPLOYMENTS, ns, name)
                return bool(deployment["spec"].get("replicas") == 2)

            await eventually(fixed_at_2, "Deployment replicas 2")
            assert await cluster.gone(kube.SCALEDOBJECTS, ns, name)
            actor = await eventually(
                lambda: _with_condition(cluster.actor(ns, name), "ScalingReady", "ScalingDisabled"),
                "ScalingReady ScalingDisabled",
            )
            assert condition(actor, "ScalingReady")["status"] == "True"

            await cluster.api.patch(
                kube.ASYNCACTORS,
                ns,
                name,
                {"spec": {"scaling": {"enabled": True}, "replicas": None}},
            )
            await eventually(lambda: cluster.api.get(kube.SCALEDOBJECTS, ns, name), "ScaledObject")
            deployment = await cluster.api.get(kube.DEPLOYMENTS, ns, name)
            # Handed back to KEDA as it is: neither written nor removed.
            assert deployment["spec"]["replicas"] == 2
            last = [
                r
                for r in cluster.emulator
                if r.method == "PATCH" and r.url.path.endswith(f"/deployments/{name}")
            ][-1]
            assert "replicas" not in ((last.data or {}).get("spec") or {})
    finally:
        await rabbitmq_cleanup(f"asya-{ns}-{name}")


async def _with_condition(obj: Awaitable[dict[str, Any]], kind: str, reason: str) -> Any:
    found = await obj
    return found if condition(found, kind).get("reason") == reason else None


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.rabbitmq
async def test_unknown_transport_is_an_error_listing_the_configured_ones(
    rabbitmq_url: str, cluster: Cluster, start_operator: Any
) -> None:
    ns, name = unique("unknown"), "echo"
    config = {
        "transports": {
            **RABBITMQ,
            "other": {"type": "rabbitmq", "url": "amqp://127.0.0.1:5672/"},
        }
    }
    async with start_operator(ns, config):
        await cluster.api.create(kube.ASYNCACTORS, ns, actor_manifest(ns, name, transport="kafka"))
        actor = await eventually(lambda: cluster.status_is(ns, name, "Error"), "status Error")
        queue_ready = condition(actor, "QueueReady")
        assert queue_ready["status"] == "False"
        assert queue_ready["reason"] == "UnknownTransport"
        assert "'kafka'" in queue_ready["message"]
        assert "other, rabbit" in queue_ready["message"]
        assert await cluster.gone(kube.DEPLOYMENTS, ns, name)


@pytest.mark.rabbitmq
async def test_invalid_spec_is_an_error_naming_the_field(
    rabbitmq_url: str, cluster: Cluster, start_operator: Any
) -> None:
    ns, name = unique("invalid"), "echo"
    async with start_operator(ns, {"transports": RABBITMQ}):
        manifest = actor_manifest(ns, name, concurrency=0)
        await cluster.api.create(kube.ASYNCACTORS, ns, manifest)
        actor = await eventually(lambda: cluster.status_is(ns, name, "Error"), "status Error")
        workload = condition(actor, "WorkloadReady")
        assert workload["reason"] == "InvalidSpec"
        assert "spec.concurrency" in workload["message"]
        assert await cluster.gone(kube.DEPLOYMENTS, ns, name)


@pytest.mark.rabbitmq
async def test_keda_not_installed_is_degraded(
    rabbitmq_url: str, cluster: Cluster, start_operator: Any
) -> None:
    ns, name = unique("nokeda"), "echo"
    # What an API server without KEDA's CRDs answers.
    (
        cluster.emulator["post", kmock.resource("keda.sh", "v1alpha1", "scaledobjects")]
        << 404
        << {
            "kind": "Status",
            "reason": "NotFound",
            "message": "the server could not find the requested resource",
        }
    )
    try:
        async with start_operator(ns, {"transports": RABBITMQ}):
            await cluster.api.create(kube.ASYNCACTORS, ns, actor_manifest(ns, name))
            actor = await eventually(lambda: cluster.status_is(ns, name, "Degraded"), "Degraded")
            scaling = condition(actor, "ScalingReady")
            assert (scaling["status"], scaling["reason"]) == ("False", "KedaNotInstalled")
            assert "could not find the requested resource" in scaling["message"]
            # Everything before the ScaledObject is in place.
            assert await cluster.api.get(kube.DEPLOYMENTS, ns, name)
    finally:
        await rabbitmq_cleanup(f"asya-{ns}-{name}")


@pytest.mark.rabbitmq
async def test_broker_down_then_up(
    rabbitmq_url: str, cluster: Cluster, start_operator: Any
) -> None:
    ns, name = unique("outage"), "echo"
    proxy = Proxy(5672)  # closed: nothing listens on its port yet
    url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
    config = {
        "operatorNamespace": "asya-system",
        "transports": {
            "rabbit": {
                "type": "rabbitmq",
                "credentials": {"secretRef": {"name": "rabbitmq-creds"}},
            }
        },
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "rabbitmq-creds", "namespace": "asya-system"},
        "data": {"url": base64.b64encode(url.encode()).decode()},
    }
    await cluster.api.create(kube.SECRETS, "asya-system", secret)
    try:
        async with start_operator(ns, config):
            await cluster.api.create(kube.ASYNCACTORS, ns, actor_manifest(ns, name))
            actor = await eventually(lambda: cluster.status_is(ns, name, "Degraded"), "Degraded")
            queue_ready = condition(actor, "QueueReady")
            assert (queue_ready["status"], queue_ready["reason"]) == ("False", "BrokerUnavailable")
            assert str(proxy.port) in queue_ready["message"]
            assert condition(actor, "WorkloadReady")["reason"] == "WaitingForQueue"
            assert await cluster.gone(kube.DEPLOYMENTS, ns, name)

            await proxy.open()
            actor = await eventually(
                lambda: _with_condition(cluster.actor(ns, name), "QueueReady", "QueueExists"),
                "recovery once the broker is back",
                timeout=60,
            )
            assert actor["status"]["status"] == "Creating"
            assert await rabbitmq_depth(f"asya-{ns}-{name}") == 0
            # The Secret's URL reaches the pods by reference, and KEDA through a
            # TriggerAuthentication the actor owns.
            auth = await cluster.api.get(kube.TRIGGERAUTHENTICATIONS, ns, f"{name}-asya")
            assert auth["metadata"]["ownerReferences"][0]["name"] == name
            assert auth["spec"]["secretTargetRef"][0]["name"] == "rabbitmq-creds"
    finally:
        await proxy.close()
        await rabbitmq_cleanup(f"asya-{ns}-{name}")


# -- delete -------------------------------------------------------------------------------------


@pytest.mark.rabbitmq
@pytest.mark.parametrize(
    ("policy", "messages", "queue_left", "warned"),
    [
        (None, 0, False, False),  # DeleteIfEmpty, empty: removed
        (None, 2, True, True),  # DeleteIfEmpty, messages waiting: kept, with a Warning
        ("Delete", 2, False, False),  # Delete: removed anyway
        ("Retain", 0, True, False),  # Retain: never removed
    ],
)
async def test_delete_follows_the_deletion_policy(
    rabbitmq_url: str,
    cluster: Cluster,
    start_operator: Any,
    policy: str | None,
    messages: int,
    queue_left: bool,
    warned: bool,
) -> None:
    ns, name = unique("delete"), "echo"
    queue = f"asya-{ns}-{name}"
    spec: dict[str, Any] = {"queue": {"deletionPolicy": policy}} if policy else {}
    try:
        async with start_operator(ns, {"transports": RABBITMQ}):
            await cluster.api.create(kube.ASYNCACTORS, ns, actor_manifest(ns, name, **spec))
            await eventually(lambda: cluster.status_is(ns, name, "Creating"), "first reconcile")
            async with transports.create("rabbitmq", {env.RABBITMQ_URL: rabbitmq_url}) as t:
                for i in range(messages):
                    await t.send(queue, f"message {i}".encode())

            await cluster.api.delete(kube.ASYNCACTORS, ns, name)
            await eventually(
                lambda: cluster.gone(kube.ASYNCACTORS, ns, name),
                "the finalizer to let the AsyncActor go",
            )

            depth = await rabbitmq_depth(queue)
            assert (depth is not None) == queue_left
            if queue_left:
                assert depth == messages, "a kept queue keeps its messages"

            async def warning() -> list[dict[str, Any]]:
                events = await cluster.api.list(kube.EVENTS, ns)
                return [e for e in events if e.get("reason") == "QueueRetained"]

            if warned:
                (event,) = await eventually(warning, "a QueueRetained Warning event")
                assert event["type"] == "Warning"
                assert f"{messages} message(s)" in event["message"]
                assert event["involvedObject"]["name"] == name
            else:
                assert not await warning()
    finally:
        await rabbitmq_cleanup(queue)


# -- SQS on moto ---------------------------------------------------------------------------------


@pytest.mark.sqs
async def test_sqs_create_and_delete(
    moto_server: ServiceProcess,
    aws_env: dict[str, str],
    cluster: Cluster,
    start_operator: Any,
) -> None:
    ns, name = unique("sqs"), "echo"
    queue = f"asya-{ns}-{name}"
    sqs = {
        "type": "sqs",
        "region": "us-east-1",
        "accountId": ACCOUNT,
        "endpoint": moto_server.url,
        "credentials": {"secretRef": {"name": "aws-creds"}},
    }
    environ = {env.SQS_ENDPOINT: moto_server.url, "AWS_REGION": "us-east-1"}

    async def sqs_queue_exists(queue_name: str) -> bool:
        async with transports.create("sqs", environ) as t:
            try:
                await t.queue_depth(queue_name)
            except transports.QueueNotFound:
                return False
            return True

    async with start_operator(ns, {"transports": {"sqs": sqs}}):
        await cluster.api.create(kube.ASYNCACTORS, ns, actor_manifest(ns, name))
        actor = await eventually(lambda: cluster.status_is(ns, name, "Creating"), "Creating")
        assert condition(actor, "QueueReady")["message"] == f"queue {queue} exists on sqs"
        assert await sqs_queue_exists(queue)
        assert await sqs_queue_exists(f"{queue}-dlq")
        scaled = await cluster.api.get(kube.SCALEDOBJECTS, ns, name)
        assert scaled["spec"]["triggers"][0]["type"] == "aws-sqs-queue"
        auth = await cluster.api.get(kube.TRIGGERAUTHENTICATIONS, ns, f"{name}-asya")
        assert auth["metadata"]["ownerReferences"][0]["uid"] == actor["metadata"]["uid"]

        await cluster.api.delete(kube.ASYNCACTORS, ns, name)
        await eventually(lambda: cluster.gone(kube.ASYNCACTORS, ns, name), "AsyncActor gone")
        assert not await sqs_queue_exists(queue)
