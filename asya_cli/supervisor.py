"""Runs and watches the processes of `asya dev`, the way a kubelet watches a pod's containers.

A process that dies is restarted after a growing delay, so killing a sidecar behaves as on a
cluster. A process that exits with a configuration error (exit code 2 or 3: bad settings, a
handler that cannot be loaded) is not restarted: `asya dev` stops and shows its last lines.
Every child's output is copied to ours, each line prefixed with `[actor/role]`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import time
from collections.abc import Sequence
from typing import TextIO

from asya_cli.dev_plan import ProcessSpec

CONFIG_EXIT_CODES = (2, 3)  # runtime and sidecar: invalid config / handler cannot load
RESTART_INITIAL_S, RESTART_MAX_S = 0.5, 10.0
STABLE_AFTER_S = 30.0  # a process that ran this long restarts with the initial delay again


class SupervisorError(Exception):
    """A child failed in a way restarting cannot fix."""


class _Child:
    def __init__(self, spec: ProcessSpec) -> None:
        self.spec = spec
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.exit_codes: list[int] = []
        self.started_at = 0.0
        self.tail: collections.deque[str] = collections.deque(maxlen=20)
        self.watcher: asyncio.Task[None] | None = None
        self.copier: asyncio.Task[None] | None = None


class Supervisor:
    def __init__(self, specs: Sequence[ProcessSpec], *, out: TextIO) -> None:
        self._children = [_Child(spec) for spec in specs]
        self._out = out
        self._stopping = False
        self._stop_requested = asyncio.Event()
        self.failure: asyncio.Future[SupervisorError] | None = None

    def pid(self, name: str) -> int:
        """The current pid of `actor/role` (it changes when the process is restarted)."""
        child = self._child(name)
        if child.proc is None:
            raise KeyError(f"{name} is not running")
        return child.proc.pid

    def restarts(self, name: str) -> int:
        return self._child(name).restarts

    def exit_codes(self, name: str) -> list[int]:
        """Exit codes of every earlier run of `actor/role`, oldest first."""
        return list(self._child(name).exit_codes)

    def _child(self, name: str) -> _Child:
        for child in self._children:
            if child.spec.name == name:
                return child
        raise KeyError(name)

    async def start(self) -> None:
        self.failure = asyncio.get_running_loop().create_future()
        for child in self._children:
            await self._spawn(child)
            child.watcher = asyncio.create_task(self._watch(child))

    async def wait_healthy(self, timeout: float) -> None:
        """Until every sidecar answers /healthz with 200; raises SupervisorError otherwise."""
        deadline = time.monotonic() + timeout
        pending = [c for c in self._children if c.spec.health_port is not None]
        while pending:
            if self.failure is not None and self.failure.done():
                raise self.failure.result()
            pending = [c for c in pending if not await _healthy(c.spec.health_port)]
            if not pending:
                return
            if time.monotonic() > deadline:
                waiting = ", ".join(c.spec.name for c in pending)
                raise SupervisorError(f"not healthy after {timeout:g}s: {waiting}")
            await asyncio.sleep(0.1)

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop sidecars first (they drain and requeue), then runtimes, then the gateway
        (last, so that it takes the final reports of the others)."""
        self._stopping = True
        self._stop_requested.set()
        for role in ("sidecar", "runtime", "gateway"):
            group = [c for c in self._children if c.spec.role == role]
            for child in group:
                _signal(child, signal.SIGTERM)
            await asyncio.gather(*(self._reap(child, timeout) for child in group))
        # Not cancelled: a watcher in the middle of a restart would leave the new process
        # behind. Each one returns promptly now (see _watch and _spawn).
        watchers = [c.watcher for c in self._children if c.watcher is not None]
        if watchers:
            await asyncio.wait(watchers, timeout=timeout)
        for child in self._children:
            if child.copier is not None:
                await child.copier  # the process is gone, so its output ends

    async def _reap(self, child: _Child, timeout: float) -> None:
        if child.proc is None:
            return
        try:
            await asyncio.wait_for(child.proc.wait(), timeout)
        except TimeoutError:
            self._write(child, f"did not stop within {timeout:g}s; killing it")
            _signal(child, signal.SIGKILL)
            await child.proc.wait()

    async def _spawn(self, child: _Child) -> None:
        child.proc = await asyncio.create_subprocess_exec(
            *child.spec.argv,
            cwd=child.spec.cwd,
            env=dict(child.spec.env),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # our Ctrl-C reaches the children only through us
        )
        child.started_at = time.monotonic()
        assert child.proc.stdout is not None
        child.copier = asyncio.create_task(self._copy_output(child, child.proc.stdout))
        if self._stopping:
            # stop() came while this process was being started, and has already signalled
            # and reaped the one before it: this one has taken no work yet.
            _signal(child, signal.SIGKILL)

    async def _watch(self, child: _Child) -> None:
        delay = RESTART_INITIAL_S
        while True:
            assert child.proc is not None
            code = await child.proc.wait()
            child.exit_codes.append(code)
            if self._stopping:
                return
            if code in CONFIG_EXIT_CODES:
                lines = "\n    ".join(child.tail)
                self._fail(SupervisorError(
                    f"{child.spec.name} exited with code {code} (configuration error):\n"
                    f"    {lines}"
                ))  # fmt: skip
                return
            if time.monotonic() - child.started_at > STABLE_AFTER_S:
                delay = RESTART_INITIAL_S
            self._write(child, f"exited with code {code}; restarting in {delay:.1f}s")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stop_requested.wait()
            if self._stopping:
                return
            delay = min(delay * 2, RESTART_MAX_S)
            await self._spawn(child)
            # Counted once the new process exists, so that whoever sees the count can also
            # see (and signal) the new pid.
            child.restarts += 1

    def _fail(self, error: SupervisorError) -> None:
        if self.failure is not None and not self.failure.done():
            self.failure.set_result(error)

    async def _copy_output(self, child: _Child, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip()
            child.tail.append(text)
            self._write(child, text)

    def _write(self, child: _Child, text: str) -> None:
        self._out.write(f"[{child.spec.name}] {text}\n")
        self._out.flush()


def _signal(child: _Child, signum: int) -> None:
    if child.proc is not None and child.proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.proc.pid, signum)


async def _healthy(port: int | None) -> bool:
    if port is None:
        return True
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 2)
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
    return status_line.startswith(b"HTTP/1.1 200")
