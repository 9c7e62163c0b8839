"""The sidecar's own HTTP port (default :8080): `GET /metrics` and `GET /healthz`.

Deliberately tiny: it answers GET requests for two paths and closes each connection. It is
scraped every few seconds, not per envelope, so simplicity beats throughput here.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger("asya.sidecar.admin")

# (healthy, reason) — the reason is shown in the /healthz body.
HealthCheck = Callable[[], tuple[bool, str]]


class AdminServer:
    def __init__(
        self, *, host: str, port: int, registry: CollectorRegistry, health: HealthCheck
    ) -> None:
        self.host, self.port = host, port
        self._registry = registry
        self._health = health
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]  # the real one when 0 was asked
        log.info("metrics and health on http://%s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            method, _, rest = head.partition(b" ")
            path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
            status, content_type, body = self._answer(method, path)
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass  # a scraper that went away or sent garbage; nothing to answer
        finally:
            writer.close()

    def _answer(self, method: bytes, path: bytes) -> tuple[str, str, bytes]:
        if method not in (b"GET", b"HEAD"):
            return "405 Method Not Allowed", "text/plain", b"use GET\n"
        if path == b"/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, generate_latest(self._registry)
        if path in (b"/healthz", b"/readyz", b"/livez"):
            healthy, reason = self._health()
            body = json.dumps({"status": "ok" if healthy else "unhealthy", "reason": reason})
            status = "200 OK" if healthy else "503 Service Unavailable"
            return status, "application/json", body.encode()
        return "404 Not Found", "text/plain", b"try /metrics or /healthz\n"
