"""A thin async client of the Kubernetes API: the few verbs the operator needs, on httpx.

The official Python client is deliberately not a dependency (it pins python-dateutil against
botocore). kopf watches and patches the AsyncActors itself; this client reads and writes the
objects the operator owns, and patches the AsyncActor's status subresource.

`apply` is create-or-patch with a JSON merge patch. A merge patch cannot drop a key it does
not mention, so every applied object carries the annotation `asya.sh/managed-fields`: the
paths of the keys the operator set last time. A key that was set before and is no longer
rendered is removed with `null` on the next apply (the three-way merge `kubectl apply` does),
except for the paths the caller asks to keep (a Deployment's `spec.replicas` once KEDA owns it).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
import kopf

from asya_operator import models

MANAGED_FIELDS_ANNOTATION = "asya.sh/managed-fields"
MERGE_PATCH = "application/merge-patch+json"
DEFAULT_TIMEOUT_S = 30.0

JSON = dict[str, Any]
Path = tuple[str, ...]
Relogin = Callable[[], Awaitable[kopf.ConnectionInfo | None]]


@dataclass(frozen=True)
class Resource:
    """One kind of object, addressed as the API server's URLs do."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [root]
        if self.namespaced and namespace is not None:
            parts.append(f"namespaces/{quote(namespace, safe='')}")
        parts.append(self.plural)
        if name is not None:
            parts.append(quote(name, safe=""))
            if subresource is not None:
                parts.append(subresource)
        return "/".join(parts)


CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap")
SECRETS = Resource("", "v1", "secrets", "Secret")
EVENTS = Resource("", "v1", "events", "Event")
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
SCALEDOBJECTS = Resource("keda.sh", "v1alpha1", "scaledobjects", "ScaledObject")
TRIGGERAUTHENTICATIONS = Resource(
    "keda.sh", "v1alpha1", "triggerauthentications", "TriggerAuthentication"
)
ASYNCACTORS = Resource(models.GROUP, models.VERSION, models.PLURAL, models.KIND)

RESOURCES = (CONFIGMAPS, SECRETS, EVENTS, DEPLOYMENTS, SCALEDOBJECTS, TRIGGERAUTHENTICATIONS)
_BY_KIND = {(r.api_version, r.kind): r for r in (*RESOURCES, ASYNCACTORS)}


