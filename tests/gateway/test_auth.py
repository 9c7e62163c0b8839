"""API keys (asya_gateway.auth) and what they do to the public API: 401 without a valid key,
and a tenant that sees, follows and cancels only its own tasks."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from asya_gateway.auth import ApiKeys, KeysError, bearer_token, hash_key
from asya_gateway.errors import ApiError
from tests.gateway.gateway_fixtures import (
    Harness,
    local_transport,
    make_harness,
    receive_envelope,
    sqlite_store,
)

__all__ = ["local_transport", "make_harness", "sqlite_store"]  # fixtures used here

ACME_KEY, ACME_KEY_2, GLOBEX_KEY = "acme-secret-1", "acme-secret-2", "globex-secret"
KEYS_FILE = f"""
# acme has two keys (one being rotated out)
{hash_key(ACME_KEY)}: acme
{hash_key(ACME_KEY_2).upper()}: acme

{hash_key(GLOBEX_KEY)}:   globex
"""


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_hash_key_is_the_sha256_hex_of_the_key() -> None:
    assert hash_key("k") == hashlib.sha256(b"k").hexdigest()


def test_the_file_maps_keys_to_tenants() -> None:
    keys = ApiKeys.parse(KEYS_FILE, "keys")
    assert keys.tenant_of(ACME_KEY) == "acme"
    assert keys.tenant_of(ACME_KEY_2) == "acme"  # upper-case hex is the same hash
    assert keys.tenant_of(GLOBEX_KEY) == "globex"
    assert keys.tenant_of("guess") is None
    assert keys.tenant_of(hash_key(ACME_KEY)) is None  # the stored hash is not a key


def test_the_file_is_read_from_disk(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(KEYS_FILE)
    assert ApiKeys.load(path).tenant_of(GLOBEX_KEY) == "globex"
    with pytest.raises(KeysError, match="cannot read the API keys file"):
        ApiKeys.load(tmp_path / "missing")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("acme-secret-1: acme", "keys:1: expected `<sha256"),  # a key, not its hash
        (f"# c\n{'ab' * 31}: acme", "keys:2: expected"),  # too short
        (f"{hash_key('k')} acme", "keys:1: expected"),  # no colon
        (f"{hash_key('k')}:", "keys:1: expected"),  # no tenant
        (f"{hash_key('k')}: a\n{hash_key('k')}: b", "keys:2: this key hash is listed twice"),
        ("# only comments\n\n", "lists no keys"),
    ],
)
def test_a_bad_file_is_refused_naming_the_line(text: str, words: str) -> None:
    with pytest.raises(KeysError) as caught:
        ApiKeys.parse(text, "keys")
    assert words in str(caught.value)


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        ("BEARER abc", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("Bearer   ", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_authenticate_says_what_is_missing() -> None:
    keys = ApiKeys.parse(KEYS_FILE, "keys")
    assert keys.authenticate(f"Bearer {ACME_KEY}") == "acme"
    for header, words in ((None, "needs an API key"), ("Bearer nope", "not valid")):
        with pytest.raises(ApiError) as caught:
            keys.authenticate(header)
        assert caught.value.status == 401
        assert words in caught.value.message
        assert caught.value.headers == {"WWW-Authenticate": "Bearer"}


# --------------------------------------------------------------------------------- HTTP


@pytest.fixture
async def secured(make_harness: Callable[..., Any]) -> Harness:
    made: Harness = await make_harness(keys=ApiKeys.parse(KEYS_FILE, "keys"))
    return made


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/tasks"),
        ("GET", "/v1/tasks"),
        ("GET", "/v1/tasks/x"),
        ("DELETE", "/v1/tasks/x"),
        ("GET", "/v1/tasks/x/events"),
    ],
)
@pytest.mark.parametrize("key", [None, "wrong"])
async def test_every_task_route_needs_a_valid_key(
    secured: Harness, method: str, path: str, key: str | None
) -> None:
    headers = bearer(key) if key else {}
    body = {"route": ["a"], "payload": 1} if method == "POST" else None
    response = await secured.public.request(method, path, json=body, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "unauthorized"
    assert await secured.depth("a") == 0  # nothing was published


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
async def test_health_readiness_and_metrics_need_no_key(secured: Harness, path: str) -> None:
    assert (await secured.public.get(path)).status_code == 200


async def test_a_tenant_sees_only_its_own_tasks(secured: Harness) -> None:
    created = await secured.submit({"route": ["a"], "payload": 1}, headers=bearer(ACME_KEY))
    assert created.status_code == 201
    task_id = created.json()["id"]
    # Any key of the tenant will do.
    assert (await secured.public.get(f"/v1/tasks/{task_id}", headers=bearer(ACME_KEY_2))).json()[
        "id"
    ] == task_id
    listed = await secured.public.get("/v1/tasks", headers=bearer(ACME_KEY))
    assert [task["id"] for task in listed.json()["tasks"]] == [task_id]

    # Another tenant: as if the task did not exist (404, not 403), and an empty list.
    other = bearer(GLOBEX_KEY)
    for method, path in (
        ("GET", f"/v1/tasks/{task_id}"),
        ("DELETE", f"/v1/tasks/{task_id}"),
        ("GET", f"/v1/tasks/{task_id}/events"),
    ):
        response = await secured.public.request(method, path, headers=other)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "not_found"
    assert (await secured.public.get("/v1/tasks", headers=other)).json()["tasks"] == []
    # The cancel did not happen.
    task = await secured.public.get(f"/v1/tasks/{task_id}", headers=bearer(ACME_KEY))
    assert task.json()["status"] == "pending"


async def test_another_tenants_id_cannot_be_reused(secured: Harness) -> None:
    body = {"route": ["a"], "payload": 1, "id": "shared-id"}
    assert (await secured.submit(body, headers=bearer(ACME_KEY))).status_code == 201
    assert (await receive_envelope(secured.transport, "a"))["id"] == "shared-id"
    taken = await secured.submit(body, headers=bearer(GLOBEX_KEY))
    assert taken.status_code == 409
    assert taken.json()["error"]["code"] == "id_taken"
    assert await secured.depth("a") == 0  # nothing published for the refused one
    # The owner's repeat is the idempotent 200.
    assert (await secured.submit(body, headers=bearer(ACME_KEY))).status_code == 200


async def test_the_internal_port_takes_reports_without_a_key(secured: Harness) -> None:
    response = await secured.report()
    assert response.status_code == 200
    assert response.json()["accepted"] == 0
