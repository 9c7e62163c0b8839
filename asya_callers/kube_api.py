"""The two Kubernetes API calls Launch makes (create a job; read it back), over httpx.

In a pod it authenticates as the pod's service account: the token, CA certificate and
namespace that Kubernetes mounts under /var/run/secrets/kubernetes.io/serviceaccount, and
the API server from KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT. ASYA_JOB_KUBE_API
points it at another API server instead (tests; `kubectl proxy` on a laptop), with no
credentials unless a token file is mounted.

The token file is read at every call: the kubelet rotates projected tokens (about hourly)
and writes the new one into the same file.

Failures are the callers' typed errors (asya_callers.errors): a refused or invalid object
is BadRequest (retrying sends the same object), an unreachable or overloaded API server is
Transient.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from asya_callers.client import retry_after_seconds, server_message
from asya_callers.errors import (
    BadRequest,
    ConfigError,
    RateLimited,
    ServerError,
    Timeout,
    Unreachable,
)
from asya_shared import jobs

__all__ = [
    "API_URL_ENV",
    "SERVICE_ACCOUNT_DIR",
    "Connection",
    "KubeApi",
    "connection",
    "namespace_of",
]

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
API_URL_ENV = "ASYA_JOB_KUBE_API"


@dataclass(frozen=True)
class Connection:
    url: str
    token_file: Path | None  # None: no Authorization header
    ca_file: Path | None  # None: the system's CAs (or plain http)


def connection(environ: Mapping[str, str], account_dir: Path = SERVICE_ACCOUNT_DIR) -> Connection:
    """Where the API server is and how to authenticate, from the environment and the pod's
    service-account files; a ConfigError when neither says."""
    token = account_dir / "token"
    ca = account_dir / "ca.crt"
    token_file = token if token.is_file() else None
    override = environ.get(API_URL_ENV, "").strip()
    if override:
        if not override.startswith(("http://", "https://")):
            raise ConfigError(f"{API_URL_ENV}={override!r} is not an http:// or https:// URL")
        return Connection(override.rstrip("/"), token_file, ca if ca.is_file() else None)
    host = environ.get("KUBERNETES_SERVICE_HOST", "").strip()
    port = environ.get("KUBERNETES_SERVICE_PORT", "").strip() or "443"
    if not host or token_file is None:
        raise ConfigError(
            "cannot reach the Kubernetes API: KUBERNETES_SERVICE_HOST is unset or no "
            f"service-account token is mounted at {token}. Run the actor in a pod whose "
            f"service account may create the jobs (docs/jobs.md), or set {API_URL_ENV}"
        )
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return Connection(f"https://{host}:{port}", token_file, ca if ca.is_file() else None)


def namespace_of(environ: Mapping[str, str], variable: str, account_dir: Path) -> str | None:
    """The namespace jobs go to: `variable` if set, else the pod's own namespace."""
    value = environ.get(variable, "").strip()
    if value:
        return value
    path = account_dir / "namespace"
    if not path.is_file():
        return None
    return path.read_text().strip() or None


class KubeApi:
    """Creates jobs in one namespace and reads them back; one connection pool per process."""

    def __init__(self, conn: Connection, *, timeout: float) -> None:
        self.conn = conn
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:  # built in the runtime's event loop, at the first call
            verify: Any = str(self.conn.ca_file) if self.conn.ca_file is not None else True
            self._client = httpx.AsyncClient(
                base_url=self.conn.url,
                verify=verify,
                timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
                headers={"Accept": "application/json"},
                # A proxy from the environment is for the model servers, not the API server.
                trust_env=False,
            )
        return self._client

    async def create_or_get(
        self, kind: jobs.JobKind, namespace: str, body: Mapping[str, Any]
    ) -> tuple[dict[str, Any], bool]:
        """Create the job; if one of that name exists already, return it. True if created."""
        path = _path(kind, namespace)
        response = await self._request("POST", path, body)
        if response.status_code == 409:
            name = str(body["metadata"]["name"])
            existing = await self._request("GET", f"{path}/{quote(name, safe='')}", None)
            self._check(existing, kind, "read", namespace)
            return existing.json(), False
        self._check(response, kind, "create", namespace)
        return response.json(), True

    async def _request(self, method: str, path: str, body: Any) -> httpx.Response:
        headers = {}
        if self.conn.token_file is not None:
            try:
                token = self.conn.token_file.read_text().strip()
            except OSError as exc:
                raise Unreachable(f"cannot read the service-account token: {exc}") from exc
            headers["Authorization"] = f"Bearer {token}"
        where = f"{method} {self.conn.url}{path}"
        try:
            response = await self.client.request(method, path, json=body, headers=headers)
            await response.aread()
        except httpx.ConnectTimeout as exc:
            raise Unreachable(f"{where}: could not connect in time ({exc})") from None
        except httpx.TimeoutException:
            raise Timeout(f"{where}: no answer within {self.timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise Unreachable(f"{where}: {type(exc).__name__}: {exc}") from None
        return response

    def _check(
        self, response: httpx.Response, kind: jobs.JobKind, verb: str, namespace: str
    ) -> None:
        status = response.status_code
        if status < 400:
            return
        what = f"{verb} {kind.kind} ({kind.api_version}) in namespace {namespace!r}"
        detail = server_message(response)
        if status == 429 or status >= 500:
            hint = retry_after_seconds(response.headers.get("retry-after"), now=time.time())
            error = RateLimited if status == 429 else ServerError
            raise error(f"cannot {what}: HTTP {status}: {detail}", status=status, retry_after=hint)
        if status == 404 and verb == "create":
            detail += (
                f"; the API server does not serve {kind.plural}.{kind.group}: install its "
                "scheduler (and its CRDs) or change ASYA_JOB_TEMPLATE"
            )
        elif status in (401, 403):
            detail += (
                f"; the actor's service account needs create and get on {kind.plural}."
                f"{kind.group} in {namespace!r} (docs/jobs.md, RBAC)"
            )
        raise BadRequest(f"cannot {what}: HTTP {status}: {detail}", status=status)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _path(kind: jobs.JobKind, namespace: str) -> str:
    return f"/apis/{kind.group}/{kind.version}/namespaces/{quote(namespace, safe='')}/{kind.plural}"
