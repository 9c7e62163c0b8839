"""A handler that kills its own runtime for some payloads (as one that runs out of memory
would), and holds others for a while so that they share the runtime's death."""

import os
import signal
import time


def maybe_die(payload):
    if payload.get("die"):
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(payload.get("hold_s", 0))
    return payload
