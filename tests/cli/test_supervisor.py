"""The `asya dev` supervisor restarting and stopping real child processes."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys
from typing import Any

import pytest

from asya_cli.dev_plan import ProcessSpec
from asya_cli.supervisor import Supervisor
from tests.support.waiting import eventually

# A child that runs until it is signalled.
SLEEPER = (sys.executable, "-c", "import time\nwhile True: time.sleep(1)")


def spec() -> ProcessSpec:
    return ProcessSpec(actor="a", role="sidecar", argv=SLEEPER, env=dict(os.environ), cwd=".")


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class GatedSpawns:
    """Holds every process start at a gate, to look at the supervisor mid-restart."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = 0
        self.pids: list[int] = []
        real = asyncio.create_subprocess_exec

        async def gated(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
            self.waiting += 1
            await self.gate.wait()
            self.waiting -= 1
            process = await real(*args, **kwargs)
            self.pids.append(process.pid)
            return process

        # The supervisor looks it up on the asyncio module at every start.
        monkeypatch.setattr(asyncio, "create_subprocess_exec", gated)


async def kill_and_hold_the_restart(supervisor: Supervisor, spawns: GatedSpawns) -> int:
    """SIGKILL the child and wait until its restart is held at the gate; the old pid."""
    old = supervisor.pid("a/sidecar")
    spawns.gate.clear()
    os.kill(old, signal.SIGKILL)
    await eventually(lambda: spawns.waiting == 1, "the restart to be under way")
    return old


async def test_a_restart_counts_only_once_its_process_exists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spawns = GatedSpawns(monkeypatch)
    supervisor = Supervisor([spec()], out=io.StringIO())
    await supervisor.start()
    try:
        old = await kill_and_hold_the_restart(supervisor, spawns)

        # Whoever sees the count must be able to signal the new process.
        assert supervisor.restarts("a/sidecar") == 0
        spawns.gate.set()
        await eventually(lambda: supervisor.restarts("a/sidecar") == 1, "the restart")
        new = supervisor.pid("a/sidecar")
        assert new != old
        assert running(new)
    finally:
        spawns.gate.set()
        await supervisor.stop(timeout=10)


async def test_a_process_started_while_stopping_does_not_outlive_the_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spawns = GatedSpawns(monkeypatch)
    supervisor = Supervisor([spec()], out=io.StringIO())
    await supervisor.start()
    old = await kill_and_hold_the_restart(supervisor, spawns)

    stopping = asyncio.create_task(supervisor.stop(timeout=10))
    await eventually(lambda: not running(old), "the stop to reap the old process")
    spawns.gate.set()  # the restart's process now starts, after the stop began
    await asyncio.wait_for(stopping, 30)

    assert all(not running(pid) for pid in spawns.pids)
