"""Talking to a gateway's public API over HTTP: which gateway, and what it answered.

The CLI's task commands (asya_cli/tasks.py) are thin over this. Every failure becomes one
of two exceptions whose message is the one line the command prints: `Unreachable` (no
answer at all: nothing listens there, or it timed out) and `Refused` (an HTTP error answer,
with the gateway's own `{"error": {"code", "message"}}`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx

from asya_cli import dev_plan, sse
from asya_shared import env

__all__ = [
    "TERMINAL",
    "Client",
    "NoGateway",
    "Refused",
    "Target",
    "Unreachable",
    "resolve",
]

# The statuses a task ends in (asya_gateway.tasks.TERMINAL, as the wire spells them).
TERMINAL = frozenset({"succeeded", "failed", "canceled"})
REQUEST_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 5.0
# The gateway sends a keep-alive comment at least every 15 s: a stream silent for three
# times that is dead, not idle.
STREAM_READ_TIMEOUT_S = 45.0
HINT = "start one with `asya dev` or `asya gateway`, or pass --gateway URL"


class NoGateway(Exception):
    """No gateway URL was given and none could be found."""


class Unreachable(Exception):
    """The gateway did not answer (refused connection, DNS, timeout)."""


class Refused(Exception):
    """The gateway answered with an HTTP error."""

    def __init__(self, status: int, code: str, message: str, target: Target) -> None:
        super().__init__(f"{message} ({code}, HTTP {status} from {target.url})")
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Target:
    url: str  # the public base URL, without a trailing slash
    source: str  # where it came from, to say in error messages


def resolve(flag: str | None, environ: Mapping[str, str], state_dir: Path) -> Target:
    """The gateway to talk to: --gateway, else $ASYA_GATEWAY_URL, else the URL `asya dev`
    wrote into its state directory."""
    if flag:
        return Target(flag.rstrip("/"), "--gateway")
    if environ.get(env.GATEWAY_URL):
        return Target(environ[env.GATEWAY_URL].rstrip("/"), f"${env.GATEWAY_URL}")
    written = dev_plan.gateway_url_file(state_dir)
    try:
        url = written.read_text().strip()
    except FileNotFoundError:
        url = ""
    except OSError as exc:
        raise NoGateway(f"cannot read {written}: {exc.strerror}") from None
    if not url:
        raise NoGateway(
            f"no gateway given: pass --gateway URL or set {env.GATEWAY_URL}, or start "
            f"`asya dev` (it writes its gateway's URL to {written})"
        )
    return Target(url.rstrip("/"), str(written))


class Client:
    """An open connection pool to one gateway; use as `async with Client(...) as client`."""

    def __init__(self, target: Target, *, api_key: str | None) -> None:
        self.target = target
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.AsyncClient(
            base_url=target.url,
            headers=headers,
            timeout=httpx.Timeout(REQUEST_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._http.aclose()

    async def submit(self, body: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """The task and whether it is new (201) or an earlier one with the same id (200)."""
        response = await self._request("POST", "/v1/tasks", json=body)
        return response.json(), response.status_code == 201

    async def get(self, task_id: str) -> dict[str, Any]:
        response = await self._request("GET", _task_path(task_id))
        task: dict[str, Any] = response.json()
        return task

    async def list_tasks(
        self, *, status: str | None, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        params: dict[str, str | int] = {"limit": limit}
        if status:
            params["status"] = status
        if cursor:
            params["cursor"] = cursor
        response = await self._request("GET", "/v1/tasks", params=params)
        page: dict[str, Any] = response.json()
        return page

    async def cancel(self, task_id: str) -> dict[str, Any]:
        response = await self._request("DELETE", _task_path(task_id))
        task: dict[str, Any] = response.json()
        return task

    async def resume(self, task_id: str, input: Mapping[str, Any]) -> dict[str, Any]:
        """Resume a paused task with a person's input; the task as it runs again."""
        response = await self._request(
            "POST", f"{_task_path(task_id)}/resume", json={"input": dict(input)}
        )
        task: dict[str, Any] = response.json()
        return task

    async def events(
        self, task_id: str, *, last_event_id: str | None = None
    ) -> AsyncGenerator[sse.Event, None]:
        """The task's event stream until the gateway ends it (after the terminal status).

        Raises Unreachable or Refused; a stream cut short simply ends, and the caller, who
        knows whether it saw the end, decides to reconnect (with the last event's id)."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        timeout = httpx.Timeout(REQUEST_TIMEOUT_S, read=STREAM_READ_TIMEOUT_S)
        parser = sse.Parser()
        try:
            async with self._http.stream(
                "GET", f"{_task_path(task_id)}/events", headers=headers, timeout=timeout
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise self._refused(response)
                async for line in response.aiter_lines():
                    event = parser.feed(line)
                    if event is not None:
                        yield event
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise self._unreachable(exc) from None
        except (httpx.ReadError, httpx.RemoteProtocolError, httpx.ReadTimeout):
            return  # cut short: the caller reconnects or falls back

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        if response.status_code >= 400:
            raise self._refused(response)
        return response

    def _unreachable(self, exc: httpx.TransportError) -> Unreachable:
        if isinstance(exc, httpx.ConnectError):
            what = f"nothing accepts connections there ({exc})"
        elif isinstance(exc, httpx.TimeoutException):
            what = f"no answer in time ({type(exc).__name__})"
        else:
            what = str(exc) or type(exc).__name__
        return Unreachable(
            f"cannot reach the gateway at {self.target.url} (from {self.target.source}): "
            f"{what}; {HINT}"
        )

    def _refused(self, response: httpx.Response) -> Refused:
        code, message = _error_of(response)
        if response.status_code == 401:
            message += f"; pass --api-key or set {env.API_KEY}"
        return Refused(response.status_code, code, message, self.target)


def _task_path(task_id: str) -> str:
    return f"/v1/tasks/{quote(task_id, safe='')}"


def _error_of(response: httpx.Response) -> tuple[str, str]:
    """The gateway's `{"error": {"code", "message"}}`, or what a proxy in between said."""
    try:
        error = json.loads(response.content)["error"]
        return str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        text = response.text.strip().splitlines()
        return response.reason_phrase or "error", text[0][:200] if text else "no details"
