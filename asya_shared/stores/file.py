"""The file:// result store: one file per key under a directory on local disk.

Used by `asya dev` and by single-node set-ups with a persistent volume. Writes go to a
temporary file in the same directory, are flushed to disk, then renamed over the target, so a
reader never sees a half-written record and a crash never leaves one behind. The blocking file
calls run in a worker thread so that the event loop keeps serving other envelopes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets

from asya_shared.stores import base

SCHEME = "file://"
FORMS = "file://relative/dir or file:///absolute/dir"


class FileStore:
    """A ResultStore keeping each key as a file under `root` (created if missing)."""

    def __init__(self, root: str) -> None:
        # Resolved now: a later chdir must not move the store.
        self.root = os.path.abspath(root)
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as exc:
            raise base.StoreError(
                f"cannot create the result directory {self.root!r}: {exc}"
            ) from exc

    @classmethod
    def from_url(cls, url: str) -> FileStore:
        return cls(parse_url(url))

    def __repr__(self) -> str:
        return f"FileStore({self.root!r})"

    async def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            await asyncio.to_thread(_write_atomically, path, data)
        except OSError as exc:
            raise base.StoreError(f"cannot write {key!r} to {self.root!r}: {exc}") from exc

    async def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            return await asyncio.to_thread(_read, path)
        except OSError as exc:
            raise base.StoreError(f"cannot read {key!r} from {self.root!r}: {exc}") from exc

    async def list(self, prefix: str = "") -> list[str]:
        try:
            keys = await asyncio.to_thread(_keys_under, self.root)
        except OSError as exc:
            raise base.StoreError(f"cannot list the keys in {self.root!r}: {exc}") from exc
        return sorted(key for key in keys if key.startswith(prefix))

    async def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            await asyncio.to_thread(_remove, path)
        except OSError as exc:
            raise base.StoreError(f"cannot delete {key!r} from {self.root!r}: {exc}") from exc

    async def close(self) -> None:
        """Nothing to release: every call opens and closes its own file."""

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *base.check_key(key).split("/"))


def parse_url(url: str) -> str:
    """The directory named by a file:// URL: everything after the scheme, taken literally.

    `file://.asya/results` is relative to the working directory, `file:///srv/results` is
    absolute. There is no host part: `file://localhost/x` means the relative path
    `localhost/x`.
    """
    if not url.startswith(SCHEME):
        raise ValueError(f"result store URL {url!r} is not a file:// URL; use {FORMS}")
    path = url[len(SCHEME) :]
    if not path.strip():
        raise ValueError(f"result store URL {url!r} names no directory; use {FORMS}")
    if "?" in path or "#" in path or "\x00" in path:
        raise ValueError(
            f"result store URL {url!r}: a query, fragment or NUL is not allowed; use {FORMS}"
        )
    return path


def _write_atomically(path: str, data: bytes) -> None:
    directory, name = os.path.split(path)
    # Re-created on every write, so a cleaned-up directory does not stop the crew.
    os.makedirs(directory, exist_ok=True)
    # Same directory as the target: os.replace is atomic only within one file system. The
    # leading dot and random part keep concurrent writers of one key from sharing a file.
    temporary = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            # The sidecar acks the envelope once we return: the bytes must survive a crash.
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    # The rename itself is durable only once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def _keys_under(root: str) -> list[str]:
    """The keys of the files under `root`, at most one directory deep (as keys are).

    A write in progress is a hidden temporary file, and no key starts with a dot (check_key
    refuses "." and ".."; records.key never writes one), so hidden files are skipped: a
    listing never offers a record that is not there yet.
    """
    keys: list[str] = []
    try:
        top = list(os.scandir(root))
    except FileNotFoundError:  # removed since the store was opened: holds nothing
        return keys
    for entry in top:
        if entry.name.startswith("."):
            continue
        if entry.is_dir(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                keys.extend(
                    f"{entry.name}/{inner.name}"
                    for inner in os.scandir(entry.path)
                    if not inner.name.startswith(".") and inner.is_file()
                )
        elif entry.is_file():
            keys.append(entry.name)
    return [key for key in keys if base.is_valid_key(key)]


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return  # already gone: deleting is idempotent
    # Like a write, the removal is durable only once the directory entry is on disk.
    _fsync_directory(os.path.dirname(path))
