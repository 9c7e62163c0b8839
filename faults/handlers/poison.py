"""Handlers of the poison scenario, loaded by the real runtime like user code.

`middle` is b's handler: it raises for payloads marked `"poison": "raise"` (on every attempt,
so b's retry policy runs out) and otherwise does b's usual work. `killer` is k's handler: it
SIGKILLs its own runtime for payloads marked `"poison": "die"` (as a handler that exhausts
memory would be killed), so the sidecar sees the runtime die under that envelope on every
delivery.
"""

import os
import signal

import steps


class PoisonError(Exception):
    """Raised for a payload marked to fail on every attempt."""


def middle(payload):
    if payload.get("poison") == "raise":
        raise PoisonError(f"envelope {payload.get('id')} is marked to fail on every attempt")
    return steps.middle(payload)


def killer(payload):
    if payload.get("poison") == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    return {**payload, "trail": [*payload.get("trail", []), "k"]}
