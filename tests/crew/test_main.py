"""main.py and __main__.py: `python -m asya_crew sink|sump` prepares and starts the runtime."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from asya_crew import main
from asya_shared import records
from tests.crew.conftest import REPO_ROOT, CrewFactory, crew_envelope


@pytest.fixture(autouse=True)
def restore_environ() -> Iterator[None]:
    # run() exports the mapping it is given into os.environ; keep tests independent.
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


# ------------------------------------------------------------------------ in-process: refusals


def test_an_unknown_role_names_the_accepted_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main.run("drain", {}) == 2
    err = capsys.readouterr().err
    assert "'drain'" in err
    assert "sink, sump" in err


@pytest.mark.parametrize(
    ("role", "variable"), [("sink", "ASYA_RESULT_STORE"), ("sump", "ASYA_SUMP_STORE")]
)
def test_a_missing_store_names_the_variable(
    role: str, variable: str, capsys: pytest.CaptureFixture[str]
) -> None:
    os.environ.pop(variable, None)
    assert main.run(role, {}) == 2
    assert f"{variable} is not set" in capsys.readouterr().err


def test_an_invalid_metrics_port_names_the_variable(capsys: pytest.CaptureFixture[str]) -> None:
    env = {"ASYA_RESULT_STORE": "file://x", "ASYA_CREW_METRICS_PORT": "http"}
    assert main.run("sink", env) == 2
    assert "ASYA_CREW_METRICS_PORT='http'" in capsys.readouterr().err


# -------------------------------------------------------------------- python -m asya_crew ...


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYA_")}
    return subprocess.run(
        [sys.executable, "-m", "asya_crew", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("args", [(), ("sink", "sump")])
def test_module_without_one_role_prints_usage(args: tuple[str, ...]) -> None:
    done = run_module(*args)
    assert done.returncode == 2
    assert "usage: python -m asya_crew {sink|sump|join|pause}" in done.stderr


def test_module_help() -> None:
    done = run_module("--help")
    assert done.returncode == 0
    assert "usage:" in done.stdout


def test_module_without_a_store_exits_2_naming_the_variable() -> None:
    done = run_module("sink")
    assert done.returncode == 2
    assert "ASYA_RESULT_STORE is not set" in done.stderr


def test_module_serves_the_sink_and_stops_on_sigterm(
    start_crew: CrewFactory, tmp_path: Path
) -> None:
    crew = start_crew(role="sink", env={"ASYA_RESULT_STORE": f"file://{tmp_path}"})
    assert json.loads(crew.ready_path.read_text())["handler"] == "asya_crew.sink.Sink.handle"
    envelope = crew_envelope()
    assert crew.invoke(envelope).status_code == 204
    assert (tmp_path / records.key(envelope["id"])).exists()
    code, _ = crew.stop()
    assert code == 0


def test_module_keeps_an_asya_handler_already_set(start_crew: CrewFactory, tmp_path: Path) -> None:
    handler = "asya_crew.sump.Sump.handle"
    crew = start_crew(
        role="sink",
        env={
            "ASYA_HANDLER": handler,
            "ASYA_RESULT_STORE": f"file://{tmp_path}/results",
            "ASYA_SUMP_STORE": f"file://{tmp_path}/sump",
        },
    )
    assert json.loads(crew.ready_path.read_text())["handler"] == handler


def test_module_exits_4_when_the_metrics_port_is_taken(
    start_crew: CrewFactory, tmp_path: Path
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        crew = start_crew(
            role="sink",
            env={
                "ASYA_RESULT_STORE": f"file://{tmp_path}",
                "ASYA_CREW_METRICS_PORT": str(port),
                "ASYA_CREW_METRICS_HOST": "127.0.0.1",
            },
            wait=False,
        )
        code, stderr = crew.wait_exit()
    assert code == 4
    assert f"cannot serve metrics on 127.0.0.1:{port}" in stderr
    assert "ASYA_CREW_METRICS_PORT" in stderr
