"""Sidecar settings, read from the environment and validated once at start.

`load` is pure (a mapping in, settings out) and reports every problem at once, so a broken
pod spec is fixed in one round. The meaning of every variable is documented in
docs/sidecar.md; transport-specific variables are read by the transport modules.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from asya_shared import env, names
from asya_shared.durations import parse_duration
from asya_sidecar import resiliency
from asya_sidecar.resiliency import Resiliency
from asya_transports import KINDS


class ConfigError(ValueError):
    """One or more settings are missing or malformed; the message lists each of them."""


@dataclass(frozen=True)
class SidecarConfig:
    actor: str
    namespace: str
    transport: str
    queue: str
    sink_queue: str
    sump_queue: str
    join_queue: str
    pause_queue: str
    queue_autocreate: bool
    socket_dir: str
    concurrency: int
    actor_timeout: float
    runtime_ready_timeout: float
    shutdown_timeout: float
    crew_retry_delay: float
    metrics_host: str
    metrics_port: int
    log_level: str
    log_format: str
    events_url: str | None
    resiliency: Resiliency = field(default_factory=Resiliency)
    # The gateway's internal base URL; None: no status reports and no cancellation checks.
    gateway_url: str | None = None
    report_interval: float = 1.0  # seconds between report batches to the gateway

    @property
    def socket_path(self) -> str:
        return os.path.join(self.socket_dir, "asya-runtime.sock")

    @property
    def ready_path(self) -> str:
        return os.path.join(self.socket_dir, "runtime-ready")

    @property
    def is_crew(self) -> bool:
        return self.actor in names.CREW

    def queue_of(self, actor: str) -> str:
        """The queue that delivers to `actor` (the crew's may be overridden by env)."""
        crew = {
            names.SINK: self.sink_queue,
            names.SUMP: self.sump_queue,
            names.JOIN: self.join_queue,
            names.PAUSE: self.pause_queue,
        }
        if actor in crew:
            return crew[actor]
        if actor == self.actor:
            return self.queue
        return names.check_queue_name(names.queue_name(self.namespace, actor), self.transport)


def load(environ: Mapping[str, str]) -> SidecarConfig:
    problems: list[str] = []

    def text(name: str, default: str) -> str:
        return environ.get(name, "").strip() or default

    def number(name: str, default: float, *, minimum: float = 0.0) -> float:
        raw = text(name, str(default))
        try:
            value = parse_duration(raw)
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
            return default
        if value < minimum:
            problems.append(f"{name}={raw!r} must be at least {minimum}")
            return default
        return value

    def integer(name: str, default: int, *, minimum: int, maximum: int) -> int:
        raw = text(name, str(default))
        try:
            value = int(raw)
        except ValueError:
            problems.append(f"{name}={raw!r} is not an integer")
            return default
        if not minimum <= value <= maximum:
            problems.append(f"{name}={raw!r} must be between {minimum} and {maximum}")
            return default
        return value

    def flag(name: str) -> bool:
        raw = text(name, "false").lower()
        if raw not in ("true", "false", "1", "0", "yes", "no"):
            problems.append(f"{name}={raw!r} must be true or false")
        return raw in ("true", "1", "yes")

    def choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = text(name, default).lower()
        if value not in allowed:
            problems.append(f"{name}={value!r} must be one of {', '.join(allowed)}")
            return default
        return value

    actor = text(env.ACTOR, "")
    actor_ok = False
    if not actor:
        problems.append(f"{env.ACTOR} is required: the name of the actor this sidecar serves")
    else:
        try:
            actor_ok = bool(names.check_actor_name(actor))
        except names.InvalidName as exc:
            problems.append(f"{env.ACTOR}: {exc}")
    namespace = text(env.NAMESPACE, "default")
    transport = choice(env.TRANSPORT, "local", KINDS)

    def queue(name: str, of_actor: str) -> str:
        explicit = text(name, "")
        try:
            derived = explicit or names.queue_name(namespace, of_actor)
            return names.check_queue_name(derived, transport)
        except names.InvalidName as exc:
            problems.append(f"{name}: {exc}")
            return explicit

    policies = Resiliency()
    raw_policies = text(env.RESILIENCY, "")
    if raw_policies:
        try:
            policies = resiliency.parse(json.loads(raw_policies))
        except ValueError as exc:  # JSONDecodeError and ResiliencyError are ValueErrors
            problems.append(f"{env.RESILIENCY}: {exc}")
    actor_timeout = number(env.ACTOR_TIMEOUT, resiliency.DEFAULT_ACTOR_TIMEOUT, minimum=0.001)
    gateway_url = text(env.GATEWAY_URL, "") or None
    if gateway_url is not None and not gateway_url.startswith(("http://", "https://")):
        problems.append(
            f"{env.GATEWAY_URL}={gateway_url!r} must be an http:// or https:// URL (the "
            "gateway's internal base URL, such as http://asya-gateway-internal:8081), or unset"
        )
    config = SidecarConfig(
        actor=actor,
        namespace=namespace,
        transport=transport,
        queue=queue(env.QUEUE, actor) if actor_ok else "",
        sink_queue=queue(env.SINK_QUEUE, names.SINK),
        sump_queue=queue(env.SUMP_QUEUE, names.SUMP),
        join_queue=queue(env.JOIN_QUEUE, names.JOIN),
        pause_queue=queue(env.PAUSE_QUEUE, names.PAUSE),
        queue_autocreate=flag(env.QUEUE_AUTOCREATE),
        socket_dir=text(env.SOCKET_DIR, "/var/run/asya"),
        concurrency=integer(env.CONCURRENCY, 1, minimum=1, maximum=10_000),
        # spec.resiliency.actorTimeout wins over the plain variable when both are given.
        actor_timeout=policies.actor_timeout or actor_timeout,
        runtime_ready_timeout=number(env.RUNTIME_READY_TIMEOUT, 600.0),
        shutdown_timeout=number(env.SHUTDOWN_TIMEOUT, 25.0),
        crew_retry_delay=number(env.CREW_RETRY_DELAY, 10.0),
        metrics_host=text(env.METRICS_HOST, "0.0.0.0"),
        metrics_port=integer(env.METRICS_PORT, 8080, minimum=0, maximum=65535),
        log_level=choice(
            env.LOG_LEVEL, "info", ("debug", "info", "warning", "error", "critical")
        ).upper(),
        log_format=choice(env.LOG_FORMAT, "json", ("json", "text")),
        events_url=text(env.EVENTS_URL, "") or None,
        resiliency=policies,
        gateway_url=gateway_url,
        # Not below 10 ms: a smaller value would only burn the sidecar's CPU on requests.
        report_interval=number(env.GATEWAY_REPORT_INTERVAL, 1.0, minimum=0.01),
    )
    if problems:
        raise ConfigError("invalid sidecar configuration:\n  - " + "\n  - ".join(problems))
    return config