def resource_of(obj: Mapping[str, Any]) -> Resource:
    """The resource of a manifest, from its apiVersion and kind."""
    key = (str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
    try:
        return _BY_KIND[key]
    except KeyError:
        raise ValueError(f"the operator does not manage {key[1]!r} of {key[0]!r}") from None


class ApiError(Exception):
    """The API server refused a request, or could not be reached (status 0)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if status else message)
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def temporary(self) -> bool:
        """Whether trying the same request later may succeed without anyone changing it.

        Forbidden counts as temporary: it usually means RBAC is being fixed or rolled out."""
        return self.status in (0, 401, 403, 409, 429) or self.status >= 500


class NotFound(ApiError):
    """The object, or its whole resource (a CRD that is not installed), does not exist."""


class Conflict(ApiError):
    """The object already exists, or changed under us."""


def _error(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status":
        reason = str(body.get("reason") or response.reason_phrase)
        message = str(body.get("message") or "")
    else:
        reason, message = response.reason_phrase, response.text[:500]
    message = message or f"{response.request.method} {response.request.url.path}"
    status = response.status_code
    if status == 404:
        return NotFound(status, reason, message)
    if status == 409:
        return Conflict(status, reason, message)
    return ApiError(status, reason, message)


class Client:
    """Requests to one API server. Use as `async with Client(...)` or call `aclose`."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        verify: Any = True,
        relogin: Relogin | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._verify = verify
        self._timeout = timeout
        self._relogin = relogin
        self._http = self._open(headers or {}, verify)

    @classmethod
    def from_connection_info(
        cls, info: kopf.ConnectionInfo, *, relogin: Relogin | None = None
    ) -> Client:
        """A client with kopf's credentials: server, CA or insecure, token or client cert."""
        verify: Any = info.as_ssl_context() if info.server.startswith("https") else True
        return cls(info.server, headers=info.as_http_headers(), verify=verify, relogin=relogin)

    def _open(self, headers: Mapping[str, str], verify: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Accept": "application/json", **headers},
            verify=verify,
            timeout=self._timeout,
            # Never pick up HTTP(S)_PROXY for the API server unless kopf was told to.
            trust_env=False,
        )

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> JSON:
        content = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": content_type} if content is not None else {}
        for attempt in (1, 2):
            try:
                response = await self._http.request(
                    method, path, content=content, headers=headers, params=params
                )
            except httpx.HTTPError as exc:
                raise ApiError(
                    0,
                    "Unreachable",
                    f"cannot reach the Kubernetes API at {self.base_url}: "
                    f"{str(exc) or type(exc).__name__}",
                ) from exc
            if response.status_code == 401 and attempt == 1 and await self._refresh():
                continue  # a rotated service-account token: try once more with the new one
            if response.status_code >= 400:
                raise _error(response)
            if not response.content:
                return {}
            result = response.json()
            return result if isinstance(result, dict) else {}
        raise AssertionError("unreachable")  # pragma: no cover

    async def _refresh(self) -> bool:
        if self._relogin is None:
            return False
        info = await self._relogin()
        if info is None:
            return False
        old, self._http = self._http, self._open(info.as_http_headers(), self._verify)
        await old.aclose()
        return True

    async def get(self, resource: Resource, namespace: str | None, name: str) -> JSON:
        return await self._request("GET", resource.path(namespace, name))

    async def list(
        self, resource: Resource, namespace: str | None = None, *, label_selector: str = ""
    ) -> list[JSON]:
        params = {"labelSelector": label_selector} if label_selector else None
        result = await self._request("GET", resource.path(namespace), params=params)
        return [item for item in result.get("items") or [] if isinstance(item, dict)]

    async def create(
        self, resource: Resource, namespace: str | None, body: Mapping[str, Any]
    ) -> JSON:
        return await self._request("POST", resource.path(namespace), body=dict(body))

    async def patch(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        patch: Mapping[str, Any],
        *,
        subresource: str | None = None,
    ) -> JSON:
        """A JSON merge patch (RFC 7386): dicts merge, lists and scalars replace, null removes."""
        return await self._request(
            "PATCH",
            resource.path(namespace, name, subresource),
            body=dict(patch),
            content_type=MERGE_PATCH,
        )

    async def patch_status(
        self, resource: Resource, namespace: str | None, name: str, status: Mapping[str, Any]
    ) -> JSON:
        return await self.patch(
            resource, namespace, name, {"status": dict(status)}, subresource="status"
        )

    async def delete(
        self, resource: Resource, namespace: str | None, name: str, *, missing_ok: bool = True
    ) -> bool:
        """Delete in the background (dependents go by garbage collection); False if absent."""
        try:
            await self._request(
                "DELETE",
                resource.path(namespace, name),
                body={
                    "kind": "DeleteOptions",
                    "apiVersion": "v1",
                    "propagationPolicy": "Background",
                },
            )
        except NotFound:
            if missing_ok:
                return False
            raise
        return True

    async def apply(self, obj: Mapping[str, Any], *, keep: Iterable[Path] = ()) -> JSON:
        """Create `obj`, or merge-patch the live one to match it; return the live object.

        Keys set by the previous apply and absent from `obj` are removed, except under the
        paths in `keep`. Nothing is sent when the live object already matches.
        """
        resource = resource_of(obj)
        metadata = obj.get("metadata") or {}
        namespace = metadata.get("namespace") if resource.namespaced else None
        name = str(metadata.get("name") or "")
        if not name:
            raise ValueError(f"a {resource.kind} to apply needs metadata.name")
        managed = sorted(leaf_paths(obj))
        desired = with_annotation(obj, MANAGED_FIELDS_ANNOTATION, json.dumps(managed))
        try:
            live = await self.get(resource, namespace, name)
        except NotFound:
            try:
                return await self.create(resource, namespace, desired)
            except Conflict:
                # Created by someone else (another reconcile) in between: patch it instead.
                live = await self.get(resource, namespace, name)
        patch = merge_patch(live, desired, keep=tuple(keep))
        if patch is None:
            return live
        return await self.patch(resource, namespace, name, patch)


def with_annotation(obj: Mapping[str, Any], key: str, value: str) -> JSON:
    metadata = dict(obj.get("metadata") or {})
    metadata["annotations"] = {**(metadata.get("annotations") or {}), key: value}
    return {**obj, "metadata": metadata}


def leaf_paths(obj: Mapping[str, Any], prefix: Path = ()) -> set[Path]:
    """Paths of every key whose value is not a non-empty dict: what a merge patch sets."""
    paths: set[Path] = set()
    for key, value in obj.items():
        path = (*prefix, str(key))
        if path == ("metadata", "annotations", MANAGED_FIELDS_ANNOTATION):
            continue
        if isinstance(value, Mapping) and value:
            paths |= leaf_paths(value, path)
        else:
            paths.add(path)
    return paths


def previously_managed(live: Mapping[str, Any]) -> set[Path]:
    raw = ((live.get("metadata") or {}).get("annotations") or {}).get(MANAGED_FIELDS_ANNOTATION)
    try:
        paths = json.loads(raw) if raw else []
    except ValueError:
        return set()  # a hand-mangled annotation: forget what we set, never fail on it
    if not isinstance(paths, list):
        return set()
    return {tuple(str(p) for p in path) for path in paths if isinstance(path, list) and path}


def contains(live: Any, desired: Any) -> bool:
    """Whether `live` already holds everything `desired` says.

    Dicts (also inside lists) may carry more keys in `live`: the API server fills in
    defaults (a container's terminationMessagePath, a port's protocol) that were never ours."""
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(
            key in live and contains(live[key], value) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(contains(a, b) for a, b in zip(live, desired, strict=True))
        )
    return bool(live == desired)


def _has(obj: Mapping[str, Any], path: Path) -> bool:
    node: Any = obj
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return False
        node = node[key]
    return True


def _replaced(obj: Mapping[str, Any], path: Path) -> bool:
    """Whether a merge patch of `obj` replaces whatever is at `path` (not a dict there)."""
    node: Any = obj
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return False
        node = node[key]
    return not isinstance(node, Mapping)


def _collapse(live: Mapping[str, Any], desired: Mapping[str, Any], paths: list[Path]) -> list[Path]:
    """Remove a whole dict rather than leave it empty, when every key in it goes.

    Only when the live dict holds nothing else: keys others wrote there stay."""
    removed = set(paths)
    while True:
        parents = {path[:-1] for path in removed if len(path) > 1}
        grown = False
        for parent in sorted(parents):
            if _has(desired, parent) or not _has(live, parent):
                continue
            node: Any = live
            for key in parent:
                node = node[key]
            if not isinstance(node, Mapping):
                continue
            if all((*parent, key) in removed for key in node):
                removed = {p for p in removed if p[: len(parent)] != parent} | {parent}
                grown = True
        if not grown:
            return sorted(removed)


def _under(path: Path, prefixes: Iterable[Path]) -> bool:
    return any(path[: len(prefix)] == prefix for prefix in prefixes)


def merge_patch(
    live: Mapping[str, Any], desired: Mapping[str, Any], *, keep: tuple[Path, ...] = ()
) -> JSON | None:
    """The merge patch that turns `live` into `desired`, or None when nothing would change."""
    current = leaf_paths(desired)
    removals: list[Path] = []
    for path in sorted(previously_managed(live) - current):
        if _under(path, keep) or not _has(live, path):
            continue
        # Below a key the patch sets as a whole (a list, a scalar) nothing is left to remove.
        if any(_replaced(desired, path[:i]) for i in range(1, len(path))):
            continue
        removals.append(path)
    removals = _collapse(live, desired, removals)
    if not removals and contains(live, desired):
        return None
    patch: JSON = json.loads(json.dumps(desired))  # a deep copy we may write into
    for path in removals:
        node = patch
        for key in path[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                child = node[key] = {}
            node = child
        node[path[-1]] = None
    return patch
