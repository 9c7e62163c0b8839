"""x-pause: hands a task to a person and lets go of it until it is resumed.

Runs inside the standard runtime (ASYA_HANDLER=asya_crew.pause.Pause.handle) next to an
ordinary sidecar. For each envelope it reads what the person is asked for (header
x-asya-pause: a prompt and the fields to fill in) and how long the pause may last (header
x-asya-pause-timeout, else ASYA_PAUSE_TIMEOUT, default 7 days), then hands the envelope to
the gateway, which keeps it in the task's row (`POST /internal/v1/pauses`), and parks it: the
sidecar acks, and no worker, queue slot or lease is held while the task waits.

The gateway is the pause's store on purpose: the resume (`POST /v1/tasks/<id>/resume`,
`asya resume`) lands there, and deciding in one row that exactly one resume continues the
task needs the envelope and the status side by side.

The hand-over is synchronous: the envelope is acked only once the gateway answered that it
keeps it. A gateway that cannot be reached raises GatewayUnreachable, and the actor's
resiliency policy retries (the crew chart and `asya dev` give x-pause retries for it).
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import httpx

from asya_crew import config, exposition
from asya_shared import env as variables
from asya_shared import pauses, records, times

log = logging.getLogger("asya.crew.pause")

PATH = "/internal/v1/pauses"
DEFAULT_TIMEOUT_S = 7 * 86400.0
MAX_TIMEOUT_S = 365 * 86400.0
POST_TIMEOUT_S = 10.0


class GatewayUnreachable(ConnectionError):
    """The gateway did not take the paused envelope; the sidecar retries per policy."""


class NotATask(LookupError):
    """The envelope is no task of the gateway's: nobody could ever resume it."""


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Pause:
    """Built once by the runtime, with no arguments; settings come from the environment."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        url = env.get(variables.GATEWAY_URL, "").strip()
        if not url.startswith(("http://", "https://")):
            raise config.ConfigError(
                f"x-pause hands paused tasks to the gateway: set {variables.GATEWAY_URL} to its "
                f"internal URL (http://...), not {url!r}"
            )
        raw_timeout = env.get(variables.PAUSE_TIMEOUT, "").strip()
        try:
            # The same forms as the header takes ("7d" included).
            self.default_timeout = pauses.pause_timeout(raw_timeout or None, DEFAULT_TIMEOUT_S)
        except pauses.PauseSpecError as exc:
            raise config.ConfigError(
                f"{variables.PAUSE_TIMEOUT}={raw_timeout!r} is not a pause limit: {exc}"
            ) from None
        if self.default_timeout > MAX_TIMEOUT_S:
            raise config.ConfigError(
                f"{variables.PAUSE_TIMEOUT}={raw_timeout!r} is longer than a year; a pause "
                "that long is a task nobody will resume"
            )
        self.url = url.rstrip("/") + PATH
        self._client: httpx.AsyncClient | None = None
        if environ is None:  # built by the runtime in a crew pod, not by a test
            exposition.serve_from_handler(env)

    async def handle(self, payload: Any) -> AsyncGenerator[Any, Any]:
        fields: dict[str, Any] = {}
        for name in records.FIELDS:
            fields[name] = yield "GET", f".{name}"
        headers = fields["headers"] if isinstance(fields["headers"], dict) else {}
        # A bad spec raises PauseSpecError naming the header path: the task fails with it.
        spec = pauses.parse_spec(headers.get(pauses.PAUSE_HEADER))
        timeout = pauses.pause_timeout(
            headers.get(pauses.PAUSE_TIMEOUT_HEADER), self.default_timeout
        )
        paused_at = now_utc()
        body = {
            "envelope": {**fields, "payload": payload},
            "pause": spec.to_json(),
            "paused_at": times.rfc3339(paused_at),
            "expires_at": times.rfc3339(paused_at + datetime.timedelta(seconds=timeout)),
        }
        answer = await self._post(body)
        task_id = fields["id"]
        if answer.status_code == 404:
            raise NotATask(
                f"task {task_id!r} is not known to the gateway at {self.url}: only a task "
                "submitted through the gateway (asya submit, POST /v1/tasks) can pause, since "
                "only there can it be resumed; a part of a fan-out cannot pause either"
            )
        if answer.status_code == 409:
            # Canceled (or otherwise ended) while on its way here: nothing left to wait for.
            log.info("task %s ended before it paused; dropped", task_id)
            yield "PARK", f"task {task_id} had already ended"
            return
        if answer.status_code != 200:
            raise GatewayUnreachable(
                f"the gateway answered {answer.status_code} to the pause of task {task_id!r}: "
                f"{answer.text[:500]}"
            )
        log.info(
            "task %s paused until %s", task_id, body["expires_at"], extra={"envelope_id": task_id}
        )
        yield "PARK", f"paused until {body['expires_at']}"

    async def _post(self, body: dict[str, Any]) -> httpx.Response:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=POST_TIMEOUT_S)
        try:
            return await self._client.post(self.url, json=body)
        except httpx.HTTPError as exc:
            raise GatewayUnreachable(
                f"cannot hand task {body['envelope'].get('id')!r} to the gateway at {self.url}: "
                f"{exc!r}; it is retried as x-pause's resiliency policy says"
            ) from exc
