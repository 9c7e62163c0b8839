"""The handlers of the fault pipeline a -> b -> c, loaded by the real runtime.

`last` records every call it gets (one line per call, appended with a single write, which
O_APPEND keeps whole) so the harness can count duplicates at the last hop. The directory comes
from FAULTS_CALLS_DIR, set by the harness in the actor's environment.
"""

import os
import time


def first(payload):
    return {**payload, "trail": ["a"]}


def middle(payload):
    # A little work, so that a fault finds envelopes in the middle of being handled.
    time.sleep(payload.get("work_s", 0.005))
    return {**payload, "trail": [*payload.get("trail", []), "b"]}


def last(payload):
    record(payload["id"])
    return {**payload, "trail": [*payload.get("trail", []), "c"]}


def record(envelope_id, log="calls"):
    path = os.path.join(os.environ["FAULTS_CALLS_DIR"], f"{log}-{os.getpid()}.log")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{envelope_id} {time.time():.6f}\n".encode())
    finally:
        os.close(fd)
