"""An API server (kmock) and the operator as a real process, for the operator-kill scenario.

kmock plays the Kubernetes API only: no controllers run. Of what a cluster does, the scenario
needs only garbage collection (an AsyncActor's Deployment goes when the actor goes, through
its ownerReference), so `collect_garbage` does what the garbage collector would. The
operator is `python -m asya_cli operator`, pointed at kmock through a kubeconfig, so that it
can be killed with SIGKILL and started again as its Deployment's pod would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import kmock
import yaml

from asya_operator import binding_handlers, kube
from faults.harness import wait_for
from tests.support.kube_emulator import VersionedEmulator

BINDINGS = binding_handlers.ASYABINDINGS
OWNERS = (kube.ASYNCACTORS, BINDINGS)
# What the operator creates for an actor or a binding's bridge.
CHILDREN = (kube.CONFIGMAPS, kube.TRIGGERAUTHENTICATIONS, kube.DEPLOYMENTS, kube.SCALEDOBJECTS)
WITH_STATUS = (kube.ASYNCACTORS, BINDINGS, kube.DEPLOYMENTS, kube.SCALEDOBJECTS)
# The line the operator's startup handler logs once its configuration is loaded.
STARTED_LINE = "asya operator: transports"
START_TIMEOUT_S = 90.0
EXIT_TIMEOUT_S = 30.0


TOKEN = "faults-operator-token"
KEEP_REQUESTS = 5
WRITES = (kmock.method.POST, kmock.method.PUT, kmock.method.PATCH, kmock.method.DELETE)


class CountingEmulator(VersionedEmulator):
    """Counts the operator's writes (what it does; its requests carry the kubeconfig's token,
    the scenario's own carry none), so that a kill can be timed to land amid its work."""

    operator_writes = 0

    async def _handle(self, request: kmock.Request) -> Any:
        # kmock keeps every request and walks through all of them to match each new one:
        # O(n) a request, minutes per request after a few thousand. Only the newest are kept
        # (the one being matched is the last; nothing here asks about older ones).
        del self._requests[:-KEEP_REQUESTS]
        if request.method == kmock.method.POST and isinstance(request.data, dict):
            # kmock ignores generateName, so every Event kopf posts after the first in a
            # namespace would be refused as a duplicate (409): name it as an API server does.
            metadata = request.data.get("metadata")
            if (
                isinstance(metadata, dict)
                and metadata.get("generateName")
                and not metadata.get("name")
            ):
                metadata["name"] = f"{metadata['generateName']}{uuid.uuid4().hex[:10]}"
        if request.method in WRITES and any(
            key.lower() == "authorization" and TOKEN in value
            for key, value in request.headers.items()
        ):
            self.operator_writes += 1
        return await super()._handle(request)


class Cluster:
    """kmock serving every resource the operator reads and writes, and a client to it."""

    def __init__(self) -> None:
        self.emulator = CountingEmulator()
        self._server = kmock.Server(self.emulator)
        self._api: kube.Client | None = None

    async def __aenter__(self) -> Cluster:
        await self.emulator.__aenter__()
        await self._server.__aenter__()
        for resource in (
            *kube.RESOURCES,
            *OWNERS,
            binding_handlers.SERVICES,
            binding_handlers.HPAS,
        ):
            self.emulator.resources[f"{resource.api_version}/{resource.plural}"] = (
                kmock.ResourceInfo(
                    kind=resource.kind,
                    namespaced=resource.namespaced,
                    # kopf serves only what discovery says it can list and watch.
                    verbs={"get", "list", "watch", "create", "patch", "update", "delete"},
                    subresources={"status"} if resource in WITH_STATUS else set(),
                )
            )
        # kopf waits for namespaces to be discoverable before it watches in any namespace.
        self.emulator.resources["v1/namespaces"] = kmock.ResourceInfo(
            kind="Namespace", namespaced=False, verbs={"get", "list", "watch"}
        )
        self._api = kube.Client(self.url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._api is not None:
            await self._api.aclose()
            self._api = None
        await self._server.__aexit__(None, None, None)
        await self.emulator.__aexit__(None, None, None)

    @property
    def url(self) -> str:
        return str(self.emulator.url)

    @property
    def api(self) -> kube.Client:
        if self._api is None:
            raise RuntimeError("the cluster has not started")
        return self._api

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "kmock",
                    "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
                    "users": [{"name": "faults", "user": {"token": TOKEN}}],
                    "contexts": [
                        {"name": "kmock", "context": {"cluster": "kmock", "user": "faults"}}
                    ],
                }
            )
        )
        return path

    async def get(
        self, resource: kube.Resource, namespace: str, name: str
    ) -> dict[str, Any] | None:
        try:
            return await self.api.get(resource, namespace, name)
        except kube.NotFound:
            return None

    async def collect_garbage(self, namespace: str) -> int:
        """Delete every child whose owner is gone, as Kubernetes' garbage collector does;
        how many were deleted."""
        owners = {
            str((obj.get("metadata") or {}).get("uid"))
            for resource in OWNERS
            for obj in await self.api.list(resource, namespace)
        }
        collected = 0
        for resource in CHILDREN:
            for obj in await self.api.list(resource, namespace):
                metadata = obj.get("metadata") or {}
                refs = [r for r in metadata.get("ownerReferences") or [] if isinstance(r, dict)]
                if refs and not any(str(r.get("uid")) in owners for r in refs):
                    await self.api.delete(resource, namespace, str(metadata.get("name")))
                    collected += 1
        return collected


