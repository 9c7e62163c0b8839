"""stores/s3.py: objects in a bucket, against moto running as a real HTTP server."""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from asya_shared import stores
from asya_shared.stores import InvalidKey, StoreError, s3
from tests.crew.conftest import s3_client
from tests.support.services import free_port

# ------------------------------------------------------------------------ pure: URL, settings


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [
        ("s3://results", "results", ""),
        ("s3://results/", "results", ""),
        ("s3://results/prod", "results", "prod/"),
        ("s3://results/prod/", "results", "prod/"),
        ("s3://results//team/a//", "results", "team/a/"),
        ("s3://my.bucket-1/x", "my.bucket-1", "x/"),
    ],
)
def test_parse_url(url: str, bucket: str, prefix: str) -> None:
    location = s3.parse_url(url)
    assert location == s3.S3Location(bucket, prefix)
    assert location.object_key("e.json") == f"{prefix}e.json"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, s3.S3Settings(None, "us-east-1")),
        (
            {"ASYA_S3_ENDPOINT": "http://minio:9000"},
            s3.S3Settings("http://minio:9000", "us-east-1"),
        ),
        ({"AWS_ENDPOINT_URL": "https://s3.local"}, s3.S3Settings("https://s3.local", "us-east-1")),
        (
            {"ASYA_S3_ENDPOINT": "http://a:1", "AWS_ENDPOINT_URL": "http://b:2"},
            s3.S3Settings("http://a:1", "us-east-1"),
        ),
        ({"AWS_DEFAULT_REGION": "eu-west-1"}, s3.S3Settings(None, "eu-west-1")),
        (
            {"AWS_REGION": "eu-central-1", "AWS_DEFAULT_REGION": "eu-west-1"},
            s3.S3Settings(None, "eu-central-1"),
        ),
    ],
)
def test_settings_from_environment(env: dict[str, str], expected: s3.S3Settings) -> None:
    assert s3.settings_from(env) == expected


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"ASYA_S3_ENDPOINT": "minio:9000"}, "ASYA_S3_ENDPOINT"),
        ({"AWS_ENDPOINT_URL": "ftp://x"}, "AWS_ENDPOINT_URL"),
    ],
)
def test_an_endpoint_that_is_not_http_names_its_variable(
    env: dict[str, str], variable: str
) -> None:
    with pytest.raises(ValueError, match=f"{variable}=.* is not an http"):
        s3.settings_from(env)


def test_without_aioboto3_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aioboto3", None)  # makes `import aioboto3` fail
    monkeypatch.delitem(sys.modules, "asya_shared.stores.s3")
    with pytest.raises(ImportError, match=r"pip install 'asya\[s3\]'"):
        importlib.import_module("asya_shared.stores.s3")


# ------------------------------------------------------------------------------ against moto


@pytest.fixture
async def store(bucket: str) -> AsyncIterator[s3.S3Store]:
    opened = stores.open_store(f"s3://{bucket}")
    assert isinstance(opened, s3.S3Store)
    yield opened
    await opened.close()


def objects(endpoint: str, bucket: str) -> dict[str, bytes]:
    client = s3_client(endpoint)
    listing = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {
        item["Key"]: client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        for item in listing
    }


async def test_round_trip(store: s3.S3Store, s3_endpoint: str, bucket: str) -> None:
    data = '{"text": "héllo ✓"}'.encode()
    await store.put("e-1.json", data)
    assert await store.get("e-1.json") == data
    assert objects(s3_endpoint, bucket) == {"e-1.json": data}
    head = s3_client(s3_endpoint).head_object(Bucket=bucket, Key="e-1.json")
    assert head["ContentType"] == "application/json"


async def test_a_missing_key_reads_as_none(store: s3.S3Store) -> None:
    assert await store.get("nothing.json") is None


async def test_overwrite_replaces_the_value(store: s3.S3Store) -> None:
    await store.put("e-1.json", b"x" * 10_000)
    await store.put("e-1.json", b"short")
    assert await store.get("e-1.json") == b"short"


async def test_keys_live_under_the_prefix(s3_endpoint: str, bucket: str) -> None:
    prefixed = stores.open_store(f"s3://{bucket}/team/results/")
    bare = stores.open_store(f"s3://{bucket}")
    try:
        await prefixed.put("e-1.json", b"a")
        await prefixed.put("day/e-2.json", b"b")
        assert objects(s3_endpoint, bucket) == {
            "team/results/e-1.json": b"a",
            "team/results/day/e-2.json": b"b",
        }
        assert await prefixed.get("e-1.json") == b"a"
        assert await bare.get("e-1.json") is None
        assert await bare.get("team/e-1.json") is None
    finally:
        await prefixed.close()
        await bare.close()


