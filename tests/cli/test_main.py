"""The `asya` console script as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ASYA = Path(sys.executable).with_name("asya")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ASYA), *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def test_version() -> None:
    result = run("--version")

    assert result.returncode == 0
    assert result.stdout.startswith("asya ")


def test_no_command_prints_help_and_fails() -> None:
    result = run()

    assert result.returncode == 2
    assert "runtime" in result.stderr


def test_runtime_subcommand_is_the_runtime() -> None:
    env = {**os.environ, "ASYA_HANDLER": "not_a_module_anywhere.handler"}

    result = run("runtime", env=env)

    assert result.returncode == 3
    assert "no module named 'not_a_module_anywhere'" in result.stderr
