"""The generator ABI (GET/SET/DEL/FLY and `yield payload`), for sync and async generators.

Each case is a script of operations run by `handlers/abi.py`, so one table covers both kinds.
"""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import RuntimeFactory, RuntimeProcess, envelope

STATUS = {"phase": "processing", "actor": "model", "attempt": 2, "max_attempts": 5}


@pytest.fixture(params=["abi.sync_script", "abi.async_script"])
def abi_runtime(request: pytest.FixtureRequest, start_runtime: RuntimeFactory) -> RuntimeProcess:
    return start_runtime(request.param)


def run(runtime: RuntimeProcess, *ops: list[Any]) -> Any:
    sent = envelope({"ops": list(ops)}, parent_id="root-1", status=STATUS)
    return runtime.client.post("/invoke", json=sent)


GET_CASES = [
    (".id", "env-1"),
    (".parent_id", "root-1"),
    (".route", {"prev": ["ingest"], "curr": "model", "next": ["post", "store"]}),
    (".route.prev", ["ingest"]),
    (".route.curr", "model"),
    (".route.next", ["post", "store"]),
    (".route.next[0]", "post"),
    (".route.next[-1]", "store"),
    (".route.next[1:]", ["store"]),
    (".route.prev[0]", "ingest"),
    (".headers.traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    (".headers.absent", None),
    (".status.attempt", 2),
    (".status.max_attempts", 5),
    (".status", STATUS),
]


@pytest.mark.parametrize(("path", "expected"), GET_CASES)
def test_get_reads_the_envelope(abi_runtime: RuntimeProcess, path: str, expected: Any) -> None:
    response = run(abi_runtime, ["GET", path], ["EMIT", "x"])

    assert response.status_code == 200, response.text
    assert response.json()["frames"][0]["payload"]["got"] == [expected]


SET_CASES = [
    ([["SET", ".route.next", ["review"]]], ["review"]),
    ([["SET", ".route.next", []]], []),
    ([["SET", ".route.next[:0]", ["audit"]]], ["audit", "post", "store"]),
    ([["SET", ".route.next[1:]", ["archive", "notify"]]], ["post", "archive", "notify"]),
    ([["SET", ".route.next[0]", "rerank"]], ["rerank", "store"]),
    ([["DEL", ".route.next[0]"]], ["store"]),
    ([["DEL", ".route.next[:]"]], []),
    ([["DEL", ".route.next"]], []),
    ([["SET", ".route.next", ["a"]], ["SET", ".route.next[1:]", ["b"]]], ["a", "b"]),
]


@pytest.mark.parametrize(("ops", "expected_next"), SET_CASES)
def test_set_and_del_rewrite_route_next(
    abi_runtime: RuntimeProcess, ops: list[list[Any]], expected_next: list[str]
) -> None:
    response = run(abi_runtime, *ops, ["EMIT", "x"])

    frame = response.json()["frames"][0]
    assert frame["route"] == {"prev": ["ingest"], "curr": "model", "next": expected_next}


def test_headers_can_be_set_read_back_and_deleted(abi_runtime: RuntimeProcess) -> None:
    response = run(
        abi_runtime,
        ["SET", ".headers.x-tenant", "acme"],
        ["SET", ".headers.score", {"p": 0.93}],
        ["DEL", ".headers.traceparent"],
        ["GET", ".headers.x-tenant"],
        ["EMIT", "x"],
    )

    frame = response.json()["frames"][0]
    assert frame["headers"] == {"x-tenant": "acme", "score": {"p": 0.93}}
    assert frame["payload"]["got"] == ["acme"]


def test_each_frame_snapshots_the_route_at_its_yield(abi_runtime: RuntimeProcess) -> None:
    response = run(
        abi_runtime,
        ["EMIT", "first"],
        ["SET", ".route.next", ["review"]],
        ["SET", ".headers.stage", "two"],
        ["EMIT", "second"],
    )

    first, second = response.json()["frames"]
    assert first["payload"]["emitted"] == "first"
    assert first["route"]["next"] == ["post", "store"]
    assert "stage" not in first["headers"]
    assert second["route"]["next"] == ["review"]
    assert second["headers"]["stage"] == "two"


def test_fly_events_come_back_beside_the_frames(abi_runtime: RuntimeProcess) -> None:
    response = run(
        abi_runtime,
        ["FLY", {"progress": 0.5}],
        ["EMIT", "done"],
        ["FLY", {"progress": 1.0}],
    )

    body = response.json()
    assert body["fly"] == [{"progress": 0.5}, {"progress": 1.0}]
    assert len(body["frames"]) == 1


def test_fly_without_frames_answers_200_with_no_frames(abi_runtime: RuntimeProcess) -> None:
    response = run(abi_runtime, ["FLY", {"token": "Hel"}])

    assert response.status_code == 200
    assert response.json() == {"frames": [], "fly": [{"token": "Hel"}]}


ABI_ERRORS = [
    ([["SET", ".route.prev", ["forged"]]], ".route.prev"),
    ([["SET", ".route.curr", "other"]], ".route.curr"),
    ([["SET", ".route.prev[0]", "forged"]], ".route.prev[0]"),
    ([["DEL", ".route.curr"]], ".route.curr"),
    ([["SET", ".route", {"curr": "x"}]], ".route"),
    ([["SET", ".id", "new-id"]], ".id"),
    ([["SET", ".status.attempt", 9]], ".status.attempt"),
    ([["GET", ".payload.secret"]], ".payload.secret"),
    ([["GET", ".bogus"]], ".bogus"),
    ([["GET", "route.next"]], "route.next"),
    ([["GET", ".headers.a[0]"]], ".headers.a[0]"),
    ([["GET", ".route.next[x]"]], ".route.next[x]"),
    ([["GET", ".route.next[7]"]], ".route.next[7]"),
    ([["SET", ".route.next[9]", "z"]], ".route.next[9]"),
    ([["SET", ".route.next", "not-a-list"]], ".route.next"),
    ([["SET", ".route.next", ["ok", ""]]], ".route.next"),
    ([["SET", ".route.next", [1]]], ".route.next"),
    ([["SET", ".headers", "flat"]], ".headers"),
    ([["RAW", ["GET"]]], "GET"),
    ([["RAW", ["SET", ".route.next"]]], "SET"),
    ([["RAW", ["FLY", 1, 2]]], "FLY"),
]


@pytest.mark.parametrize(("ops", "named"), ABI_ERRORS)
def test_abi_misuse_is_a_processing_error_that_names_the_path(
    abi_runtime: RuntimeProcess, ops: list[list[Any]], named: str
) -> None:
    response = run(abi_runtime, *ops, ["EMIT", "never"])

    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "processing_error"
    assert body["details"]["type"] == "AbiError"
    assert named in body["details"]["message"]


def test_a_tuple_not_starting_with_a_verb_is_a_payload(abi_runtime: RuntimeProcess) -> None:
    response = run(abi_runtime, ["RAW", ["get", ".id"]])

    assert response.json()["frames"][0]["payload"] == ["get", ".id"]


def test_park_ends_the_call_without_results(abi_runtime: RuntimeProcess) -> None:
    response = run(
        abi_runtime, ["GET", ".id"], ["FLY", {"job": "j-1"}], ["PARK", {"job": "jobs.batch/j-1"}]
    )

    assert response.status_code == 200, response.text
    assert response.json() == {
        "frames": [],
        "parked": {"job": "jobs.batch/j-1"},
        "fly": [{"job": "j-1"}],
    }


@pytest.mark.parametrize(
    "ops",
    [
        [["EMIT", "first"], ["PARK", None]],
        [["PARK", None], ["EMIT", "after"]],
        [["PARK", None], ["PARK", None]],
        [["RAW", ["PARK"]]],
    ],
)
def test_park_cannot_be_mixed_with_results(abi_runtime: RuntimeProcess, ops: list[Any]) -> None:
    response = run(abi_runtime, *ops)

    assert response.status_code == 500
    assert response.json()["details"]["type"] == "AbiError"
    assert "PARK" in response.json()["details"]["message"]
