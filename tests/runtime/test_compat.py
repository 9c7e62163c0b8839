"""The runtime runs on the user's interpreter, so it must work on every Python we claim (3.8+).

Interpreters are looked up on PATH and under pyenv; a missing one is skipped with its name.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess

import pytest

from .conftest import RuntimeFactory

VERSIONS = ["3.8", "3.9", "3.10", "3.11", "3.12", "3.13"]


def find_python(version: str) -> str | None:
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    pattern = os.path.join(pyenv_root, "versions", f"{version}.*", "bin", "python")
    candidates = [*sorted(glob.glob(pattern)), shutil.which(f"python{version}")]
    for candidate in candidates:
        if candidate and runs_as(candidate, version):
            return candidate
    return None


def runs_as(python: str, version: str) -> bool:
    """pyenv shims exist for versions that are not active, so ask the interpreter itself."""
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except OSError:
        return False
    return out.stdout.strip() == version


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("handler", ["kinds.echo", "abi.async_script", "kinds.Model.stream"])
def test_runtime_serves_on_older_and_newer_interpreters(
    start_runtime: RuntimeFactory, version: str, handler: str
) -> None:
    python = find_python(version)
    if python is None:
        pytest.skip(f"no Python {version} interpreter on this machine (PATH or pyenv)")
    runtime = start_runtime(handler, python=python, concurrency=2)

    payload = {"ops": [["SET", ".route.next[:0]", ["audit"]], ["EMIT", "x"]]}
    response = runtime.invoke(payload)

    assert response.status_code == 200, response.text
    assert runtime.client.get("/healthz").status_code == 200
    code, stderr = runtime.stop()
    assert code == 0, stderr
