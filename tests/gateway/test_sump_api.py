"""The gateway's sump API (asya_gateway.sump) over HTTP, in process: records x-sump stored
(written by the real record encoder into a file store) are listed, shown and redriven onto
a real local queue; what cannot be redriven is refused and stays; a send that fails keeps the
record; the API sits behind the API key, and the view's cookie may redrive only from the
gateway's own pages."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

import asya_transports as transports
from asya_gateway.app import Gateway, public_app
from asya_gateway.auth import ApiKeys, hash_key
from asya_gateway.store.sqlite import SQLiteStore
from asya_gateway.ui import COOKIE
from asya_shared import names, records
from tests.gateway.gateway_fixtures import (
    NAMESPACE,
    Lifespan,
    local_transport,
    receive_envelope,
    sqlite_store,
)

__all__ = ["local_transport", "sqlite_store"]  # fixtures used here

KEY = "sump-api-key"
KEYS = ApiKeys.parse(f"{hash_key(KEY)}: acme\n", "keys")
AUTH = {"Authorization": f"Bearer {KEY}"}


def failure(envelope_id: str, *, actor: str = "a", failed_at: str) -> dict[str, Any]:
    """x-sump's record of an envelope whose handler at `actor` failed, handed on by x-sink
    with one step (`c`) not run."""
    fields = {
        "id": envelope_id,
        "parent_id": None,
        "route": {"prev": [actor, names.SINK], "curr": names.SUMP, "next": ["c"]},
        "headers": {"x-tenant": "acme"},
        "status": {
            "phase": "failed", "actor": actor, "attempt": 3, "max_attempts": 3,
            "reason": "HandlerError", "updated_at": failed_at,
            "error": {"type": "Boom", "message": "it broke\nsecond line"},
        },
    }  # fmt: skip
    return dict(records.build(fields, {"n": 1}))


class Sump:
    """A gateway app with a file sump store, and an HTTP client of it."""

    def __init__(self, root: Path, client: httpx.AsyncClient) -> None:
        self.root = root
        self.client = client

    def put(self, item: dict[str, Any]) -> Path:
        path = self.root / records.key(item["id"])
        path.write_bytes(records.encode(cast(records.Record, item)))
        return path


async def make_client(
    sqlite_store: SQLiteStore, transport: transports.Broker, sump_store: str | None, **kw: Any
) -> tuple[httpx.AsyncClient, Lifespan]:
    gateway = Gateway(sqlite_store, transport, namespace=NAMESPACE, **kw)
    app = public_app(gateway, sump_store=sump_store)
    lifespan = await Lifespan.start(app)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
    return client, lifespan


MakeSump = Callable[..., Any]


@pytest.fixture
async def make_sump(
    tmp_path: Path, sqlite_store: SQLiteStore, local_transport: transports.Broker
) -> AsyncIterator[MakeSump]:
    opened: list[tuple[httpx.AsyncClient, Lifespan]] = []

    async def make(*, transport: transports.Broker | None = None, **kw: Any) -> Sump:
        root = tmp_path / "sump"
        root.mkdir(exist_ok=True)
        made = await make_client(sqlite_store, transport or local_transport, f"file://{root}", **kw)
        opened.append(made)
        return Sump(root, made[0])

    yield make
    for client, lifespan in opened:
        await client.aclose()
        await lifespan.stop()


@pytest.fixture
async def sump(make_sump: MakeSump) -> Sump:
    made: Sump = await make_sump()
    return made


# ------------------------------------------------------------------------------- reading


async def test_the_list_is_newest_first_and_filters_like_the_cli(sump: Sump) -> None:
    sump.put(failure("older", actor="a", failed_at="2026-12-01T10:00:00.000Z"))
    sump.put(failure("newer", actor="b", failed_at="2026-12-01T11:00:00.000Z"))

    listed = await sump.client.get("/v1/sump")
    by_actor = await sump.client.get("/v1/sump", params={"actor": "a"})
    by_old_reason = await sump.client.get("/v1/sump", params={"reason": "RuntimeError"})
    since = await sump.client.get("/v1/sump", params={"since": "2026-12-01T10:30:00Z"})

    assert listed.status_code == 200, listed.text
    assert [row["id"] for row in listed.json()["records"]] == ["newer", "older"]
    assert listed.json()["records"][1] == {
        "id": "older", "actor": "a", "reason": "HandlerError", "attempt": 3,
        "failed_at": "2026-12-01T10:00:00.000Z", "error": "Boom: it broke",
        "route": {"prev": ["a", names.SINK], "curr": names.SUMP, "next": ["c"]},
    }  # fmt: skip
    assert [row["id"] for row in by_actor.json()["records"]] == ["older"]
    assert [row["id"] for row in by_old_reason.json()["records"]] == ["newer", "older"]
    assert [row["id"] for row in since.json()["records"]] == ["newer"]


async def test_a_since_that_is_no_time_is_a_400_saying_what_is_accepted(sump: Sump) -> None:
    response = await sump.client.get("/v1/sump", params={"since": "yesterday"})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_since"
    assert "since 'yesterday' is neither a duration" in response.json()["error"]["message"]


async def test_one_record_is_shown_whole_or_is_a_404(sump: Sump) -> None:
    path = sump.put(failure("tenant/42:é", failed_at="2026-12-01T10:00:00.000Z"))

    shown = await sump.client.get("/v1/sump/tenant%2F42%3A%C3%A9")
    missing = await sump.client.get("/v1/sump/nope")

    assert shown.status_code == 200, shown.text
    assert shown.json() == json.loads(path.read_text())
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "no sump record for 'nope'"


# ------------------------------------------------------------------------------- redrive


async def test_a_redrive_sends_the_envelope_to_the_failed_actor_and_removes_the_record(
    sump: Sump, local_transport: transports.Broker
) -> None:
    path = sump.put(failure("retry-me", actor="b", failed_at="2026-12-01T10:00:00.000Z"))

    dry = await sump.client.post("/v1/sump/retry-me/redrive", params={"dry_run": "true"})
    assert dry.status_code == 200, dry.text
    assert dry.json() == {"id": "retry-me", "to": "b", "result": "would redrive", "detail": ""}
    assert path.exists()

    done = await sump.client.post("/v1/sump/retry-me/redrive")

    assert done.status_code == 200, done.text
    assert done.json() == {"id": "retry-me", "to": "b", "result": "redriven", "detail": ""}
    assert not path.exists()
    sent = await receive_envelope(local_transport, "b")
    assert sent["id"] == "retry-me"
    assert sent["route"] == {"prev": [], "curr": "b", "next": ["c"]}
    assert sent["status"]["phase"] == "pending"
    assert sent["status"]["attempt"] == 1
    assert sent["headers"]["redriven-from"]["reason"] == "HandlerError"
    assert sent["payload"] == {"n": 1}
    listed = await sump.client.get("/v1/sump")
    assert listed.json() == {"records": []}


async def test_a_record_that_cannot_be_redriven_is_a_409_and_stays(sump: Sump) -> None:
    item = failure("crew-failed", actor=names.JOIN, failed_at="2026-12-01T10:00:00.000Z")
    path = sump.put(item)

    response = await sump.client.post("/v1/sump/crew-failed/redrive")

    assert response.status_code == 409
    assert response.json()["result"] == "refused"
    assert "crew actor" in response.json()["detail"]
    assert path.exists()


async def test_redriving_a_missing_record_is_a_404(sump: Sump) -> None:
    response = await sump.client.post("/v1/sump/ghost/redrive")

    assert response.status_code == 404
    assert response.json() == {
        "id": "ghost", "to": "", "result": "refused", "detail": "no sump record for this id"
    }  # fmt: skip


async def test_a_send_that_fails_is_a_502_and_the_record_stays(sump: Sump) -> None:
    # An actor with no queue on the transport: the broker refuses the send.
    path = sump.put(failure("nowhere", actor="ghost", failed_at="2026-12-01T10:00:00.000Z"))

    response = await sump.client.post("/v1/sump/nowhere/redrive")

    assert response.status_code == 502, response.text
    assert response.json()["result"] == "not sent"
    assert "the record stays" in response.json()["detail"]
    assert path.exists()


async def test_a_bad_dry_run_value_is_a_400(sump: Sump) -> None:
    sump.put(failure("x", failed_at="2026-12-01T10:00:00.000Z"))

    response = await sump.client.post("/v1/sump/x/redrive", params={"dry_run": "maybe"})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_dry_run"


async def test_without_a_sump_store_every_route_says_none_is_configured(
    sqlite_store: SQLiteStore, local_transport: transports.Broker
) -> None:
    client, lifespan = await make_client(sqlite_store, local_transport, None)
    try:
        answers = [
            await client.get("/v1/sump"),
            await client.get("/v1/sump/x"),
            await client.post("/v1/sump/x/redrive"),
        ]
        page = await client.get("/ui/sump")
    finally:
        await client.aclose()
        await lifespan.stop()

    for answer in answers:
        assert answer.status_code == 404
        assert answer.json()["error"] == {
            "code": "sump_not_configured",
            "message": "no sump store configured (ASYA_SUMP_STORE)",
        }
    assert page.status_code == 200
    assert "no sump store configured (ASYA_SUMP_STORE)" in page.text


# ---------------------------------------------------------------------------------- auth


async def test_with_keys_the_api_needs_one(make_sump: MakeSump) -> None:
    sump = await make_sump(keys=KEYS)
    path = sump.put(failure("guarded", actor="b", failed_at="2026-12-01T10:00:00.000Z"))

    answers = [
        await sump.client.get("/v1/sump"),
        await sump.client.get("/v1/sump/guarded"),
        await sump.client.post("/v1/sump/guarded/redrive"),
        await sump.client.get("/v1/sump", headers={"Authorization": "Bearer wrong"}),
    ]
    allowed = await sump.client.get("/v1/sump", headers=AUTH)

    assert [answer.status_code for answer in answers] == [401, 401, 401, 401]
    assert path.exists()
    assert [row["id"] for row in allowed.json()["records"]] == ["guarded"]


async def test_the_cookie_redrives_only_from_the_gateways_own_pages(
    make_sump: MakeSump, local_transport: transports.Broker
) -> None:
    sump = await make_sump(keys=KEYS)
    path = sump.put(failure("by-cookie", actor="b", failed_at="2026-12-01T10:00:00.000Z"))
    cookie = {"Cookie": f"{COOKIE}={KEY}"}

    listed = await sump.client.get("/v1/sump", headers=cookie)
    elsewhere = await sump.client.post(
        "/v1/sump/by-cookie/redrive", headers={**cookie, "Origin": "http://evil.example"}
    )
    no_origin = await sump.client.post("/v1/sump/by-cookie/redrive", headers=cookie)
    assert listed.status_code == 200
    assert [elsewhere.status_code, no_origin.status_code] == [401, 401]
    assert path.exists()

    own = await sump.client.post(
        "/v1/sump/by-cookie/redrive", headers={**cookie, "Origin": "http://gw"}
    )

    assert own.status_code == 200, own.text
    assert not path.exists()
    assert (await receive_envelope(local_transport, "b"))["id"] == "by-cookie"
