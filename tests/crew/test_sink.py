"""sink.py: x-sink stores every finished envelope and forwards failures to x-sump.

In-process tests drive the handler with the runtime's own ABI session; the end-to-end tests
serve it with the real runtime in a subprocess and talk to it over the Unix socket.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from asya_crew import config, sink
from asya_shared import records
from asya_shared.stores import StoreError
from tests.crew.conftest import CrewFactory, crew_envelope, drive, s3_client

HANDLER = "asya_crew.sink.Sink.handle"


def stored(root: Path, envelope: dict[str, Any]) -> Any:
    return json.loads((root / records.key(envelope["id"])).read_text(encoding="utf-8"))


def names_in(root: Path) -> list[str]:
    return sorted(path.name for path in root.iterdir())


def expected_record(envelope: dict[str, Any]) -> dict[str, Any]:
    return {name: envelope.get(name) for name in (*records.FIELDS, "payload")}


class FailingStore:
    async def put(self, key: str, data: bytes) -> None:
        raise StoreError(f"cannot write {key!r}: disk on fire")

    async def get(self, key: str) -> bytes | None:
        raise StoreError("unused")

    async def list(self, prefix: str = "") -> list[str]:
        raise StoreError("unused")

    async def delete(self, key: str) -> None:
        raise StoreError("unused")

    async def close(self) -> None:
        pass


# --------------------------------------------------------------------------------- in-process


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "results"


@pytest.fixture
def handler(root: Path) -> sink.Sink:
    return sink.Sink({config.RESULT_STORE: f"file://{root}"})


async def test_a_succeeded_envelope_is_stored_and_ends_here(handler: sink.Sink, root: Path) -> None:
    envelope = crew_envelope({"answer": "é"}, parent_id="p-1")
    frames = await drive(handler.handle(envelope["payload"]), envelope)
    assert frames == []
    assert stored(root, envelope) == expected_record(envelope)


async def test_a_failed_envelope_is_stored_and_forwarded_to_the_sump(
    handler: sink.Sink, root: Path
) -> None:
    envelope = crew_envelope({"answer": None}, phase="failed")
    frames = await drive(handler.handle(envelope["payload"]), envelope)
    assert frames == [
        {
            "payload": envelope["payload"],
            "route": {"prev": ["prep", "infer"], "curr": "x-sink", "next": ["x-sump"]},
            "headers": envelope["headers"],
        }
    ]
    assert stored(root, envelope)["status"]["phase"] == "failed"


async def test_a_failed_envelope_keeps_the_steps_it_did_not_run_behind_the_sump(
    handler: sink.Sink, root: Path
) -> None:
    # As the sidecar's `finish` hands it over: the steps after the failed actor still in next.
    envelope = crew_envelope(
        {"answer": None},
        phase="failed",
        route={"prev": ["prep", "infer"], "curr": "x-sink", "next": ["post", "store"]},
    )
    (frame,) = await drive(handler.handle(envelope["payload"]), envelope)
    assert frame["route"] == {
        "prev": ["prep", "infer"],
        "curr": "x-sink",
        "next": ["x-sump", "post", "store"],
    }
    # The result record shows the route as x-sink received it.
    assert stored(root, envelope)["route"]["next"] == ["post", "store"]


async def test_a_succeeded_envelope_is_not_forwarded_whatever_its_next(
    handler: sink.Sink, root: Path
) -> None:
    envelope = crew_envelope(
        route={"prev": ["prep"], "curr": "x-sink", "next": ["post"]}, phase="succeeded"
    )
    assert await drive(handler.handle(envelope["payload"]), envelope) == []


@pytest.mark.parametrize(
    ("route", "remaining"),
    [
        ({"prev": ["a"], "curr": "x-sink", "next": ["b", "c"]}, ["b", "c"]),
        ({"prev": ["a"], "curr": "x-sink", "next": []}, []),
        ({"prev": ["a"], "curr": "x-sink"}, []),
        ({"prev": ["a"], "curr": "x-sink", "next": "b"}, []),
        ({"prev": ["a"], "curr": "x-sink", "next": ["b", 3]}, []),
        (None, []),
        ("a,b", []),
    ],
)
def test_remaining_steps(route: Any, remaining: list[str]) -> None:
    assert sink.remaining_steps(route) == remaining


async def test_an_unsafe_id_is_stored_under_a_safe_key(handler: sink.Sink, root: Path) -> None:
    envelope = crew_envelope(id="tenant/42:é")
    await drive(handler.handle(envelope["payload"]), envelope)
    assert names_in(root) == [records.key("tenant/42:é")]
    assert stored(root, envelope)["id"] == "tenant/42:é"


async def test_a_store_failure_raises_and_forwards_nothing(handler: sink.Sink) -> None:
    handler.store = FailingStore()
    envelope = crew_envelope(phase="failed")
    with pytest.raises(StoreError, match="disk on fire"):
        await drive(handler.handle(envelope["payload"]), envelope)


@pytest.mark.parametrize(
    ("status", "forwarded"),
    [
        ({"phase": "failed", "reason": "RuntimeError"}, True),
        ({"phase": "succeeded"}, False),
        ({"phase": "canceled"}, False),
        ({}, False),
        (None, False),
        ("failed", False),
    ],
)
def test_goes_to_sump(status: Any, forwarded: bool) -> None:
    assert sink.goes_to_sump(status) is forwarded


def test_the_store_variable_is_required() -> None:
    with pytest.raises(config.ConfigError, match="ASYA_RESULT_STORE is not set"):
        sink.Sink({})


def test_a_bad_store_url_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="accepted forms"):
        sink.Sink({config.RESULT_STORE: "ftp://results"})


# ------------------------------------------------------------------- end to end: real runtime


def test_runtime_answers_204_and_stores_a_succeeded_envelope(
    start_crew: CrewFactory, root: Path
) -> None:
    crew = start_crew(handler=HANDLER, env={"ASYA_RESULT_STORE": f"file://{root}"})
    envelope = crew_envelope({"text": "héllo"})
    response = crew.invoke(envelope)
    assert response.status_code == 204, response.text
    assert stored(root, envelope) == expected_record(envelope)


def test_runtime_forwards_a_failed_envelope_to_the_sump(
    start_crew: CrewFactory, root: Path
) -> None:
    crew = start_crew(handler=HANDLER, env={"ASYA_RESULT_STORE": f"file://{root}"})
    envelope = crew_envelope({"text": "héllo"}, phase="failed")
    response = crew.invoke(envelope)
    assert response.status_code == 200, response.text
    (frame,) = response.json()["frames"]
    assert frame["route"] == {"prev": ["prep", "infer"], "curr": "x-sink", "next": ["x-sump"]}
    assert frame["payload"] == envelope["payload"]
    assert frame["headers"] == envelope["headers"]
    assert stored(root, envelope) == expected_record(envelope)


def test_runtime_answers_500_when_the_store_fails(start_crew: CrewFactory, root: Path) -> None:
    crew = start_crew(handler=HANDLER, env={"ASYA_RESULT_STORE": f"file://{root}"})
    # A file where the directory was: fails even for root, unlike a read-only directory.
    shutil.rmtree(root)
    root.write_text("not a directory")
    response = crew.invoke(crew_envelope(phase="failed"))
    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "processing_error"
    assert body["details"]["type"] == "asya_shared.stores.base.StoreError"
    assert "cannot write" in body["details"]["message"]


def test_runtime_stores_in_s3(start_crew: CrewFactory, s3_endpoint: str, bucket: str) -> None:
    crew = start_crew(
        handler=HANDLER,
        env={"ASYA_RESULT_STORE": f"s3://{bucket}/results", "ASYA_S3_ENDPOINT": s3_endpoint},
    )
    envelope = crew_envelope({"text": "héllo"})
    assert crew.invoke(envelope).status_code == 204
    body = (
        s3_client(s3_endpoint)
        .get_object(Bucket=bucket, Key=f"results/{records.key(envelope['id'])}")["Body"]
        .read()
    )
    assert json.loads(body) == expected_record(envelope)


def test_runtime_answers_500_when_the_bucket_is_missing(
    start_crew: CrewFactory, s3_endpoint: str
) -> None:
    crew = start_crew(
        handler=HANDLER,
        env={"ASYA_RESULT_STORE": "s3://asya-no-such-bucket", "ASYA_S3_ENDPOINT": s3_endpoint},
    )
    response = crew.invoke(crew_envelope())
    assert response.status_code == 500
    details = response.json()["details"]
    assert details["type"] == "asya_shared.stores.base.StoreError"
    assert "NoSuchBucket" in details["message"]


def test_runtime_refuses_to_start_without_a_store(start_crew: CrewFactory) -> None:
    crew = start_crew(handler=HANDLER, env={}, wait=False)
    code, stderr = crew.wait_exit()
    assert code == 3  # the runtime's "handler cannot be loaded"
    assert "ASYA_RESULT_STORE is not set" in stderr
