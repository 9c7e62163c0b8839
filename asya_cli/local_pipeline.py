"""A pipeline of actors running as local processes: what `asya dev` runs, as an object.

Tests and benchmarks use it too, so they exercise exactly the processes a user gets.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

import asya_runtime
import asya_transports as transports
from asya_cli import dev_plan, dev_state
from asya_cli.dev_plan import DevSettings, GatewayPlan
from asya_cli.manifests import ActorManifest
from asya_cli.supervisor import Supervisor
from asya_shared import env, names

RUNTIME_FILE = Path(asya_runtime.__file__).with_name("runtime.py")
# Passed from our environment to the children: broker and store settings, and the log level.
# Other ASYA_* variables are set per process by the plan and must not leak between them.
PASSTHROUGH_PREFIXES = (
    "ASYA_RABBITMQ_", "ASYA_SQS_", "ASYA_PUBSUB_", "ASYA_LOCAL_", "ASYA_S3_", env.LOG_LEVEL,
)  # fmt: skip


class LocalPipeline:
    def __init__(
        self,
        actors: Sequence[ActorManifest],
        *,
        transport: str,
        state_dir: Path,
        namespace: str,
        workdir: Path,
        out: TextIO,
        extra_env: Mapping[str, str] | None = None,
        gateway_port: int | None = None,
        flows: Path | None = None,
        gateway_store: str | None = None,
    ) -> None:
        """`gateway_port` None runs no gateway (nothing is reported); 0 runs one on a free
        port; `flows` is the flows file it serves, `gateway_store` its store URL (default:
        SQLite in the state dir, as `asya dev`)."""
        self.actors = list(actors)
        self.state_dir = state_dir.resolve()
        self.settings = DevSettings(
            transport=transport,
            namespace=namespace,
            state_dir=self.state_dir,
            socket_root=Path(tempfile.mkdtemp(prefix="asya-dev-")),
            workdir=workdir,
            python=sys.executable,
            runtime_file=RUNTIME_FILE,
        )
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("ASYA_")}
        base_env.update({k: v for k, v in os.environ.items() if k.startswith(PASSTHROUGH_PREFIXES)})
        base_env.update(extra_env or {})
        self.transport_env = {**base_env, env.STATE_DIR: str(self.state_dir)}
        # The processes to run; may be adjusted before start() (for example to run a
        # different runtime command for one actor: the protocol is language-neutral).
        crew = dev_plan.crew_actors(with_gateway=gateway_port is not None)
        sidecars = len(actors) + len(crew)
        ports = free_ports(sidecars + (0 if gateway_port is None else 2))
        self.gateway: GatewayPlan | None = None
        if gateway_port is not None:
            self.gateway = GatewayPlan(
                port=gateway_port or ports[sidecars + 1],
                internal_port=ports[sidecars],
                flows=flows,
                store=gateway_store,
            )
        self.specs = dev_plan.plan(
            self.actors,
            self.settings,
            base_env=base_env,
            ports=ports[:sidecars],
            gateway=self.gateway,
        )
        self._out = out
        self._supervisor: Supervisor | None = None

    @property
    def supervisor(self) -> Supervisor:
        if self._supervisor is None:
            raise RuntimeError("the pipeline has not been started")
        return self._supervisor

    @property
    def actor_names(self) -> list[str]:
        return [a.name for a in self.actors] + dev_plan.crew_actors(
            with_gateway=self.gateway is not None
        )

    def queue(self, actor: str) -> str:
        return names.check_queue_name(
            names.queue_name(self.settings.namespace, actor), self.settings.transport
        )

    def open_transport(self) -> transports.Broker:
        return transports.create(self.settings.transport, self.transport_env)

    async def start(self, ready_timeout: float) -> None:
        """Create the queues, start every process, return once all sidecars are healthy."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        async with self.open_transport() as transport:
            for actor in self.actor_names:
                await transport.ensure_queue(self.queue(actor))
        self._supervisor = Supervisor(self.specs, out=self._out)
        await self._supervisor.start()
        await self._supervisor.wait_healthy(ready_timeout)
        if self.gateway is not None:
            # For `asya submit` and friends run without --gateway (the CLI reads it).
            dev_plan.gateway_url_file(self.state_dir).write_text(self.gateway.url + "\n")
        # For `asya ls`: what runs, and where to ask each sidecar how it is doing.
        dev_state.record(
            self.state_dir,
            self.specs,
            transport=self.settings.transport,
            namespace=self.settings.namespace,
            gateway=None if self.gateway is None else self.gateway.url,
            pid_of=self._supervisor.pid,
        )

    async def stop(self) -> None:
        if self._supervisor is not None:
            await self._supervisor.stop()
        shutil.rmtree(self.settings.socket_root, ignore_errors=True)
        dev_state.remove_if_ours(self.state_dir, self.specs)
        if self.gateway is not None:
            written = dev_plan.gateway_url_file(self.state_dir)
            # Only ours: a stale URL would send the CLI to a port nobody listens on, or to
            # whoever listens there next.
            with contextlib.suppress(OSError):
                if written.read_text().strip() == self.gateway.url:
                    written.unlink()

    async def delete_queues(self) -> None:
        async with self.open_transport() as transport:
            for actor in self.actor_names:
                await transport.delete_queue(self.queue(actor))


def free_ports(count: int) -> list[int]:
    """Ports the OS says are free right now (a small race, acceptable for local runs)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
