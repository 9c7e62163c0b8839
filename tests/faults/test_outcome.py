"""The fault suite's counting rules: what is lost, what is a duplicate, which fault it
belongs to (faults/outcome.py)."""

from __future__ import annotations

from faults.outcome import BEFORE_ANY_FAULT, Call, duplicates_per_fault, tally


def test_duplicates_go_to_the_latest_fault_before_them() -> None:
    calls = [
        Call("a", 1.0), Call("a", 5.5),  # after the fault at 5
        Call("b", 2.0), Call("b", 11.0), Call("b", 12.0),  # two after the fault at 10
        Call("c", 3.0),
    ]  # fmt: skip
    assert duplicates_per_fault(calls, [5.0, 10.0]) == {0: 1, 1: 2}


def test_a_duplicate_before_any_fault_has_its_own_bucket() -> None:
    assert duplicates_per_fault([Call("a", 1.0), Call("a", 2.0)], [5.0]) == {BEFORE_ANY_FAULT: 1}


def test_the_first_call_is_never_a_duplicate_whatever_the_order_recorded() -> None:
    # Two runtime processes append to two logs; read back, a later call may come first.
    assert duplicates_per_fault([Call("a", 9.0), Call("a", 1.0)], [5.0]) == {0: 1}


def test_tally_counts_each_id_once_and_only_ids_sent() -> None:
    outcome = tally(
        scenario="s",
        transport="local",
        sent=["a", "b", "c", "d"],
        sink_phases={"a": "succeeded", "b": "failed", "old": "succeeded"},
        sump_ids=["b", "c", "old"],
        calls=[Call("a", 1.0), Call("a", 6.0), Call("a", 7.0)],
        fault_times=[5.0],
        seconds=3.21,
    )
    assert (outcome.sent, outcome.succeeded, outcome.failed, outcome.in_sump) == (4, 1, 1, 2)
    assert outcome.lost == 1  # d: neither stored by x-sink nor held by x-sump
    assert (outcome.duplicates, outcome.max_dup_per_fault, outcome.faults_injected) == (2, 2, 1)
    assert outcome.seconds == 3.2
    assert outcome.passed


def test_the_json_line_has_the_published_keys() -> None:
    outcome = tally(
        scenario="s", transport="sqs", sent=[], sink_phases={}, sump_ids=[], calls=[],
        fault_times=[], seconds=0,
    )  # fmt: skip
    outcome.check(False, "why")
    line = outcome.to_json()
    assert list(line)[:11] == [
        "scenario", "transport", "sent", "succeeded", "failed", "in_sump", "lost",
        "duplicates", "faults_injected", "max_dup_per_fault", "seconds",
    ]  # fmt: skip
    assert (line["passed"], line["problems"]) == (False, ["why"])
