"""Handlers of the pause tests (run by the real runtime)."""


def ask(payload):
    """Asks a person for what payload["pause"] says; with payload["insert"], puts x-pause
    into the route itself (a decision made at run time)."""
    if payload.get("insert"):
        yield "SET", ".route.next[:0]", ["x-pause"]
    if "pause" in payload:
        yield "SET", ".headers.x-asya-pause", payload["pause"]
    if "pause_timeout" in payload:
        yield "SET", ".headers.x-asya-pause-timeout", payload["pause_timeout"]
    yield {k: v for k, v in payload.items() if k not in ("pause", "pause_timeout", "insert")}


def deadline(payload):
    """The envelope's deadline as this actor sees it, kept in the payload."""
    seen = yield "GET", ".status.deadline_at"
    yield {**payload, "deadline_seen": [*payload.get("deadline_seen", []), seen]}