async def test_one_client_serves_concurrent_calls(
    store: s3.S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[Any] = []
    new_client = store._new_client

    def counting() -> Any:
        opened.append(1)
        return new_client()

    monkeypatch.setattr(store, "_new_client", counting)
    await asyncio.gather(*(store.put(f"e-{i}.json", b"{}") for i in range(10)))
    await store.get("e-3.json")
    assert len(opened) == 1


async def test_a_missing_bucket_is_a_store_error(s3_endpoint: str) -> None:
    store = stores.open_store("s3://asya-no-such-bucket/prefix")
    try:
        with pytest.raises(StoreError, match="NoSuchBucket") as info:
            await store.put("e-1.json", b"{}")
        message = str(info.value)
        assert "s3://asya-no-such-bucket/prefix/e-1.json" in message
        assert "create bucket 'asya-no-such-bucket'" in message
        assert info.value.__cause__ is not None
        with pytest.raises(StoreError, match="NoSuchBucket"):
            await store.get("e-1.json")
    finally:
        await store.close()


async def test_an_unreachable_endpoint_is_a_store_error(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("ASYA_S3_ENDPOINT", nobody)
    store = stores.open_store("s3://some-bucket")
    try:
        with pytest.raises(StoreError, match=f"endpoint {nobody}"):
            await store.put("e-1.json", b"{}")
    finally:
        await store.close()


async def test_invalid_keys_are_refused_before_any_request(store: s3.S3Store) -> None:
    with pytest.raises(InvalidKey):
        await store.put("../e-1.json", b"{}")
    with pytest.raises(InvalidKey):
        await store.get("a/b/c.json")


# ----------------------------------------------------------------------------- list, delete


async def test_list_gives_every_key_sorted_and_filters_by_prefix(store: s3.S3Store) -> None:
    for key in ("b.json", "a.json", "day/c.json", "day/a.json"):
        await store.put(key, b"{}")
    assert await store.list() == ["a.json", "b.json", "day/a.json", "day/c.json"]
    assert await store.list("day/") == ["day/a.json", "day/c.json"]
    assert await store.list("b") == ["b.json"]
    assert await store.list("zzz") == []


async def test_list_pages_through_more_than_one_response(store: s3.S3Store) -> None:
    # S3 answers at most 1,000 keys per call: the store must follow the continuation.
    keys = [f"e-{i:04d}.json" for i in range(1_005)]
    await asyncio.gather(*(store.put(key, b"{}") for key in keys))
    assert await store.list() == keys


async def test_list_and_delete_stay_under_the_prefix(s3_endpoint: str, bucket: str) -> None:
    prefixed = stores.open_store(f"s3://{bucket}/team/sump")
    bare = stores.open_store(f"s3://{bucket}")
    try:
        await bare.put("e-1.json", b"outside")
        await prefixed.put("e-1.json", b"inside")
        await prefixed.put("day/e-2.json", b"inside")
        # Another tool's object under the prefix, deeper than any key.
        s3_client(s3_endpoint).put_object(Bucket=bucket, Key="team/sump/a/b/c.json", Body=b"")
        assert await prefixed.list() == ["day/e-2.json", "e-1.json"]
        await prefixed.delete("e-1.json")
        assert await prefixed.list() == ["day/e-2.json"]
        assert await bare.get("e-1.json") == b"outside"
    finally:
        await prefixed.close()
        await bare.close()


async def test_delete_removes_the_key_and_is_idempotent(
    store: s3.S3Store, s3_endpoint: str, bucket: str
) -> None:
    await store.put("e-1.json", b"{}")
    await store.delete("e-1.json")
    assert await store.get("e-1.json") is None
    assert objects(s3_endpoint, bucket) == {}
    await store.delete("e-1.json")  # already gone


async def test_list_and_delete_in_a_missing_bucket_are_store_errors(s3_endpoint: str) -> None:
    store = stores.open_store("s3://asya-no-such-bucket/prefix")
    try:
        with pytest.raises(StoreError, match=r"cannot list .*NoSuchBucket"):
            await store.list()
        with pytest.raises(StoreError, match=r"cannot delete .*NoSuchBucket"):
            await store.delete("e-1.json")
    finally:
        await store.close()


async def test_delete_refuses_invalid_keys_before_any_request(store: s3.S3Store) -> None:
    with pytest.raises(InvalidKey):
        await store.delete("../e-1.json")
