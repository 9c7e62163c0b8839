"""W3C trace context (`traceparent`): keep the trace id across hops, give each hop a span.

Pure: the caller supplies random ids, so the same inputs always give the same header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# version-traceid-parentid-flags, lower-case hex (https://www.w3.org/TR/trace-context/)
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16


@dataclass(frozen=True)
class TraceContext:
    trace_id: str
    span_id: str  # this hop's span: the parent of whatever the hop sends on
    flags: str = "01"

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


def continue_trace(traceparent: object, *, new_trace_id: str, new_span_id: str) -> TraceContext:
    """This hop's context: the incoming trace when it is valid, otherwise a new trace."""
    if isinstance(traceparent, str):
        match = _TRACEPARENT.match(traceparent.strip())
        if match and match.group(1) != _ZERO_TRACE and match.group(2) != _ZERO_SPAN:
            return TraceContext(match.group(1), new_span_id, match.group(3))
    return TraceContext(new_trace_id, new_span_id)
