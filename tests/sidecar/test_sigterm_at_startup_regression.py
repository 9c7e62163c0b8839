"""A SIGTERM that reaches a sidecar while it is still starting ends it with exit code 0.

Found by the fault suite (`python -m faults --scenario sidecar-term`): a sidecar restarted
after a drain was stopped again before it had taken SIGTERM over, and died by the signal
(exit -15) instead of exiting as a drained sidecar does. Here start-up is held deterministically
inside an import (a stand-in `uvloop` on PYTHONPATH that waits), and the signal is sent there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.waiting import wait_until

SLOW_IMPORT = """
import pathlib, time
pathlib.Path(__file__).with_name("importing").touch()
time.sleep(60)
"""


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param([sys.executable, "-m", "asya_sidecar"], id="python-m"),
        # What the operator's Deployment runs.
        pytest.param([sys.executable, "-m", "asya_cli", "sidecar"], id="asya-sidecar"),
    ],
)
def test_sigterm_during_startup_exits_cleanly(tmp_path: Path, argv: list[str]) -> None:
    (tmp_path / "uvloop.py").write_text(SLOW_IMPORT)
    environ = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ASYA_")},
        "PYTHONPATH": str(tmp_path),
        "ASYA_ACTOR": "a",
        "ASYA_TRANSPORT": "local",
        "ASYA_STATE_DIR": str(tmp_path / "state"),
        "ASYA_SOCKET_DIR": str(tmp_path),
        "ASYA_METRICS_PORT": "0",
    }
    proc = subprocess.Popen(
        argv,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(
            lambda: (tmp_path / "importing").exists() or proc.poll() is not None,
            what="the sidecar to reach its (held) event-loop import",
            timeout=30,
        )
        assert proc.poll() is None, f"the sidecar exited early:\n{proc.communicate()[0]}"
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, f"exit code {code}:\n{proc.communicate()[0]}"
