"""The thin Kubernetes API client against kmock's API emulator."""

from __future__ import annotations

import json
from typing import Any

import kmock
import kopf
import pytest

from asya_operator import kube

NS = "kube-tests"


def configmap(name: str = "cm", **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": "x"}},
        "data": data,
    }


def deployment(name: str = "d", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


@pytest.fixture
async def client(kmock: kmock.KubernetesEmulator) -> Any:
    for resource in (*kube.RESOURCES, kube.ASYNCACTORS):
        kmock.resources[f"{resource.api_version}/{resource.plural}"] = kmock.ResourceInfo(
            kind=resource.kind, namespaced=resource.namespaced
        )
    async with kube.Client(str(kmock.url)) as api:
        yield api


def stored(
    emulator: kmock.KubernetesEmulator, resource: kube.Resource, name: str
) -> dict[str, Any]:
    raw: dict[str, Any] = emulator.objects[
        f"{resource.api_version}/{resource.plural}", NS, name
    ].raw
    return raw


def patches(emulator: kmock.KubernetesEmulator) -> list[Any]:
    return [request for request in emulator if request.method == "PATCH"]


class TestResource:
    def test_paths(self) -> None:
        assert kube.CONFIGMAPS.path("ns", "a") == "/api/v1/namespaces/ns/configmaps/a"
        assert kube.DEPLOYMENTS.path("ns") == "/apis/apps/v1/namespaces/ns/deployments"
        assert (
            kube.ASYNCACTORS.path("ns", "a", "status")
            == "/apis/asya.sh/v1alpha1/namespaces/ns/asyncactors/a/status"
        )
        assert kube.SCALEDOBJECTS.path() == "/apis/keda.sh/v1alpha1/scaledobjects"

    def test_resource_of_a_manifest(self) -> None:
        assert kube.resource_of(deployment()) is kube.DEPLOYMENTS
        assert kube.resource_of({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject"}) is (
            kube.SCALEDOBJECTS
        )
        with pytest.raises(ValueError, match="Pod"):
            kube.resource_of({"apiVersion": "v1", "kind": "Pod"})


class TestVerbs:
    async def test_create_get_list_patch_delete(
        self, client: kube.Client, kmock: kmock.KubernetesEmulator
    ) -> None:
        created = await client.create(kube.CONFIGMAPS, NS, configmap(a="1", b="2"))
        assert created["data"] == {"a": "1", "b": "2"}
        assert (await client.get(kube.CONFIGMAPS, NS, "cm"))["data"]["a"] == "1"
        assert [o["metadata"]["name"] for o in await client.list(kube.CONFIGMAPS, NS)] == ["cm"]

        patched = await client.patch(kube.CONFIGMAPS, NS, "cm", {"data": {"a": "3", "b": None}})
        assert patched["data"] == {"a": "3"}
        request = patches(kmock)[-1]
        assert request.headers["Content-Type"] == kube.MERGE_PATCH

        assert await client.delete(kube.CONFIGMAPS, NS, "cm") is True
        with pytest.raises(kube.NotFound):
            await client.get(kube.CONFIGMAPS, NS, "cm")
        assert await client.delete(kube.CONFIGMAPS, NS, "cm") is False
        with pytest.raises(kube.NotFound):
            await client.delete(kube.CONFIGMAPS, NS, "cm", missing_ok=False)

    async def test_create_twice_is_a_conflict(self, client: kube.Client) -> None:
        await client.create(kube.CONFIGMAPS, NS, configmap())
        with pytest.raises(kube.Conflict) as caught:
            await client.create(kube.CONFIGMAPS, NS, configmap())
        assert caught.value.status == 409
        assert caught.value.temporary

    async def test_patch_status_goes_to_the_subresource(
        self, client: kube.Client, kmock: kmock.KubernetesEmulator
    ) -> None:
        actor = {
            "apiVersion": "asya.sh/v1alpha1",
            "kind": "AsyncActor",
            "metadata": {"name": "a", "namespace": NS},
            "spec": {"handler": "m.f"},
        }
        await client.create(kube.ASYNCACTORS, NS, actor)
        await client.patch_status(kube.ASYNCACTORS, NS, "a", {"status": "Running"})
        assert patches(kmock)[-1].url.path.endswith("/asyncactors/a/status")
        assert stored(kmock, kube.ASYNCACTORS, "a")["status"] == {"status": "Running"}

    async def test_api_errors_carry_status_and_message(
        self, client: kube.Client, kmock: kmock.KubernetesEmulator
    ) -> None:
        (
            kmock["get", kmock.resource("", "v1", "secrets")]
            << 403
            << {
                "kind": "Status",
                "reason": "Forbidden",
                "message": "secrets is forbidden",
            }
        )
        with pytest.raises(kube.ApiError) as caught:
            await client.get(kube.SECRETS, NS, "s")
        assert (caught.value.status, caught.value.reason) == (403, "Forbidden")
        assert "forbidden" in caught.value.message
        (
            kmock["post", kmock.resource("apps", "v1", "deployments")]
            << 422
            << {
                "kind": "Status",
                "reason": "Invalid",
                "message": "spec.selector: Required value",
            }
        )
        with pytest.raises(kube.ApiError) as invalid:
            await client.create(kube.DEPLOYMENTS, NS, deployment())
        assert invalid.value.status == 422
        assert not invalid.value.temporary

    async def test_unreachable_server(self) -> None:
        async with kube.Client("http://127.0.0.1:9", timeout=2) as api:
            with pytest.raises(kube.ApiError) as caught:
                await api.get(kube.CONFIGMAPS, NS, "x")
        assert caught.value.status == 0
        assert caught.value.temporary
        assert "127.0.0.1:9" in str(caught.value)


class TestCredentials:
    async def test_token_from_connection_info(self, kmock: kmock.KubernetesEmulator) -> None:
        kmock.resources["v1/configmaps"] = kmock.ResourceInfo(kind="ConfigMap", namespaced=True)
        info = kopf.ConnectionInfo(server=str(kmock.url), token="tok-1")
        async with kube.Client.from_connection_info(info) as api:
            with pytest.raises(kube.NotFound):
                await api.get(kube.CONFIGMAPS, NS, "x")
        assert list(kmock)[-1].headers["Authorization"] == "Bearer tok-1"

    async def test_401_logs_in_again_once(self, kmock: kmock.KubernetesEmulator) -> None:
        kmock.resources["v1/configmaps"] = kmock.ResourceInfo(kind="ConfigMap", namespaced=True)
        kmock["get", kmock.resource("", "v1", "configmaps")][:1] << 401
        calls: list[int] = []

        async def relogin() -> kopf.ConnectionInfo:
            calls.append(1)
            return kopf.ConnectionInfo(server=str(kmock.url), token="tok-2")

        info = kopf.ConnectionInfo(server=str(kmock.url), token="tok-1")
        async with kube.Client.from_connection_info(info, relogin=relogin) as api:
            with pytest.raises(kube.NotFound):
                await api.get(kube.CONFIGMAPS, NS, "x")
        assert calls == [1]
        sent = [r.headers["Authorization"] for r in kmock if r.method == "GET"]
        assert sent[-2:] == ["Bearer tok-1", "Bearer tok-2"]


class TestApply:
    async def test_creates_then_patches_then_leaves_alone(
        self, client: kube.Client, kmock: kmock.KubernetesEmulator
    ) -> None:
        live = await client.apply(configmap(a="1"))
        assert live["data"] == {"a": "1"}
        managed = json.loads(live["metadata"]["annotations"][kube.MANAGED_FIELDS_ANNOTATION])
        assert ["data", "a"] in managed

        await client.apply(configmap(a="2"))
        assert stored(kmock, kube.CONFIGMAPS, "cm")["data"] == {"a": "2"}
        count = len(patches(kmock))

        await client.apply(configmap(a="2"))
        assert len(patches(kmock)) == count, "an object that already matches is not patched"

    async def test_keys_no_longer_rendered_are_removed(
        self, client: kube.Client, kmock: kmock.KubernetesEmulator
    ) -> None:
        await client.apply(deployment(replicas=2, template={"spec": {"nodeSelector": {"a": "b"}}}))
        await client.apply(deployment(template={"spec": {}}))
        spec = stored(kmock, kube.DEPLOYMENTS, "d")["spec"]
        assert "replicas" not in spec
        assert "nodeSelector" not in spec["template"]["spec"]

    async def test_kept_paths_survive(
        self, client: kube.Client, kmock: kmock.KubernetesEmulator
    ) -> None:
        await client.apply(deployment(replicas=3, paused=False))
        await client.apply(deployment(paused=False), keep=[("spec", "replicas")])
        assert stored(kmock, kube.DEPLOYMENTS, "d")["spec"]["replicas"] == 3
        patch = patches(kmock)[-1].data
        assert "replicas" not in patch["spec"], "never writes replicas it was told to keep"

    async def test_hand_edits_of_managed_fields_are_reverted(
        self, client: kube.Client, kmock: kmock.KubernetesEmulator
    ) -> None:
        containers = [{"name": "c", "image": "i:1", "env": [{"name": "A", "value": "1"}]}]
        desired = deployment(template={"spec": {"containers": containers}})
        await client.apply(desired)
        await client.patch(
            kube.DEPLOYMENTS,
            NS,
            "d",
            {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "evil"}]}}}},
        )
        await client.apply(desired)
        assert (
            stored(kmock, kube.DEPLOYMENTS, "d")["spec"]["template"]["spec"]["containers"]
            == containers
        )

    async def test_server_defaults_do_not_count_as_drift(
        self, client: kube.Client, kmock: kmock.KubernetesEmulator
    ) -> None:
        containers = [{"name": "c", "image": "i:1"}]
        desired = deployment(template={"spec": {"containers": containers}})
        await client.apply(desired)
        # What an API server adds on its own.
        defaulted = [{"name": "c", "image": "i:1", "terminationMessagePath": "/dev/x"}]
        await client.patch(
            kube.DEPLOYMENTS,
            NS,
            "d",
            {"spec": {"revisionHistoryLimit": 10, "template": {"spec": {"containers": defaulted}}}},
        )
        count = len(patches(kmock))
        await client.apply(desired)
        assert len(patches(kmock)) == count

    async def test_created_meanwhile_is_patched(
        self, client: kube.Client, kmock: kmock.KubernetesEmulator
    ) -> None:
        # Someone else creates it between our GET and our POST: the GET sees nothing.
        kmock["get", kmock.resource("", "v1", "configmaps")][:1] << 404
        await client.create(kube.CONFIGMAPS, NS, configmap(a="theirs"))
        live = await client.apply(configmap(a="ours"))
        assert live["data"] == {"a": "ours"}

    def test_merge_patch_ignores_a_mangled_annotation(self) -> None:
        live = deployment(replicas=1)
        live["metadata"]["annotations"] = {kube.MANAGED_FIELDS_ANNOTATION: "{not json"}
        patch = kube.merge_patch(live, deployment(replicas=2))
        assert patch is not None
        assert patch["spec"] == {"replicas": 2}

    def test_a_dict_emptied_by_removals_goes_but_keys_of_others_stay(self) -> None:
        previous = deployment(template={"spec": {"nodeSelector": {"a": "b"}}})
        live = kube.with_annotation(
            previous,
            kube.MANAGED_FIELDS_ANNOTATION,
            json.dumps(sorted(kube.leaf_paths(previous))),
        )
        desired = deployment(template={"spec": {}})
        patch = kube.merge_patch(live, desired)
        assert patch is not None
        assert patch["spec"]["template"]["spec"] == {"nodeSelector": None}

        # Someone else added a key next to ours: only ours is removed.
        live["spec"]["template"]["spec"]["nodeSelector"]["theirs"] = "x"
        patch = kube.merge_patch(live, desired)
        assert patch is not None
        assert patch["spec"]["template"]["spec"] == {"nodeSelector": {"a": None}}
