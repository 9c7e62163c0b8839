"""stores/file.py: one file per key, written atomically."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from asya_shared import stores
from asya_shared.stores import InvalidKey, StoreError, file


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "results"


@pytest.fixture
def store(root: Path) -> file.FileStore:
    return file.FileStore.from_url(f"file://{root}")


def replace_with_file(root: Path) -> None:
    """Put a plain file where the store's directory was: writes then fail, even for root."""
    os.rmdir(root)
    root.write_text("a file where the directory was")


def leftovers(root: Path) -> list[str]:
    return [p.name for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_opening_creates_the_directory(root: Path, store: file.FileStore) -> None:
    assert root.is_dir()
    assert store.root == str(root)


def test_relative_urls_resolve_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = file.FileStore.from_url("file://.asya/results")
    assert store.root == str(tmp_path / ".asya" / "results")
    assert (tmp_path / ".asya" / "results").is_dir()
    # A later chdir does not move the store.
    monkeypatch.chdir("/")
    assert store.root == str(tmp_path / ".asya" / "results")


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("file:///srv/results", "/srv/results"),
        ("file://.asya/results", ".asya/results"),
        ("file://results", "results"),
        ("file://localhost/x", "localhost/x"),
    ],
)
def test_parse_url(url: str, path: str) -> None:
    assert file.parse_url(url) == path


def test_a_directory_that_cannot_be_created_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match="cannot create the result directory"):
        stores.open_store(f"file://{blocker}/results")


async def test_round_trip(store: file.FileStore, root: Path) -> None:
    await store.put("e-1.json", b'{"x": "\xc3\xa9"}')
    assert await store.get("e-1.json") == b'{"x": "\xc3\xa9"}'
    assert (root / "e-1.json").read_bytes() == b'{"x": "\xc3\xa9"}'
    assert leftovers(root) == []


async def test_a_missing_key_reads_as_none(store: file.FileStore) -> None:
    assert await store.get("nothing.json") is None
    assert await store.get("no-dir/nothing.json") is None


async def test_one_sub_level_is_a_sub_directory(store: file.FileStore, root: Path) -> None:
    await store.put("2026-11-24/e-1.json", b"{}")
    assert (root / "2026-11-24" / "e-1.json").read_bytes() == b"{}"
    assert await store.get("2026-11-24/e-1.json") == b"{}"


async def test_overwrite_replaces_the_whole_value(store: file.FileStore, root: Path) -> None:
    await store.put("e-1.json", b"x" * 10_000)
    await store.put("e-1.json", b"short")
    assert await store.get("e-1.json") == b"short"
    assert leftovers(root) == []


async def test_concurrent_writers_of_one_key_leave_one_whole_value(
    store: file.FileStore, root: Path
) -> None:
    values = [bytes([ord("a") + i]) * 100_000 for i in range(8)]
    await asyncio.gather(*(store.put("e-1.json", value) for value in values))
    assert await store.get("e-1.json") in values
    assert leftovers(root) == []


async def test_a_failed_write_keeps_the_old_value(
    store: file.FileStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.put("e-1.json", b"old")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(StoreError, match="No space left") as info:
        await store.put("e-1.json", b"new")
    assert isinstance(info.value.__cause__, OSError)
    monkeypatch.undo()
    assert await store.get("e-1.json") == b"old"
    assert leftovers(root) == []


async def test_a_directory_removed_later_is_recreated(store: file.FileStore, root: Path) -> None:
    os.rmdir(root)
    await store.put("e-1.json", b"{}")
    assert (root / "e-1.json").exists()


async def test_io_errors_become_store_errors_naming_key_and_directory(
    store: file.FileStore, root: Path
) -> None:
    replace_with_file(root)
    with pytest.raises(StoreError, match=r"cannot write 'e-1\.json'") as info:
        await store.put("e-1.json", b"{}")
    assert str(root) in str(info.value)
    assert isinstance(info.value.__cause__, OSError)
    with pytest.raises(StoreError, match=r"cannot read 'e-1\.json'"):
        await store.get("e-1.json")


@pytest.mark.parametrize("key", ["../escape.json", "a/b/c.json", "/etc/passwd", "a b", ""])
async def test_invalid_keys_are_refused_before_touching_the_disk(
    store: file.FileStore, tmp_path: Path, key: str
) -> None:
    with pytest.raises(InvalidKey, match="invalid key"):
        await store.put(key, b"{}")
    with pytest.raises(InvalidKey, match="invalid key"):
        await store.get(key)
    assert not (tmp_path / "escape.json").exists()


async def test_close_is_harmless(store: file.FileStore) -> None:
    await store.close()


# ----------------------------------------------------------------------------- list, delete


async def test_list_gives_every_key_sorted_and_filters_by_prefix(store: file.FileStore) -> None:
    for key in ("b.json", "a.json", "day/c.json", "day/a.json"):
        await store.put(key, b"{}")
    assert await store.list() == ["a.json", "b.json", "day/a.json", "day/c.json"]
    assert await store.list("day/") == ["day/a.json", "day/c.json"]
    assert await store.list("b") == ["b.json"]
    assert await store.list("zzz") == []


async def test_list_leaves_out_writes_in_progress_and_foreign_files(
    store: file.FileStore, root: Path
) -> None:
    await store.put("e-1.json", b"{}")
    # What _write_atomically leaves while a write is under way, at both levels.
    (root / ".e-2.json.0123456789ab.tmp").write_bytes(b"{")
    (root / "day").mkdir()
    (root / "day" / ".e-3.json.0123456789ab.tmp").write_bytes(b"{")
    # Nothing check_key accepts: a file with a space, and one two levels down.
    (root / "not a key").write_bytes(b"")
    (root / "day" / "deep").mkdir()
    (root / "day" / "deep" / "e-4.json").write_bytes(b"{}")
    assert await store.list() == ["e-1.json"]


async def test_list_of_a_removed_directory_is_empty(store: file.FileStore, root: Path) -> None:
    os.rmdir(root)
    assert await store.list() == []


async def test_delete_removes_the_key_and_is_idempotent(store: file.FileStore, root: Path) -> None:
    await store.put("e-1.json", b"{}")
    await store.put("day/e-2.json", b"{}")
    await store.delete("e-1.json")
    await store.delete("day/e-2.json")
    assert await store.get("e-1.json") is None
    assert await store.list() == []
    assert not (root / "e-1.json").exists()
    await store.delete("e-1.json")  # already gone
    await store.delete("never-there/e-9.json")


async def test_list_and_delete_errors_are_store_errors(store: file.FileStore, root: Path) -> None:
    # A directory where the record's file would be: unlink fails, even for root.
    (root / "e-1.json").mkdir()
    with pytest.raises(StoreError, match=r"cannot delete 'e-1\.json'") as info:
        await store.delete("e-1.json")
    assert str(root) in str(info.value)
    os.rmdir(root / "e-1.json")
    replace_with_file(root)
    with pytest.raises(StoreError, match="cannot list the keys in") as info:
        await store.list()
    assert isinstance(info.value.__cause__, OSError)


async def test_delete_refuses_invalid_keys(store: file.FileStore, tmp_path: Path) -> None:
    (tmp_path / "escape.json").write_bytes(b"{}")
    with pytest.raises(InvalidKey):
        await store.delete("../escape.json")
    assert (tmp_path / "escape.json").exists()
