"""b's handler in the slow-handler scenario: records every call (so that a second call of the
same envelope at b, after its lease ran out, shows at once), then works `work_s` seconds."""

import time

from steps import record


def middle(payload):
    record(payload["id"], log="middle")
    time.sleep(payload["work_s"])
    return {**payload, "trail": [*payload.get("trail", []), "b"]}
