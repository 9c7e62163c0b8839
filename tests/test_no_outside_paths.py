"""The repository stands alone: no file reaches the folder beside our checkouts by a relative
path. What the tests need from there is copied into tests/data/ (see its README.md); a
user's clone has no such folder."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# Built from its parts so that this file does not match itself.
NEEDLE = "/".join(["..", "shared"])


def repository_files() -> list[str]:
    """Tracked files, and untracked ones that .gitignore does not exclude."""
    listing = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [name for name in listing.split("\0") if name]


def mentions(path: Path) -> list[str]:
    """`file:line: text` for each line of a text file that names the outside folder."""
    if not path.is_file():  # listed by git but deleted in the working tree, or a submodule
        return []
    data = path.read_bytes()
    if b"\0" in data:  # binary
        return []
    text = data.decode("utf-8", errors="replace")
    return [
        f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}"
        for number, line in enumerate(text.splitlines(), start=1)
        if NEEDLE in line
    ]


def test_no_file_mentions_the_folder_beside_the_repository() -> None:
    found = [hit for name in repository_files() for hit in mentions(REPO_ROOT / name)]
    assert not found, (
        f"{len(found)} line(s) mention {NEEDLE}, which exists only beside our checkouts; "
        "copy what is needed into tests/data/ and point there:\n" + "\n".join(found)
    )
