from __future__ import annotations

import pytest

from asya_sidecar.tracing import continue_trace

TRACE, SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
NEW_TRACE, NEW_SPAN = "a" * 32, "b" * 16


def test_valid_traceparent_keeps_its_trace_and_flags_with_a_new_span() -> None:
    ctx = continue_trace(f"00-{TRACE}-{SPAN}-00", new_trace_id=NEW_TRACE, new_span_id=NEW_SPAN)

    assert ctx.traceparent == f"00-{TRACE}-{NEW_SPAN}-00"
    assert ctx.trace_id == TRACE


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        42,
        "garbage",
        f"01-{TRACE}-{SPAN}-01",
        f"00-{TRACE.upper()}-{SPAN}-01",
        f"00-{'0' * 32}-{SPAN}-01",
        f"00-{TRACE}-{'0' * 16}-01",
        f"00-{TRACE}-{SPAN}",
    ],
)
def test_missing_or_invalid_traceparent_starts_a_new_trace(header: object) -> None:
    ctx = continue_trace(header, new_trace_id=NEW_TRACE, new_span_id=NEW_SPAN)

    assert ctx.traceparent == f"00-{NEW_TRACE}-{NEW_SPAN}-01"