class OperatorProcess:
    """`asya operator` on one namespace, as a process that can be killed and started again;
    its output goes to one log file across restarts."""

    def __init__(self, *, config: Path, kubeconfig: Path, namespace: str, log_path: Path) -> None:
        self.argv = [
            sys.executable,
            "-m",
            "asya_cli",
            "operator",
            "--config",
            str(config),
            "--namespace",
            namespace,
            "--metrics-port",
            "0",
        ]
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
        self.log_path = log_path
        self._log: TextIO = log_path.open("a")
        self._proc: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.exit_codes: list[int] = []

    async def start(self) -> None:
        """Start it and wait until its startup handler has run (its configuration loaded)."""
        if self.running:
            raise RuntimeError("the operator is running already")
        self.starts += 1
        self._log.write(f"--- faults: operator start {self.starts} ---\n")
        self._log.flush()
        self._proc = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=asyncio.subprocess.STDOUT,
        )
        starts = self.starts
        await wait_for(
            lambda: self._started() >= starts or not self.running,
            f"the operator to start (start {starts})",
            START_TIMEOUT_S,
        )
        if not self.running:
            raise RuntimeError(f"the operator exited while starting:\n{self.log_tail()}")

    def _started(self) -> int:
        return self.log_path.read_text(errors="replace").count(STARTED_LINE)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def kill(self) -> None:
        """SIGKILL, and wait for it to be gone."""
        if self._proc is None or self._proc.returncode is not None:
            raise RuntimeError("the operator is not running")
        os.kill(self._proc.pid, signal.SIGKILL)
        code = await asyncio.wait_for(self._proc.wait(), EXIT_TIMEOUT_S)
        self.exit_codes.append(code)

    async def stop(self) -> None:
        """SIGTERM (kopf's own shutdown), then SIGKILL if it takes too long."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), EXIT_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    def close(self) -> None:
        self._log.close()

    def log_tail(self, lines: int = 40) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def operator_config(transport: str, name: str, broker_env: Mapping[str, str]) -> dict[str, Any]:
    """The operator configuration for one broker of the fault runs, as transport `name`."""
    if transport == "rabbitmq":
        settings: dict[str, Any] = {"type": "rabbitmq", "url": "amqp://127.0.0.1:5672/"}
    elif transport == "sqs":
        settings = {
            "type": "sqs",
            "region": broker_env.get("AWS_REGION", "us-east-1"),
            "accountId": "123456789012",
            "endpoint": broker_env["ASYA_SQS_ENDPOINT"],
            # The pods' credentials; the operator itself uses its own (the AWS_* variables).
            "credentials": {"secretRef": {"name": "aws-creds"}},
        }
    elif transport == "pubsub":
        settings = {
            "type": "pubsub",
            "project": broker_env["ASYA_PUBSUB_PROJECT"],
            "emulatorHost": broker_env["PUBSUB_EMULATOR_HOST"],
        }
    else:
        raise ValueError(f"the operator has no broker to administer on {transport!r}")
    return {"transports": {name: settings}, "queueRefreshSeconds": 60}
