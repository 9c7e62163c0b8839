"""Running a gateway: its settings, both apps on their ports, retention, graceful stop.

`GatewaySettings.from_env` reads the ASYA_GATEWAY_* variables (the CLI lays its flags over
them); `GatewayServer` opens the store and the transport, serves the public app on `port`
and the internal app on `internal_port` (two uvicorn servers in one process, one event
loop), deletes finished tasks past `retention` once at start and then hourly, and stops
gracefully: open event streams end, requests in flight finish, then the store and the
transport close. `serve` is the whole life of `asya gateway`, stopped by SIGTERM or SIGINT.

The ports are bound before anything is served, so port 0 works: `server.port` and
`server.internal_port` tell which ones were picked.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import logging
import math
import os
import signal
import socket
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import uvicorn
from starlette.applications import Starlette

import asya_transports as transports
from asya_gateway import outbox, submit
from asya_gateway.app import internal_app, public_app
from asya_gateway.auth import ApiKeys
from asya_gateway.flows import load_flows
from asya_gateway.service import Gateway
from asya_gateway.sse import KEEPALIVE_S
from asya_gateway.store import open_store
from asya_gateway.store.base import Store, StoreError
from asya_gateway.store.urls import redact, sqlite_url
from asya_gateway.streaming import SEND_TIMEOUT_S
from asya_shared import env, names, stores
from asya_shared.durations import parse_days_or_duration

__all__ = [
    "DEFAULT_RETENTION_S",
    "GatewayServer",
    "GatewaySettings",
    "SettingsError",
    "delete_expired",
    "is_loopback",
    "parse_retention",
    "retention_loop",
    "serve",
]

log = logging.getLogger("asya.gateway")

DEFAULT_RETENTION_S = 7 * 24 * 3600.0
RETENTION_INTERVAL_S = 3600.0
# How long requests in flight may still run after a stop was asked for.
GRACEFUL_STOP_S = 10
_LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


class SettingsError(ValueError):
    """The gateway cannot start with these settings; the message lists every problem."""


@dataclass(frozen=True)
class GatewaySettings:
    host: str = "127.0.0.1"
    port: int = 8080
    internal_port: int = 8081
    store_url: str = sqlite_url(Path(".asya") / "gateway.db")
    flows_file: str | None = None
    api_keys_file: str | None = None
    retention: float = DEFAULT_RETENTION_S  # seconds a finished task is kept
    insecure: bool = False  # serve a non-loopback host without API keys
    namespace: str = "default"
    transport: str = "local"
    sump_url: str | None = None  # x-sump's store (ASYA_SUMP_STORE): /v1/sump, the sump page

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> GatewaySettings:
        """Settings from ASYA_GATEWAY_* (and ASYA_NAMESPACE, ASYA_TRANSPORT, ASYA_STATE_DIR);
        an unset or empty variable keeps the default. SettingsError lists every problem."""
        problems: list[str] = []

        def text(name: str) -> str | None:
            value = environ.get(name, "").strip()
            return value or None

        def port(name: str, default: int) -> int:
            raw = text(name)
            if raw is None:
                return default
            if not raw.isdigit() or int(raw) > 65535:
                problems.append(f"{name}={raw!r} is not a port (0-65535; 0 picks a free one)")
                return default
            return int(raw)

        retention = DEFAULT_RETENTION_S
        raw_retention = text(env.GATEWAY_RETENTION)
        if raw_retention is not None:
            try:
                retention = parse_retention(raw_retention)
            except ValueError as exc:
                problems.append(f"{env.GATEWAY_RETENTION}: {exc}")
        insecure = False
        raw_insecure = environ.get(env.GATEWAY_INSECURE, "").strip().lower()
        if raw_insecure in _TRUE:
            insecure = True
        elif raw_insecure not in _FALSE:
            problems.append(f"{env.GATEWAY_INSECURE}={raw_insecure!r} is not true or false")
        state_dir = text(env.STATE_DIR) or ".asya"
        settings = cls(
            host=text(env.GATEWAY_HOST) or cls.host,
            port=port(env.GATEWAY_PORT, cls.port),
            internal_port=port(env.GATEWAY_INTERNAL_PORT, cls.internal_port),
            store_url=text(env.GATEWAY_STORE) or sqlite_url(Path(state_dir) / "gateway.db"),
            flows_file=text(env.GATEWAY_FLOWS),
            api_keys_file=text(env.GATEWAY_API_KEYS_FILE),
            retention=retention,
            insecure=insecure,
            namespace=text(env.NAMESPACE) or cls.namespace,
            transport=text(env.TRANSPORT) or cls.transport,
            sump_url=text(env.SUMP_STORE),
        )
        problems.extend(settings.problems())
        if problems:
            raise SettingsError("the gateway cannot start:\n  " + "\n  ".join(problems))
        return settings

    def problems(self) -> list[str]:
        """What is wrong with these settings (empty when they can be used)."""
        found = []
        if self.transport not in transports.KINDS:
            found.append(
                f"transport {self.transport!r} is unknown; choose one of "
                f"{', '.join(transports.KINDS)}"
            )
        try:
            names.queue_name(self.namespace, names.SINK)
        except names.InvalidName as exc:
            found.append(str(exc))
        if self.sump_url is not None:
            try:
                stores.check_url(self.sump_url)
            except ValueError as exc:
                found.append(f"{env.SUMP_STORE}: {exc}")
        if self.port == self.internal_port and self.port != 0:
            found.append(f"the public and the internal port are both {self.port}; use two ports")
        if not self.api_keys_file and not self.insecure and not is_loopback(self.host):
            found.append(
                f"host {self.host!r} is reachable from other machines and no API keys are "
                f"configured: give a keys file ({env.GATEWAY_API_KEYS_FILE}), serve on "
                "127.0.0.1, or pass --insecure to run without auth anyway"
            )
        return found

    def check(self) -> None:
        problems = self.problems()
        if problems:
            raise SettingsError("the gateway cannot start:\n  " + "\n  ".join(problems))


def parse_retention(text: str) -> float:
    """Seconds in a retention: a duration (`36h`, `90m`, seconds) or whole days (`7d`);
    more than 0. ValueError naming the input otherwise."""
    try:
        seconds = parse_days_or_duration(text)
    except ValueError:
        raise ValueError(
            f"retention {text!r} is not understood; write days (7d), hours (36h), "
            "minutes (90m) or seconds"
        ) from None
    if not 0 < seconds < math.inf:
        raise ValueError(f"retention {text!r} must be more than 0")
    return seconds


def is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# ------------------------------------------------------------------------------ retention


async def delete_expired(store: Store, retention: float, now: datetime.datetime) -> int:
    """Delete the tasks that finished more than `retention` seconds before `now`."""
    cutoff = submit.timestamp(now - datetime.timedelta(seconds=retention))
    return await store.delete_finished(cutoff)


async def retention_loop(
    store: Store,
    retention: float,
    *,
    clock: Callable[[], datetime.datetime],
    interval: float = RETENTION_INTERVAL_S,
) -> None:
    """Delete expired tasks now and every `interval` seconds, until cancelled; a store that
    fails is retried at the next round (a late deletion harms nobody)."""
    while True:
        try:
            deleted = await delete_expired(store, retention, clock())
        except StoreError as exc:
            log.warning("deleting expired tasks failed (trying again in %.0fs): %s", interval, exc)
        else:
            if deleted:
                log.info("deleted %d tasks finished more than %.0fs ago", deleted, retention)
        await asyncio.sleep(interval)


# ---------------------------------------------------------------------------------- server


class _Uvicorn(uvicorn.Server):
    """A uvicorn server that leaves signals alone: two run in one process, and whoever owns
    the process (serve(), `asya dev`) decides what a signal means."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _listen(host: str, port: int, what: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only when the
    # listening socket says TCP. Without it a kept-alive client's next response waits ~40 ms
    # for a delayed ACK (Nagle), on both ports.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise OSError(
            exc.errno,
            f"cannot listen on {host}:{port} for the {what} ({exc.strerror}); free the port or "
            "choose another",
        ) from exc
    sock.setblocking(False)
    return sock


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class GatewayServer:
    """One gateway process's servers. `await start()`, then `stop()` and `await wait()`; or
    `async with GatewayServer(...) as server:` which does all three."""

    def __init__(
        self,
        settings: GatewaySettings,
        environ: Mapping[str, str] | None = None,
        *,
        keepalive_s: float = KEEPALIVE_S,
        send_timeout_s: float = SEND_TIMEOUT_S,
        clock: Callable[[], datetime.datetime] = _utc_now,
        republish_wait_s: float = outbox.WAIT_S,
        republish_every_s: float = outbox.SWEEP_EVERY_S,
    ) -> None:
        self.settings = settings
        self._environ = dict(os.environ if environ is None else environ)
        self._keepalive_s = keepalive_s
        self._send_timeout_s = send_timeout_s
        self._clock = clock
        self._republish = (republish_wait_s, republish_every_s)
        self.port = settings.port
        self.internal_port = settings.internal_port
        self._gateway: Gateway | None = None
        self._servers: list[_Uvicorn] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._store: Store | None = None
        self._transport: transports.Broker | None = None

    @property
    def gateway(self) -> Gateway:
        if self._gateway is None:
            raise RuntimeError("the gateway has not started")
        return self._gateway

    @property
    def url(self) -> str:
        return f"http://{_url_host(self.settings.host)}:{self.port}"

    @property
    def internal_url(self) -> str:
        return f"http://{_url_host(self.settings.host)}:{self.internal_port}"

    async def start(self) -> None:
        """Load flows and keys, open the store and the transport, bind and serve both ports.
        Raises SettingsError, FlowsError, KeysError, StoreError or OSError (a port in use)
        before anything is served."""
        settings = self.settings
        settings.check()
        flows = load_flows(settings.flows_file) if settings.flows_file else {}
        keys = ApiKeys.load(settings.api_keys_file) if settings.api_keys_file else None
        sockets: list[socket.socket] = []
        try:
            sockets.append(_listen(settings.host, settings.port, "public API"))
            sockets.append(_listen(settings.host, settings.internal_port, "internal port"))
            self._store = open_store(settings.store_url)
            await self._store.open()
            self._transport = transports.create(settings.transport, self._environ)
            try:
                await self._transport.__aenter__()
            except transports.TransportUnavailable as exc:
                # Serve anyway: /readyz says the broker is missing, submits answer 503, and
                # the transport connects on its own once the broker is back.
                log.warning("the broker is not reachable yet: %s", exc)
        except BaseException:
            for sock in sockets:
                sock.close()
            await self._close_services()
            raise
        self.port = sockets[0].getsockname()[1]
        self.internal_port = sockets[1].getsockname()[1]
        # Two uvicorn servers share uvicorn's logger: each would say "Started server process"
        # and "Shutting down" for the same process. Our own lines say that once; uvicorn
        # keeps its warnings and errors.
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
        gateway = Gateway(
            self._store,
            self._transport,
            namespace=settings.namespace,
            flows=flows,
            keys=keys,
            keepalive_s=self._keepalive_s,
            send_timeout_s=self._send_timeout_s,
            clock=self._clock,
        )
        self._gateway = gateway
        public = public_app(gateway, sump_store=settings.sump_url)
        for app, sock in ((public, sockets[0]), (internal_app(gateway), sockets[1])):
            server = _Uvicorn(_config(app))
            self._servers.append(server)
            self._tasks.append(asyncio.create_task(server.serve(sockets=[sock])))
        self._tasks.append(
            asyncio.create_task(
                retention_loop(gateway.store, settings.retention, clock=self._clock),
                name="gateway retention",
            )
        )
        wait, every = self._republish
        self._tasks.append(
            asyncio.create_task(
                outbox.republish_loop(
                    gateway.store,
                    gateway.transport,
                    namespace=settings.namespace,
                    clock=self._clock,
                    wait=wait,
                    interval=every,
                ),
                name="gateway outbox",
            )
        )
        log.info(
            "gateway serving %s (internal %s), store %s, transport %s",
            self.url,
            self.internal_url,
            redact(settings.store_url),
            settings.transport,
        )

    def stop(self) -> None:
        """Ask both servers to stop (safe from a signal handler; idempotent)."""
        if self._gateway is not None:
            self._gateway.stopping.set()
        for server in self._servers:
            server.should_exit = True

    async def wait(self) -> None:
        """Until both servers have stopped; then close the store and the transport. A
        server that ends on its own (it failed) stops the other one too."""
        servers = self._tasks[:2]
        try:
            if servers:
                done, _ = await asyncio.wait(servers, return_when=asyncio.FIRST_COMPLETED)
                self.stop()
                await asyncio.gather(*servers, return_exceptions=True)
                for task in done:
                    error = None if task.cancelled() else task.exception()
                    if error is not None:
                        raise error
        finally:
            for task in self._tasks[2:]:
                task.cancel()
            await asyncio.gather(*self._tasks[2:], return_exceptions=True)
            await self._close_services()
            log.info("gateway stopped")

    async def _close_services(self) -> None:
        transport, self._transport = self._transport, None
        store, self._store = self._store, None
        if transport is not None:
            with contextlib.suppress(transports.TransportError):
                await transport.close()
        if store is not None:
            await store.close()

    async def __aenter__(self) -> GatewayServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        await self.wait()


def _config(app: Starlette) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        # The store and the transport are opened by GatewayServer, once; the lifespan runs
        # what the front doors need while serving (doors.py), and is empty elsewhere.
        lifespan="on",
        log_config=None,  # logging belongs to the process, not to uvicorn
        access_log=False,  # the request histogram says more, and costs no log line
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_STOP_S,
    )


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):  # the wildcard: reach it through loopback
        return "127.0.0.1"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


async def serve(settings: GatewaySettings, environ: Mapping[str, str] | None = None) -> None:
    """Run a gateway until SIGTERM or SIGINT, then stop gracefully."""
    server = GatewayServer(settings, environ)
    await server.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.stop)
    try:
        await server.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
