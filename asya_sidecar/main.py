"""`asya sidecar`: read the config, wait for the runtime, consume until SIGTERM, exit 0.

Exit codes: 0 after a clean stop; 2 for invalid configuration; 1 when the runtime never
became ready within ASYA_RUNTIME_READY_TIMEOUT (Kubernetes then restarts the pod).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping

import asya_transports as transports
from asya_shared import env as variables
from asya_sidecar import config as sidecar_config
from asya_sidecar import logs, reporting
from asya_sidecar.admin_server import AdminServer
from asya_sidecar.config import SidecarConfig
from asya_sidecar.consumer import Consumer
from asya_sidecar.events import EventForwarder
from asya_sidecar.metrics import SidecarMetrics
from asya_sidecar.runtime_client import RuntimeClient
from asya_sidecar.waiting import first_of
from asya_transports import Broker, TransportUnavailable

log = logging.getLogger("asya.sidecar")

EXIT_OK, EXIT_RUNTIME_NEVER_READY, EXIT_BAD_CONFIG = 0, 1, 2
RECONNECT_MAX_S = 30.0


def main(environ: Mapping[str, str] | None = None) -> int:
    env = dict(os.environ if environ is None else environ)
    try:
        config = sidecar_config.load(env)
    except sidecar_config.ConfigError as exc:
        # The format asked for, if it can be read: `asya dev` prints text, and a JSON line
        # in the middle of it is the one line nobody reads.
        asked = env.get("ASYA_LOG_FORMAT", "").strip().lower()
        fmt = asked if asked in ("json", "text") else "json"
        logs.configure(actor=env.get("ASYA_ACTOR", "?"), level="INFO", fmt=fmt)
        log.error("%s", exc)
        return EXIT_BAD_CONFIG
    logs.configure(actor=config.actor, level=config.log_level, fmt=config.log_format)
    try:
        transport = transports.create(config.transport, env)
    except (ValueError, ImportError) as exc:
        log.error("cannot use transport %r: %s", config.transport, exc)
        return EXIT_BAD_CONFIG
    with asyncio.Runner(loop_factory=event_loop_factory(env)) as runner:
        return runner.run(serve(config, transport))


def event_loop_factory(
    environ: Mapping[str, str],
) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (the `fast` extra), else asyncio's own.

    The sidecar spends most of its time in the event loop and socket writes; uvloop does both
    in C. ASYA_EVENT_LOOP=asyncio keeps the standard loop (for comparison or debugging).
    """
    if environ.get(variables.EVENT_LOOP, "").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def serve(config: SidecarConfig, transport: Broker) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    metrics = SidecarMetrics(config.actor)
    runtime = RuntimeClient(config.socket_path, pool_size=config.concurrency)
    events = EventForwarder(url=config.events_url, actor=config.actor, metrics=metrics)
    reporter = reporting.from_config(config, metrics)
    reporter_task = None
    if reporter is not None:
        log.info("reporting envelope status to %s every %gs", reporter.url, reporter.interval)
        reporter_task = asyncio.create_task(reporter.run())
    consumer = Consumer(
        config=config,
        transport=transport,
        admin=transport if config.queue_autocreate else None,
        runtime=runtime,
        metrics=metrics,
        events=events,
        reporter=reporter,
    )
    admin = None
    if config.metrics_port:
        admin = AdminServer(
            host=config.metrics_host,
            port=config.metrics_port,
            registry=metrics.registry,
            health=consumer.health,
        )
        await admin.start()
    try:
        if not await _connect(transport, stop):
            return EXIT_OK
        try:
            if config.queue_autocreate:
                for queue in (config.queue, config.sink_queue, config.sump_queue):
                    await transport.ensure_queue(queue)
            if not await _wait_for_runtime(config, runtime, stop):
                return EXIT_OK if stop.is_set() else EXIT_RUNTIME_NEVER_READY
            consumer.runtime_ready()
            log.info(
                "consuming %s (%s) with concurrency %d",
                config.queue, config.transport, config.concurrency,
                extra={"queue": config.queue},
            )  # fmt: skip
            await consumer.run(stop)
        finally:
            await transport.close()
    finally:
        if admin is not None:
            await admin.stop()
        if reporter is not None and reporter_task is not None:
            reporter_task.cancel()
            await asyncio.gather(reporter_task, return_exceptions=True)
            await reporter.close()  # the last reports, those of the envelopes just drained
        await events.close()
        await runtime.close()
    log.info("stopped")
    return EXIT_OK


async def _connect(transport: Broker, stop: asyncio.Event) -> bool:
    """Open the transport, retrying while the broker is down; False if stopped first."""
    delay = 0.5
    while not stop.is_set():
        try:
            await transport.__aenter__()
            return True
        except TransportUnavailable as exc:
            log.warning("broker unavailable (%s); retrying in %.1fs", exc, delay)
            await first_of(stop, timeout=delay)
            delay = min(delay * 2, RECONNECT_MAX_S)
    return False


async def _wait_for_runtime(
    config: SidecarConfig, runtime: RuntimeClient, stop: asyncio.Event
) -> bool:
    deadline = time.monotonic() + config.runtime_ready_timeout
    next_note = time.monotonic() + 10
    while not stop.is_set():
        # A stat of a local file: too quick to be worth a thread.
        if os.path.exists(config.ready_path) and await runtime.healthy():  # noqa: ASYNC240
            return True
        now = time.monotonic()
        if now > deadline:
            log.error(
                "the runtime did not become ready within %gs (no %s or no answer on %s)",
                config.runtime_ready_timeout, config.ready_path, config.socket_path,
            )  # fmt: skip
            return False
        if now > next_note:
            log.info("waiting for the runtime to write %s", config.ready_path)
            next_note = now + 10
        await first_of(stop, timeout=0.1)
    return False


if __name__ == "__main__":
    sys.exit(main())
