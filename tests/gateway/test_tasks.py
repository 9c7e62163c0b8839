"""The task ladder (asya_gateway/tasks.py), pure: how reports move a task, forward only.

The property tests state what makes reporting safe to batch, retry and deliver out of order:
whatever order and however often a task's reports arrive, it ends where the in-order
sequence leaves it, and its status never steps back on the way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asya_gateway.tasks import (
    TERMINAL,
    Task,
    TaskStatus,
    advance,
    cancel,
    position,
    progress_of,
    rank,
    status_of_report,
)
from asya_shared import wire
from asya_shared.wire import error_details
from tests.gateway.builders import at, lifecycle, make_task, report, route_at

ACTORS = ("a", "b", "c")


def run(task: Task, reports: Sequence[wire.HopReport]) -> Task:
    for each in reports:
        task = advance(task, each) or task
    return task


def failure(task_id: str, hop: int, *, when: float = 50.0) -> wire.HopReport:
    return report(
        task_id,
        "failed",
        route_at(ACTORS, hop),
        when=when,
        reason="RuntimeError",
        error=error_details("RuntimeError", "boom"),
    )


# -- the ladder ----------------------------------------------------------------------------


def test_the_ladder_orders_statuses_with_all_terminal_ones_last() -> None:
    assert rank(TaskStatus.PENDING) < rank(TaskStatus.RUNNING) < rank(TaskStatus.PAUSED)
    assert {rank(status) for status in TERMINAL} == {rank(TaskStatus.PAUSED) + 1}
    assert {TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELED} == TERMINAL


@pytest.mark.parametrize(
    ("event", "status"),
    [
        ("received", TaskStatus.RUNNING),
        ("processing", TaskStatus.RUNNING),
        ("retrying", TaskStatus.RUNNING),
        ("routed", TaskStatus.RUNNING),
        ("paused", TaskStatus.PAUSED),
        ("succeeded", TaskStatus.SUCCEEDED),
        ("failed", TaskStatus.FAILED),
        ("canceled", TaskStatus.CANCELED),
        ("fly", None),
    ],
)
def test_each_report_event_means_one_status(event: str, status: TaskStatus | None) -> None:
    assert status_of_report(report("t", event, route_at(ACTORS, 0))) == status


def test_the_first_report_starts_a_pending_task() -> None:
    task = make_task("t")

    after = advance(task, report("t", "received", route_at(ACTORS, 0), when=3))

    assert after is not None
    assert after.status is TaskStatus.RUNNING
    assert after.actor == "a"
    assert after.progress == 0.0
    assert after.updated_at == at(3)
    assert after.created_at == task.created_at


def test_an_in_order_life_ends_succeeded_with_its_result() -> None:
    reports = lifecycle("t", ACTORS, result={"answer": 42})

    done = run(make_task("t"), reports)

    assert done.status is TaskStatus.SUCCEEDED
    assert done.result == {"answer": 42}
    assert done.progress == 1.0
    assert done.actor == "x-sink"
    assert done.error is None
    assert done.updated_at == reports[-1]["at"]


def test_progress_follows_the_route() -> None:
    task = make_task("t")
    seen = []
    for each in lifecycle("t", ACTORS)[:-1]:
        task = advance(task, each) or task
        seen.append(task.progress)

    assert seen == sorted(seen)  # never back while the route does not grow
    assert seen[0] == 0.0
    # Routed out of the last actor: addressed to x-sink, which counts as the one not done
    # yet; only x-sink's report says it succeeded (progress 1).
    assert seen[-1] == pytest.approx(3 / 4)
    assert task.status is TaskStatus.RUNNING


@pytest.mark.parametrize(
    ("prev", "next_", "expected"),
    [
        ([], [], 0.0),
        ([], ["b", "c"], 0.0),
        (["a"], ["c"], 1 / 3),
        (["a", "b"], [], 2 / 3),
        (["a", "b", "c"], [], 3 / 4),
    ],
)
def test_progress_formula(prev: list[str], next_: list[str], expected: float) -> None:
    assert progress_of({"prev": prev, "curr": "x", "next": next_}) == pytest.approx(expected)


def test_a_route_that_grows_moves_progress_back_but_stays_within_bounds() -> None:
    task = run(make_task("t"), [report("t", "processing", route_at(ACTORS, 1), when=2)])
    # b's handler added three actors: routed (as sent) to c with four still to come.
    grown: wire.Route = {"prev": ["a", "b"], "curr": "c", "next": ["d", "e", "f", "g"]}

    after = advance(task, report("t", "routed", grown, when=3))

    assert after is not None
    assert 0.0 <= after.progress < task.progress


# -- forward only --------------------------------------------------------------------------


def test_a_duplicate_report_changes_nothing() -> None:
    first = report("t", "processing", route_at(ACTORS, 1), when=2)
    task = run(make_task("t"), [first])

    assert advance(task, first) is None


def test_an_older_report_changes_nothing() -> None:
    task = run(make_task("t"), [report("t", "processing", route_at(ACTORS, 2), when=5)])

    assert advance(task, report("t", "processing", route_at(ACTORS, 1), when=6)) is None
    assert advance(task, report("t", "received", route_at(ACTORS, 2), when=6)) is None


def test_a_later_attempt_at_the_same_actor_moves_on() -> None:
    here = route_at(ACTORS, 1)
    task = run(make_task("t"), [report("t", "retrying", here, when=2, reason="Timeout")])
    assert task.reason == "Timeout"

    after = advance(task, report("t", "received", here, when=3, attempt=2))

    assert after is not None
    assert after.position == (1, 2, 0)
    assert after.reason is None


def test_position_orders_hop_then_attempt_then_event() -> None:
    def where(event: str, hop: int, attempt: int = 1) -> tuple[int, int, int]:
        return position(report("t", event, route_at(ACTORS, hop), attempt=attempt))

    # `routed` carries the route as sent (prev holds the sender): it stands at the start of
    # the next hop, after everything the sender reported, before the receiver's reports.
    assert where("paused", 0, attempt=3) < where("routed", 1) < where("received", 1)
    assert where("paused", 1) < where("received", 1, attempt=2)
    assert where("received", 1) < where("processing", 1) < where("retrying", 1)
    assert where("retrying", 1) < where("paused", 1) < where("received", 2)


def test_a_pause_is_kept_until_the_task_moves_on() -> None:
    task = run(make_task("t"), [report("t", "paused", route_at(ACTORS, 1), when=2)])
    assert task.status is TaskStatus.PAUSED

    assert advance(task, report("t", "processing", route_at(ACTORS, 1), when=3)) is None
    later = advance(task, report("t", "received", route_at(ACTORS, 2), when=4))
    assert later is not None
    assert later.status is TaskStatus.RUNNING


# -- terminal ------------------------------------------------------------------------------


def test_a_failure_keeps_the_error_and_reason_and_ends_the_task() -> None:
    task = run(make_task("t"), [report("t", "processing", route_at(ACTORS, 1), when=2)])

    failed = advance(task, failure("t", 1))

    assert failed is not None
    assert failed.status is TaskStatus.FAILED
    assert failed.error is not None
    assert failed.error["message"] == "boom"
    assert failed.reason == "RuntimeError"
    assert failed.result is None
    assert failed.progress == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    "late",
    [
        lambda: report("t", "succeeded", route_at(ACTORS, 3), when=99, result="late"),
        lambda: failure("t", 2, when=99),
        lambda: report("t", "canceled", route_at(ACTORS, 2), when=99, reason="Canceled"),
        lambda: report("t", "processing", route_at(ACTORS, 2), when=99, attempt=9),
    ],
)
def test_nothing_moves_a_task_that_ended(late: object) -> None:
    ended = run(make_task("t"), [failure("t", 1)])
    assert ended.terminal

    assert advance(ended, late()) is None  # type: ignore[operator]


def test_two_terminal_reports_in_either_order_keep_the_first() -> None:
    success = report("t", "succeeded", route_at(ACTORS, 3), when=9, result=1)
    fail = failure("t", 1, when=5)

    assert run(make_task("t"), [success, fail]).status is TaskStatus.SUCCEEDED
    assert run(make_task("t"), [fail, success]).status is TaskStatus.FAILED


def test_a_terminal_report_wins_over_a_later_position() -> None:
    task = run(make_task("t"), [report("t", "routed", route_at(ACTORS, 3), when=5)])

    failed = advance(task, failure("t", 0, when=6))

    assert failed is not None
    assert failed.status is TaskStatus.FAILED
    assert failed.position == task.position  # never goes back


def test_a_fly_report_moves_nothing() -> None:
    task = make_task("t")

    assert advance(task, report("t", "fly", route_at(ACTORS, 0), events=[{"t": 1}])) is None


def test_a_fan_out_child_never_finishes_its_parent() -> None:
    parent = run(make_task("t"), [report("t", "processing", route_at(ACTORS, 1), when=2)])
    child_done = report(
        "t-child-1", "succeeded", route_at(ACTORS, 3), when=3, parent_id="t", result="part"
    )
    child_moves = report("t-child-1", "received", route_at(ACTORS, 2), when=3, parent_id="t")

    assert advance(parent, child_done) is None
    assert advance(parent, child_moves) is None


# -- cancel --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.PAUSED])
def test_cancel_ends_an_unfinished_task(status: TaskStatus) -> None:
    task = dataclasses.replace(make_task("t"), status=status)

    canceled = cancel(task, at=at(7))

    assert canceled is not None
    assert canceled.status is TaskStatus.CANCELED
    assert canceled.reason == "Canceled"
    assert canceled.updated_at == at(7)
    assert canceled.progress == task.progress


@pytest.mark.parametrize("status", sorted(TERMINAL))
def test_cancel_changes_nothing_once_ended(status: TaskStatus) -> None:
    assert cancel(dataclasses.replace(make_task("t"), status=status), at=at(7)) is None


def test_reports_after_a_cancel_change_nothing() -> None:
    canceled = cancel(make_task("t"), at=at(1))
    assert canceled is not None

    for each in lifecycle("t", ACTORS):
        assert advance(canceled, each) is None


def test_the_public_shape_has_exactly_the_documented_keys() -> None:
    shape = make_task("t", deadline_at=at(30)).to_json()

    assert list(shape) == [
        "id",
        "status",
        "route",
        "actor",
        "progress",
        "result",
        "error",
        "reason",
        "created_at",
        "updated_at",
        "deadline_at",
    ]
    assert shape["status"] == "pending"
    assert shape["deadline_at"] == at(30)


# -- properties ----------------------------------------------------------------------------


@st.composite
def shuffled_with_repeats(draw: st.DrawFn, reports: list[wire.HopReport]) -> list[wire.HopReport]:
    """Every report at least once, some more than once, in any order."""
    extra = draw(st.lists(st.sampled_from(reports), max_size=len(reports)))
    return draw(st.permutations(reports + extra))


@st.composite
def lives(draw: st.DrawFn) -> list[wire.HopReport]:
    """A task's reports in order: some route, an optional retry, and an ending that may be
    success, a failure at some actor, a cancel, or none yet."""
    actors = [f"actor-{n}" for n in range(draw(st.integers(1, 4)))]
    full = lifecycle("t", actors, result={"n": draw(st.integers())})
    ending = draw(st.sampled_from(["succeeded", "failed", "canceled", "running"]))
    if ending == "succeeded":
        return full
    # Stop somewhere along the way (at least one report in).
    cut = draw(st.integers(1, len(full) - 1))
    reports = full[:cut]
    last = reports[-1]
    if draw(st.booleans()):  # a retry at the actor it reached
        retry = report("t", "retrying", last["route"], when=80, reason="Timeout")
        again = report("t", "received", last["route"], when=81, attempt=2)
        reports += [retry, again]
    here = reports[-1]["route"]
    if ending == "failed":
        reports.append(
            report(
                "t",
                "failed",
                here,
                when=90,
                attempt=reports[-1]["attempt"],
                reason="RuntimeError",
                error=error_details("RuntimeError", "boom"),
            )
        )
    elif ending == "canceled":
        reports.append(report("t", "canceled", here, when=90, reason="Canceled"))
    return reports


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_order_and_repetition_ends_where_the_in_order_life_does(data: st.DataObject) -> None:
    in_order = data.draw(lives())
    arrived = data.draw(shuffled_with_repeats(in_order))
    start = make_task("t")

    assert run(start, arrived).to_json() == run(start, in_order).to_json()


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_status_never_steps_back(data: st.DataObject) -> None:
    arrived = data.draw(shuffled_with_repeats(data.draw(lives())))
    task = make_task("t")
    for each in arrived:
        after = advance(task, each)
        if after is not None:
            assert rank(after.status) >= rank(task.status)
            assert after.position >= task.position
            assert 0.0 <= after.progress <= 1.0
            assert not task.terminal  # nothing moves a task that ended
            task = after


# -- a redrive takes a failed task up again -------------------------------------------------


def failed_task() -> Task:
    task = make_task("t-redrive")
    return run(task, [report(task.id, "received", route_at(ACTORS, 0)), failure(task.id, 1)])


def test_a_failed_task_follows_a_redrive_of_its_envelope_to_its_new_end() -> None:
    task = failed_task()
    assert task.status is TaskStatus.FAILED

    redrive: dict[str, Any] = {"redriven_at": at(60.0)}
    again = run(
        task,
        [
            report(task.id, "received", route_at(ACTORS, 1), when=61.0, **redrive),
            report(task.id, "succeeded", route_at(ACTORS, 3), when=62.0, result={"ok": 1},
                   **redrive),
        ],
    )  # fmt: skip

    assert again.status is TaskStatus.SUCCEEDED
    assert (again.result, again.error, again.reason) == ({"ok": 1}, None, None)


def test_a_redrive_reopens_the_task_from_its_first_report() -> None:
    task = failed_task()

    moved = advance(task, report(task.id, "received", route_at(ACTORS, 1), when=61.0,
                                 redriven_at=at(60.0)))  # fmt: skip

    assert moved is not None
    assert (moved.status, moved.error, moved.reason) == (TaskStatus.RUNNING, None, None)


@pytest.mark.parametrize(
    "extra",
    [
        {},  # a late report of the failed run
        {"redriven_at": at(40.0)},  # an earlier redrive, reported late
        {"redriven_at": "not a time"},
    ],
)
def test_other_reports_leave_a_failed_task_failed(extra: dict[str, Any]) -> None:
    task = failed_task()

    assert (
        advance(task, report(task.id, "received", route_at(ACTORS, 1), when=61.0, **extra)) is None
    )


def test_a_canceled_or_succeeded_task_takes_up_no_redrive() -> None:
    for end in ("canceled", "succeeded"):
        task = run(make_task(), [report("x", "received", route_at(ACTORS, 0))])
        task = run(task, [report(task.id, end, route_at(ACTORS, 3), when=5.0)])
        assert task.terminal
        late = report(task.id, "received", route_at(ACTORS, 1), when=61.0, redriven_at=at(60.0))
        assert advance(task, late) is None
