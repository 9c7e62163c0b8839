"""Which processes `asya dev` runs for a set of actors: a pure function of the manifests.

Per actor, as in a pod: a runtime (the user's handler, imported from the working directory)
and a sidecar. Plus the crew: x-sink and x-sump, writing results under the state directory,
x-join (its store a SQLite file there) and, with a gateway, x-pause; and, when asked for, a
gateway (`asya gateway`, its store a SQLite file in the state
directory) that every sidecar and crew process reports to.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from asya_cli.manifests import ActorManifest
from asya_shared import env, names

# The holding crew (x-join, x-pause) retries what fails for want of its store or the gateway
# (both come back), and fails at once what no retry can fix: bad join or pause headers
# (ValueError) and an envelope that is no task or no part (LookupError, ValueError). The
# asya-crew chart gives them the same policy.
HOLDING_RESILIENCY = {
    "policies": {
        "default": {
            "maxAttempts": 30,
            "backoff": "exponential",
            "initialDelay": "1s",
            "maxInterval": "1m",
        },
        "refused": {"maxAttempts": 1},
    },
    "rules": [{"errors": ["ValueError", "LookupError"], "policy": "refused"}],
}


@dataclass(frozen=True)
class ProcessSpec:
    actor: str
    role: str  # "runtime" or "sidecar"
    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: str
    health_port: int | None = None  # the sidecar's /healthz port

    @property
    def name(self) -> str:
        return f"{self.actor}/{self.role}"


@dataclass(frozen=True)
class GatewayPlan:
    port: int  # the public API
    internal_port: int  # where sidecars and the crew report
    flows: Path | None = None  # the flows file to serve, if any
    store: str | None = None  # its store URL; None: SQLite in the state dir (asya dev's)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def internal_url(self) -> str:
        return f"http://127.0.0.1:{self.internal_port}"


@dataclass(frozen=True)
class DevSettings:
    transport: str
    namespace: str
    state_dir: Path  # absolute
    socket_root: Path  # short absolute dir: Unix socket paths must stay under ~104 bytes
    workdir: Path  # where processes run, and handlers of actors with no app_dir import from
    python: str
    runtime_file: Path


def crew_actors(*, with_gateway: bool) -> list[str]:
    """The crew `asya dev` runs: x-pause only with a gateway, which keeps paused tasks."""
    crew = [*names.CREW, names.JOIN]
    return [*crew, names.PAUSE] if with_gateway else crew


def results_url(state_dir: Path) -> str:
    return f"file://{state_dir / 'results'}"


def sump_url(state_dir: Path) -> str:
    return f"file://{state_dir / 'sump'}"


def join_store_url(state_dir: Path) -> str:
    """x-join's store under `asya dev`: a SQLite file in the state directory."""
    return f"sqlite:///{state_dir / 'join.db'}"


def gateway_store_url(state_dir: Path) -> str:
    """The SQLite file of the gateway `asya dev` runs: `sqlite:///` and an absolute path."""
    return f"sqlite:///{state_dir / 'gateway.db'}"


def gateway_url_file(state_dir: Path) -> Path:
    """Where `asya dev` writes its gateway's public URL, for the task commands to find."""
    return state_dir / "gateway.url"


