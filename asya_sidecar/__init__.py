"""The Asya sidecar: pulls envelopes from a queue, calls the runtime, routes results."""

__all__: list[str] = []
