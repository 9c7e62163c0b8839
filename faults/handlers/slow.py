"""b's handler in the slow-handler scenario: records every call (so that a second call of the
same envelope at b, after its lease ran out, shows at once), then works `work_s` seconds."""

import os
import time


def middle(payload):
    path = os.path.join(os.environ["FAULTS_CALLS_DIR"], f"middle-{os.getpid()}.log")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{payload['id']} {time.time():.6f}\n".encode())
    finally:
        os.close(fd)
    time.sleep(payload["work_s"])
    return {**payload, "trail": [*payload.get("trail", []), "b"]}