def plan(
    actors: Sequence[ActorManifest],
    settings: DevSettings,
    *,
    base_env: Mapping[str, str],
    ports: Sequence[int],
    gateway: GatewayPlan | None = None,
) -> list[ProcessSpec]:
    """The gateway (if any) first, then runtimes, then sidecars; `ports` gives one health
    port per sidecar. With a gateway, every sidecar and crew process reports to it."""
    # Sidecars and the crew report; a user's handler has nothing to report, so its runtime
    # does not get the URL.
    report_env = {} if gateway is None else {env.GATEWAY_URL: gateway.internal_url}
    state = settings.state_dir
    # (actor, its store variable, the store's URL, the crew role)
    crew: list[tuple[str, str | None, str | None, str]] = [
        (names.SINK, env.RESULT_STORE, results_url(state), "sink"),
        (names.SUMP, env.SUMP_STORE, sump_url(state), "sump"),
        (names.JOIN, env.JOIN_STORE, join_store_url(state), "join"),
    ]
    if gateway is not None:
        # x-pause hands paused tasks to the gateway: without one nothing could resume them.
        crew.append((names.PAUSE, None, None, "pause"))
    needed = len(actors) + len(crew)
    if len(ports) < needed:
        raise ValueError(f"need {needed} ports, got {len(ports)}")
    runtimes: list[ProcessSpec] = []
    sidecars: list[ProcessSpec] = []
    for actor, port in zip(actors, ports, strict=False):
        socket_dir = str(settings.socket_root / actor.name)
        runtime_env = {
            **base_env,
            **actor.env,
            env.HANDLER: actor.handler,
            env.SOCKET_DIR: socket_dir,
            env.RUNTIME_CONCURRENCY: str(actor.concurrency),
            env.LOG_FORMAT: "text",
        }
        runtimes.append(
            ProcessSpec(
                actor=actor.name,
                role="runtime",
                argv=(settings.python, str(settings.runtime_file)),
                env=runtime_env,
                # The runtime imports handlers from its working directory.
                cwd=str(actor.app_dir or settings.workdir),
            )
        )
        sidecars.append(
            _sidecar(actor.name, actor, settings, {**base_env, **report_env}, socket_dir, port)
        )
    for (name, store_var, store_url, role), port in zip(crew, ports[len(actors) :], strict=False):
        socket_dir = str(settings.socket_root / name)
        runtime_env = {
            **base_env,
            **report_env,
            env.SOCKET_DIR: socket_dir,
            env.CREW_METRICS_PORT: "0",
            env.LOG_FORMAT: "text",
        }
        if store_var is not None and store_url is not None:
            runtime_env[store_var] = store_url
        if name == names.JOIN:
            # x-join publishes the joined envelopes itself, as the sidecars do.
            runtime_env.update(_transport_env(settings))
        runtimes.append(
            ProcessSpec(
                actor=name,
                role="runtime",
                argv=(settings.python, "-m", "asya_crew", role),
                env=runtime_env,
                cwd=str(settings.workdir),
            )
        )
        sidecar = _sidecar(name, None, settings, {**base_env, **report_env}, socket_dir, port)
        if name in names.HOLDING:
            sidecar = dataclasses.replace(
                sidecar, env={**sidecar.env, env.RESILIENCY: json.dumps(HOLDING_RESILIENCY)}
            )
        sidecars.append(sidecar)
    gateways = [] if gateway is None else [_gateway(gateway, settings, base_env)]
    return gateways + runtimes + sidecars


def _gateway(
    gateway: GatewayPlan, settings: DevSettings, base_env: Mapping[str, str]
) -> ProcessSpec:
    argv = [
        settings.python, "-m", "asya_cli", "gateway",
        "--host", "127.0.0.1",
        "--port", str(gateway.port),
        "--internal-port", str(gateway.internal_port),
        "--store", gateway.store or gateway_store_url(settings.state_dir),
    ]  # fmt: skip
    if gateway.flows is not None:
        argv += ["--flows", str(gateway.flows)]
    # It publishes envelopes as the sidecars do: the same transport settings.
    gateway_env = {**base_env, **_transport_env(settings), env.LOG_FORMAT: "text",
                   env.SUMP_STORE: sump_url(settings.state_dir)}  # fmt: skip
    return ProcessSpec(
        actor="gateway",
        role="gateway",
        argv=tuple(argv),
        env=gateway_env,
        cwd=str(settings.workdir),
        health_port=gateway.port,
    )


def _transport_env(settings: DevSettings) -> dict[str, str]:
    return {
        env.TRANSPORT: settings.transport,
        env.NAMESPACE: settings.namespace,
        env.STATE_DIR: str(settings.state_dir),
    }


def _sidecar(
    name: str,
    actor: ActorManifest | None,
    settings: DevSettings,
    base_env: Mapping[str, str],
    socket_dir: str,
    port: int,
) -> ProcessSpec:
    sidecar_env = {
        **base_env,
        env.ACTOR: name,
        env.NAMESPACE: settings.namespace,
        env.TRANSPORT: settings.transport,
        env.STATE_DIR: str(settings.state_dir),
        env.SOCKET_DIR: socket_dir,
        env.CONCURRENCY: str(actor.concurrency if actor else 1),
        env.METRICS_HOST: "127.0.0.1",
        env.METRICS_PORT: str(port),
        env.LOG_FORMAT: "text",
    }
    if actor is not None:
        # As the operator does: the sidecar settings an actor names in its env apply to its
        # sidecar. Logs stay text, as every process of `asya dev` prints them.
        passed = set(env.SIDECAR_PASSTHROUGH) - {env.LOG_FORMAT}
        sidecar_env.update({k: v for k, v in actor.env.items() if k in passed})
    if actor is not None and actor.actor_timeout is not None:
        sidecar_env[env.ACTOR_TIMEOUT] = actor.actor_timeout
    if actor is not None and actor.resiliency is not None:
        sidecar_env[env.RESILIENCY] = json.dumps(actor.resiliency)
    return ProcessSpec(
        actor=name,
        role="sidecar",
        argv=(settings.python, "-m", "asya_sidecar"),
        env=sidecar_env,
        cwd=str(settings.workdir),
        health_port=port,
    )
