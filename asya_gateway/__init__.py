"""The gateway: the front door of Asya's pipelines (`asya gateway`).

Callers submit tasks, follow them (SSE) and read their results over the public port; sidecars
and the crew report each hop to the internal port. See docs/gateway.md.
"""

__all__: list[str] = []
