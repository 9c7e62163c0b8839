"""The Asya sidecar: pulls envelopes from a queue, calls the runtime, routes results."""

import signal
import sys

__all__ = ["exit_on_sigterm_while_starting"]


def exit_on_sigterm_while_starting() -> None:
    """Until serve() takes SIGTERM over (to drain), the sidecar holds no envelope: a SIGTERM
    while it is still importing or connecting ends it cleanly (exit 0, as a finished drain
    does) instead of killing it by the signal (exit -15, which reads as a crash). Called
    first by both entry points, before the imports that take most of the start-up time."""
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))
