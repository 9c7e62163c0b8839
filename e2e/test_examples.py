"""Every example runs, the way its README says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"

pytestmark = pytest.mark.slow


def test_ticket_router_demo_routes_unsure_tickets_through_review() -> None:
    result = subprocess.run(
        [sys.executable, "demo.py"],
        cwd=EXAMPLES / "ticket-router",
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("(succeeded)") == 5
    assert "route   classify -> review -> respond" in result.stdout
    assert "route   classify -> respond" in result.stdout
    assert "asya dev stopped cleanly" in result.stdout
