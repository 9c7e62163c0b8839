"""The sump over HTTP: what x-sump kept, and a redrive of one record, as `asya sump` and
`asya redrive` do it (the same decisions, asya_shared.redrive; the same I/O, asya_sump).

    GET  /v1/sump?actor=&reason=&since=   {"records": [summary, ...]}, newest failure first;
                                          a summary is a line of `asya sump ls --json`
    GET  /v1/sump/{id}                    the whole record; 404 when there is none
    POST /v1/sump/{id}/redrive            {"id", "to", "result", "detail"}, a line of
         (?dry_run=true: send nothing)    `asya redrive --json`; 404 no such record,
                                          409 refused (detail says why), 502 the send
                                          failed (the record stays)

The store is ASYA_SUMP_STORE (the crew's setting); without it every route answers 404 saying
so. A redrive is published with the transport and namespace the gateway submits tasks
with. The sump is not split by tenant: records carry none, so any valid API key sees it all.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Awaitable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from asya_gateway.errors import ApiError
from asya_gateway.service import Gateway
from asya_shared import env, redrive, stores
from asya_shared.redrive import Filters, Summary
from asya_sump import redriving

__all__ = ["NOT_CONFIGURED", "Sump", "routes"]

NOT_CONFIGURED = f"no sump store configured ({env.SUMP_STORE})"
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no", "")
T = TypeVar("T")


class Sump:
    """The sump store the gateway reads (None: not configured), and the redrive of one record
    through the gateway's transport. Opened once; `close` when the app stops."""

    def __init__(self, gateway: Gateway, store: stores.ResultStore | None) -> None:
        self.gw = gateway
        self.store = store

    @classmethod
    def from_url(cls, gateway: Gateway, url: str | None) -> Sump:
        """Raises ValueError for a URL no store accepts."""
        return cls(gateway, stores.open_store(url) if url else None)

    @property
    def configured(self) -> bool:
        return self.store is not None

    async def summaries(self, filters: Filters) -> list[Summary]:
        return await redriving.summaries(self._store(), filters)

    async def record(self, envelope_id: str) -> dict[str, Any] | None:
        return await redriving.read_one(self._store(), envelope_id)

    async def redrive(self, envelope_id: str, *, dry_run: bool) -> redriving.Outcome:
        transport = self.gw.transport
        (outcome,) = await redriving.redrive_records(
            self._store(),
            ids=[envelope_id],
            filters=Filters(),
            dry_run=dry_run,
            # The transport the gateway submits with: already connected, and kept open.
            connect=lambda: contextlib.nullcontext(transport),
            queue_of=redriving.queue_namer(self.gw.namespace, transport.name),
            now=self.gw.clock(),
        )
        return outcome

    async def close(self) -> None:
        if self.store is not None:
            await self.store.close()

    def _store(self) -> stores.ResultStore:
        if self.store is None:
            raise ApiError(404, "sump_not_configured", NOT_CONFIGURED)
        return self.store


def routes(sump: Sump) -> list[BaseRoute]:
    api = _SumpApi(sump)
    return [
        Route("/v1/sump", api.list_records, methods=["GET"]),
        # `path`: an envelope's id may hold a "/" (sent as %2F, decoded before routing).
        Route("/v1/sump/{record_id:path}/redrive", api.redrive, methods=["POST"]),
        Route("/v1/sump/{record_id:path}", api.get_record, methods=["GET"]),
    ]


def filters_from(query: Any, *, now: datetime.datetime) -> Filters:
    """The filters of `?actor=&reason=&since=` (empty means none); ValueError for a `since`
    that is neither a duration nor an RFC 3339 time."""
    since_text = (query.get("since") or "").strip()
    since = redrive.parse_since(since_text, now=now, name="since") if since_text else None
    return Filters(
        actor=(query.get("actor") or "").strip() or None,
        reason=(query.get("reason") or "").strip() or None,
        since=since,
    )


def redrive_status(outcome: redriving.Outcome) -> int:
    """The HTTP status of a redrive's outcome."""
    if outcome.missing:
        return 404
    if outcome.result == redriving.REFUSED:
        return 409
    if outcome.result == redriving.NOT_SENT:
        return 502
    return 200


class _SumpApi:
    def __init__(self, sump: Sump) -> None:
        self.sump = sump

    async def list_records(self, request: Request) -> Response:
        self.sump.gw.tenant_of(request.headers.get("authorization"))
        try:
            filters = filters_from(request.query_params, now=self.sump.gw.clock())
        except ValueError as exc:
            raise ApiError(400, "invalid_since", str(exc)) from None
        rows = await _reading(self.sump.summaries(filters))
        return JSONResponse({"records": [row.to_json() for row in rows]})

    async def get_record(self, request: Request) -> Response:
        self.sump.gw.tenant_of(request.headers.get("authorization"))
        record_id = request.path_params["record_id"]
        found = await _reading(self.sump.record(record_id))
        if found is None:
            raise ApiError(404, "not_found", f"no sump record for {record_id!r}")
        return JSONResponse(found)

    async def redrive(self, request: Request) -> Response:
        self.sump.gw.tenant_of(request.headers.get("authorization"))
        raw = (request.query_params.get("dry_run") or "").strip().lower()
        if raw not in (*_TRUE, *_FALSE):
            raise ApiError(400, "invalid_dry_run", f"dry_run={raw!r} is not true or false")
        outcome = await _reading(
            self.sump.redrive(request.path_params["record_id"], dry_run=raw in _TRUE)
        )
        return JSONResponse(outcome.to_json(), status_code=redrive_status(outcome))


async def _reading(pending: Awaitable[T]) -> T:
    """`pending`'s result; a sump store that failed is a 503 saying so."""
    try:
        result = await pending
    except stores.StoreError as exc:
        raise ApiError(
            503, "sump_unavailable", f"the sump store cannot answer now ({exc}); try again later"
        ) from None
    return result
