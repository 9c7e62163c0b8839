"""stores/__init__.py: the one place mapping a URL to a store."""

from __future__ import annotations

from pathlib import Path

import pytest

from asya_shared import stores
from asya_shared.stores import file, s3


def test_file_urls_open_a_file_store(tmp_path: Path) -> None:
    store = stores.open_store(f"file://{tmp_path}/results")
    assert isinstance(store, file.FileStore)
    assert isinstance(store, stores.ResultStore)


def test_s3_urls_open_an_s3_store_without_connecting() -> None:
    store = stores.open_store("s3://results-bucket/prod", environ={})
    assert isinstance(store, s3.S3Store)
    assert isinstance(store, stores.ResultStore)
    assert store.location == s3.S3Location("results-bucket", "prod/")


@pytest.mark.parametrize(
    "url",
    [
        "",
        "results",
        "/abs/results",
        "http://host/results",
        "ftp://x",
        "file:/x",
        "File://x",
        "gs://bucket",
        "s3:/bucket",
    ],
)
def test_unknown_schemes_show_the_url_and_the_accepted_forms(url: str) -> None:
    with pytest.raises(ValueError, match="accepted forms") as info:
        stores.open_store(url, environ={})
    assert repr(url) in str(info.value)
    assert "file://" in str(info.value)
    assert "s3://" in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "file://",
        "file://   ",
        "file://dir?x=1",
        "file://dir#frag",
        "s3://",
        "s3://ab",
        "s3://Upper-Case",
        "s3://-bucket",
        "s3://user:secret@bucket",
        "s3://bucket:9000/prefix",
        "s3://bucket:port",
        "s3://bucket/prefix?versioning=1",
    ],
)
def test_malformed_urls_show_the_url_and_the_form(url: str) -> None:
    with pytest.raises(ValueError, match="use ") as info:
        stores.open_store(url, environ={})
    assert repr(url) in str(info.value)


def test_credentials_in_an_s3_url_are_refused_with_where_they_belong() -> None:
    with pytest.raises(ValueError, match="credentials come from the AWS chain"):
        stores.open_store("s3://AKIA:secret@bucket", environ={})


@pytest.mark.parametrize("url", ["file://results", "file:///srv/sump", "s3://bucket/sump"])
def test_check_url_accepts_what_open_store_opens_and_creates_nothing(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert stores.check_url(url) == url
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://x", "accepted forms"),
        ("file://", "names no directory"),
        ("s3://Upper", "not a valid bucket name"),
        ("s3://user:secret@bucket", "credentials come from"),
    ],
)
def test_check_url_says_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        stores.check_url(url)
