"""Rendering the Helm charts with helm-python-sdk (Helm's Go SDK, no helm binary), and the
checks every rendered pod and role must pass."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHARTS = ROOT / "charts"
OPERATOR = CHARTS / "asya-operator"
CREW = CHARTS / "asya-crew"
GATEWAY = CHARTS / "asya-gateway"
VALUES = Path(__file__).resolve().parent / "values"
OPERATOR_NAMESPACE = "asya-system"
CREW_NAMESPACE = "asya-crew"
GATEWAY_NAMESPACE = "asya-gateway"
NONROOT = 65532

Obj = dict[str, Any]


@functools.cache
def chart(path: Path) -> helm.Chart:
    # Loaded once: a Chart is an immutable native handle, safe to share.
    return helm.Chart.load(path)


def values_file(path: Path) -> dict[str, Any]:
    """A values file read the way `helm install -f` reads it."""
    return helm.values_from_yaml(path.read_text())


def values_files(kind: str) -> list[Path]:
    return sorted((VALUES / kind).glob("*.yaml"))


def render_templates(path: Path, values: dict[str, Any], namespace: str) -> dict[str, str]:
    """Template path -> rendered text, as `helm template` would print them."""
    return chart(path).render(values, name=path.name, namespace=namespace)


def render(path: Path, values: dict[str, Any], namespace: str) -> list[Obj]:
    """Every object the chart installs from templates/ (not crds/, which Helm applies apart)."""
    objects: list[Obj] = []
    for name, text in sorted(render_templates(path, values, namespace).items()):
        if name.endswith("NOTES.txt"):
            continue
        objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return objects


def of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[Obj], kind: str) -> Obj:
    (found,) = of_kind(objects, kind)
    return found


def expected_error(path: Path) -> str:
    """A bad values file names, in its first line, the error it must produce."""
    match = re.match(r"# error: (.+)\n", path.read_text())
    assert match, f"{path} does not start with '# error: <message>'"
    return match.group(1)


# --------------------------------------------------------------------- pod security


def pod_templates(objects: list[Obj]) -> dict[str, Obj]:
    """The pod spec of every workload, by `Kind/name`."""
    return {
        f"{o['kind']}/{o['metadata']['name']}": o["spec"]["template"]["spec"]
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")
    }


def assert_restricted(pod: Obj, where: str, *, nonroot_user: int | None = NONROOT) -> None:
    """Pod Security Standard 'restricted', plus a read-only root with a writable /tmp."""
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True, where
    assert security["seccompProfile"]["type"] == "RuntimeDefault", where
    if nonroot_user is not None:
        assert security["runAsUser"] == nonroot_user, where
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(key), f"{where}: {key}"
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    assert not [v for v in volumes.values() if "hostPath" in v], where
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        name = f"{where} container {container['name']}"
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["capabilities"]["drop"] == ["ALL"], name
        assert not context["capabilities"].get("add"), name
        assert context["readOnlyRootFilesystem"] is True, name
        assert context.get("runAsNonRoot", True) is True, name
        assert context.get("runAsUser", security.get("runAsUser")) != 0, name
        assert context.get("seccompProfile", security["seccompProfile"])["type"] == (
            "RuntimeDefault"
        ), name
        assert not context.get("privileged"), name
        tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
        assert len(tmp) == 1, f"{name}: no /tmp for a read-only root"
        assert "emptyDir" in volumes[tmp[0]["name"]], name


# ---------------------------------------------------------------------------- RBAC


@dataclass(frozen=True)
class Grant:
    """One (kind, namespace, apiGroup, resource, verb, resourceNames) permission."""

    kind: str  # Role or ClusterRole
    namespace: str | None
    group: str
    resource: str
    verb: str
    names: tuple[str, ...] = ()


def grants(objects: list[Obj]) -> set[Grant]:
    """What the rendered roles allow, flattened, counting only roles something binds."""
    bound = {
        (b["roleRef"]["kind"], b["metadata"].get("namespace"), b["roleRef"]["name"])
        for b in objects
        if b["kind"] in ("RoleBinding", "ClusterRoleBinding")
    }
    found: set[Grant] = set()
    for role in objects:
        if role["kind"] not in ("Role", "ClusterRole"):
            continue
        namespace = role["metadata"].get("namespace")
        assert (role["kind"], namespace, role["metadata"]["name"]) in bound, role["metadata"]
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        names = tuple(sorted(rule.get("resourceNames", [])))
                        found.add(Grant(role["kind"], namespace, group, resource, verb, names))
    return found
