"""Reasons renamed over time still read as their current name."""

from __future__ import annotations

from asya_shared import wire
from asya_sidecar.envelope import Reason


def test_the_old_name_of_a_handler_error_reads_as_the_new_one() -> None:
    assert Reason.HANDLER_ERROR.value == "HandlerError"
    assert wire.canonical_reason("RuntimeError") == Reason.HANDLER_ERROR.value


def test_current_and_unknown_reasons_are_left_as_they_are() -> None:
    assert wire.canonical_reason("HandlerError") == "HandlerError"
    assert wire.canonical_reason("Timeout") == "Timeout"
    assert wire.canonical_reason("SomethingNew") == "SomethingNew"
    assert wire.canonical_reason(None) is None


def test_no_current_reason_is_also_an_old_name() -> None:
    current = {reason.value for reason in Reason}
    assert not current & set(wire.RENAMED_REASONS)
    assert set(wire.RENAMED_REASONS.values()) <= current
