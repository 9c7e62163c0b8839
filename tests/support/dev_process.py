"""`asya dev` run as a subprocess by a test: followed, waited for, and stopped as a user
stops it (Ctrl-C), which must end it cleanly."""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.waiting import wait_until

# Generous: the machine is shared, and only a failing test waits this long.
TIMEOUT_S = 120.0


@contextmanager
def serving(
    proc: subprocess.Popen[str], lines: list[str], *, timeout: float = TIMEOUT_S
) -> Iterator[str]:
    """`asya dev` started as `proc`: its output appended to `lines` as it comes, its ready
    line yielded once it is printed, and on leaving a Ctrl-C, which must end it cleanly."""

    def follow() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    def output() -> str:
        return "".join(lines[-60:])

    def ready() -> str | None:
        assert proc.poll() is None, "asya dev exited:\n" + output()
        return next((line for line in list(lines) if "asya dev: ready" in line), None)

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    try:
        line = wait_until(ready, what="asya dev's ready line", timeout=timeout, interval=0.1,
                          details=output)  # fmt: skip
        assert line is not None
        yield line
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        reader.join(timeout=10)
    assert code == 0, "asya dev did not stop cleanly:\n" + output()
