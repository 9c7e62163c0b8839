"""One pooled HTTP client per caller, and the mapping of HTTP failures to typed errors.

A caller's class is built once per runtime process and its async `handle` runs on the
runtime's event loop, so the `httpx.AsyncClient` it owns is one connection pool per process,
shared by every concurrent call (ASYA_RUNTIME_CONCURRENCY of them).

Secrets (an API key, a password in the URL) are sent as headers and never put into a
message: errors name the URL without its user part and scrub any secret the server echoes.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import httpx

from asya_callers.errors import (
    BadRequest,
    CallerError,
    RateLimited,
    ServerError,
    Timeout,
    Unreachable,
)
from asya_callers.settings import redact_url

__all__ = ["ModelClient", "retry_after_seconds", "server_message"]

# The most of a server's error body that goes into a message.
MAX_DETAIL = 500


class ModelClient:
    """POSTs JSON to one server; answers come back as JSON or as a typed CallerError."""

    def __init__(
        self,
        *,
        timeout: float,
        headers: Mapping[str, str] | None = None,
        secrets: Iterable[str] = (),
        max_connections: int = 100,
    ) -> None:
        self.timeout = timeout
        self.headers = dict(headers or {})
        self.secrets = [s for s in secrets if s]
        self.max_connections = max_connections
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        # Built on first use, inside the runtime's event loop that every later call shares.
        if self._client is None:
            self._client = httpx.AsyncClient(
                headers=self.headers,
                timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
                limits=httpx.Limits(
                    max_connections=self.max_connections,
                    max_keepalive_connections=self.max_connections,
                ),
            )
        return self._client

    async def post_json(self, url: str, body: Any, *, json_only: bool = True) -> Any:
        """POST `body` and return the decoded JSON answer (or its text, unless `json_only`)."""
        with self._failures(url):
            response = await self.client.post(url, json=body)
            await response.aread()
        self.check(response, url)
        if not json_only and not _is_json(response):
            return response.text
        return self.decode(response, url)

    async def stream_events(self, url: str, body: Any) -> AsyncIterator[Any]:
        """POST `body` and yield the JSON `data:` of each server-sent event, until [DONE]."""
        with self._failures(url):
            async with self.client.stream("POST", url, json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    self.check(response, url)
                async for line in response.aiter_lines():
                    data = _sse_data(line)
                    if data is None:
                        continue
                    if data == "[DONE]":
                        return
                    try:
                        yield json.loads(data)
                    except ValueError:
                        raise ServerError(
                            f"POST {redact_url(url)}: a streamed event is not JSON: "
                            f"{self.scrub(data[:MAX_DETAIL])!r}"
                        ) from None

    def check(self, response: httpx.Response, url: str) -> None:
        status = response.status_code
        if status < 400:
            return
        where = f"{response.request.method} {redact_url(url)}"
        detail = self.scrub(server_message(response))
        hint = retry_after_seconds(response.headers.get("retry-after"), now=time.time())
        if status == 429:
            raise RateLimited(
                f"{where}: rate limited (HTTP 429){_later(hint)}: {detail}",
                status=status,
                retry_after=hint,
            )
        if status >= 500:
            raise ServerError(
                f"{where}: server error (HTTP {status}){_later(hint)}: {detail}",
                status=status,
                retry_after=hint,
            )
        raise BadRequest(f"{where}: refused (HTTP {status}): {detail}", status=status)

    def decode(self, response: httpx.Response, url: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise ServerError(
                f"POST {redact_url(url)}: HTTP {response.status_code} with a body that is not "
                f"JSON: {self.scrub(response.text[:MAX_DETAIL])!r}",
                status=response.status_code,
            ) from None

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def _failures(self, url: str) -> _TransportFailures:
        return _TransportFailures(redact_url(url), self)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


class _TransportFailures:
    """Turns httpx's network exceptions into Timeout or Unreachable, scrubbed of secrets."""

    def __init__(self, where: str, owner: ModelClient) -> None:
        self.where, self.owner = where, owner

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _: Any) -> None:
        if exc is None or isinstance(exc, CallerError) or not isinstance(exc, httpx.HTTPError):
            return
        text = self.owner.scrub(str(exc) or type(exc).__name__)
        if isinstance(exc, httpx.ConnectTimeout):
            raise Unreachable(f"POST {self.where}: could not connect in time: {text}") from None
        if isinstance(exc, httpx.TimeoutException):
            raise Timeout(
                f"POST {self.where}: no answer within {self.owner.timeout:g}s "
                f"({type(exc).__name__})"
            ) from None
        if isinstance(exc, httpx.TransportError):
            raise Unreachable(f"POST {self.where}: {type(exc).__name__}: {text}") from None
        raise ServerError(f"POST {self.where}: {type(exc).__name__}: {text}") from None


def _is_json(response: httpx.Response) -> bool:
    kind = str(response.headers.get("content-type", "")).split(";", 1)[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


def _sse_data(line: str) -> str | None:
    if not line.startswith("data:"):
        return None  # comments (": ping"), event names, ids and blank separators
    return line[5:].strip()


def _later(hint: float | None) -> str:
    return "" if hint is None else f", retry after {hint:g}s"


def server_message(response: httpx.Response) -> str:
    """The server's own explanation: OpenAI's error.message, KServe's error, or the text."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:MAX_DETAIL].strip() or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])[:MAX_DETAIL]
        for key in ("error", "detail", "message"):
            if isinstance(body.get(key), str):
                return str(body[key])[:MAX_DETAIL]
    return json.dumps(body)[:MAX_DETAIL]


def retry_after_seconds(value: str | None, *, now: float) -> float | None:
    """Retry-After as seconds from `now`: a number of seconds or an HTTP date (RFC 9110)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - now
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)
