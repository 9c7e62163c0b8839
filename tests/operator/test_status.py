"""The AsyncActor status as pure functions: conditions, replicas, and the one word."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from asya_operator import models, observed, status
from asya_operator.models import AsyncActorStatus
from asya_operator.status import FALSE, TRUE, UNKNOWN, Condition

T0 = "2024-05-01T10:00:00Z"
T1 = "2024-05-01T10:05:00Z"


def rollout(**kwargs: Any) -> observed.Rollout | None:
    return observed.rollout(deployment(**kwargs))


def deployment(
    *,
    replicas: int | None = 2,
    ready: int | None = 2,
    available: str | None = TRUE,
    progressing: str | None = TRUE,
    generation: int = 3,
    observed: int | None = 3,
    status_block: bool = True,
) -> dict[str, Any]:
    spec: dict[str, Any] = {} if replicas is None else {"replicas": replicas}
    obj: dict[str, Any] = {"metadata": {"name": "a", "generation": generation}, "spec": spec}
    if not status_block:
        return obj
    conditions = []
    if available is not None:
        conditions.append({"type": "Available", "status": available, "message": "avail msg"})
    if progressing is not None:
        conditions.append({"type": "Progressing", "status": progressing, "message": "prog msg"})
    st: dict[str, Any] = {"conditions": conditions, "replicas": replicas or 0}
    if ready is not None:
        st["readyReplicas"] = ready
    if observed is not None:
        st["observedGeneration"] = observed
    obj["status"] = st
    return obj


def conds(*items: Condition) -> list[models.Condition]:
    return status.merge_conditions([], items, now=T0, generation=1)


QUEUE_OK = status.queue_ready("asya-ns-a", "rabbitmq")
WORKLOAD_OK = Condition(status.WORKLOAD_READY, TRUE, status.REPLICAS_READY, "2/2")
SCALING_OK = Condition(status.SCALING_READY, TRUE, status.SCALER_READY)


def test_timestamp_is_rfc3339_utc() -> None:
    moment = datetime.datetime(
        2024, 5, 1, 12, 0, 7, 123, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
    )
    assert status.timestamp(moment) == "2024-05-01T10:00:07Z"


def dumped(conditions: list[models.Condition]) -> list[dict[str, Any]]:
    written: list[dict[str, Any]] = status.to_json(AsyncActorStatus(conditions=conditions))[
        "conditions"
    ]
    return written


class TestMergeConditions:
    def test_new_condition_gets_now_and_generation(self) -> None:
        merged = status.merge_conditions([], [QUEUE_OK], now=T0, generation=4)
        assert dumped(merged) == [
            {
                "type": "QueueReady",
                "status": "True",
                "reason": "QueueExists",
                "message": "queue asya-ns-a exists on rabbitmq",
                "lastTransitionTime": T0,
                "observedGeneration": 4,
            }
        ]

    def test_transition_time_kept_while_status_stays(self) -> None:
        old = status.merge_conditions([], [QUEUE_OK], now=T0, generation=1)
        again = Condition(status.QUEUE_READY, TRUE, "QueueExists", "another message")
        (merged,) = status.merge_conditions(old, [again], now=T1, generation=2)
        assert merged.last_transition_time == T0
        assert merged.message == "another message"
        assert merged.observed_generation == 2

    def test_transition_time_moves_when_status_changes(self) -> None:
        old = status.merge_conditions([], [QUEUE_OK], now=T0, generation=1)
        down = status.broker_unavailable("rabbitmq", "connection refused")
        (merged,) = status.merge_conditions(old, [down], now=T1, generation=1)
        assert (merged.status, merged.reason) == (FALSE, "BrokerUnavailable")
        assert "connection refused" in merged.message
        assert merged.last_transition_time == T1

    def test_untouched_conditions_are_kept_and_order_is_fixed(self) -> None:
        foreign = models.Condition(type="Foreign", status=TRUE, reason="X", last_transition_time=T0)
        old = [foreign, *status.merge_conditions([], [SCALING_OK], now=T0, generation=1)]
        merged = status.merge_conditions(old, [WORKLOAD_OK, QUEUE_OK], now=T1, generation=None)
        assert [c.type for c in merged] == [
            "QueueReady",
            "WorkloadReady",
            "ScalingReady",
            "Foreign",
        ]
        assert merged[2].last_transition_time == T0
        assert merged[3] == foreign
        assert "observedGeneration" not in dumped(merged)[0]


class TestWorkloadCondition:
    def test_no_deployment(self) -> None:
        c = status.workload_condition(None)
        assert (c.status, c.reason) == (UNKNOWN, "Pending")

    def test_controller_has_not_seen_it(self) -> None:
        assert status.workload_condition(rollout(status_block=False)).status == UNKNOWN
        lagging = rollout(generation=4, observed=3)
        assert status.workload_condition(lagging).reason == "Pending"

    def test_ready(self) -> None:
        c = status.workload_condition(rollout(replicas=2, ready=2))
        assert (c.status, c.reason, c.message) == (TRUE, "ReplicasReady", "2/2 replicas ready")

    def test_scaled_to_zero(self) -> None:
        c = status.workload_condition(rollout(replicas=0, ready=None, available=TRUE))
        assert (c.status, c.reason) == (TRUE, "ScaledToZero")

    def test_unavailable(self) -> None:
        c = status.workload_condition(rollout(replicas=3, ready=1, available=FALSE))
        assert (c.status, c.reason) == (FALSE, "ReplicasUnavailable")
        assert "avail msg" in c.message
        assert "1/3" in c.message

    def test_stuck_rollout(self) -> None:
        c = status.workload_condition(rollout(progressing=FALSE, available=TRUE))
        assert (c.status, c.reason) == (FALSE, "ProgressDeadlineExceeded")
        assert "prog msg" in c.message

    def test_scaling_up_while_available_is_ready(self) -> None:
        c = status.workload_condition(rollout(replicas=5, ready=2, available=TRUE))
        assert c.status == TRUE

    def test_fewer_ready_than_desired_without_an_available_condition(self) -> None:
        c = status.workload_condition(rollout(replicas=3, ready=1, available=None))
        assert (c.status, c.reason, c.message) == (
            FALSE,
            "ReplicasUnavailable",
            "1/3 replicas ready",
        )


def scaled_object(**ready: str) -> observed.Scaler | None:
    return observed.scaler({"status": {"conditions": [{"type": "Ready", **ready}]}})


class TestScalingCondition:
    def test_disabled(self) -> None:
        c = status.scaling_condition(None, enabled=False, fixed_replicas=2)
        assert (c.status, c.reason) == (TRUE, "ScalingDisabled")
        assert "2 replicas" in c.message

    def test_missing_or_unreported(self) -> None:
        assert status.scaling_condition(None, enabled=True).status == UNKNOWN
        c = status.scaling_condition(observed.scaler({"metadata": {}}), enabled=True)
        assert (c.status, c.reason) == (UNKNOWN, "WaitingForKeda")

    @pytest.mark.parametrize(
        ("ready", "expected"),
        [
            (
                {"status": TRUE, "message": "m"},
                (TRUE, "ScalerReady", "KEDA scales on the queue depth"),
            ),
            ({"status": FALSE, "message": "m"}, (FALSE, "ScalerNotReady", "m")),
            ({"status": FALSE, "reason": "R"}, (FALSE, "ScalerNotReady", "R")),
            ({"status": FALSE}, (FALSE, "ScalerNotReady", "KEDA reports it is not ready")),
            (
                {"status": UNKNOWN, "message": "m"},
                (UNKNOWN, "WaitingForKeda", "KEDA has not reported on the ScaledObject"),
            ),
        ],
    )
    def test_keda_verdict(self, ready: dict[str, str], expected: tuple[str, str, str]) -> None:
        c = status.scaling_condition(scaled_object(**ready), enabled=True)
        assert (c.status, c.reason, c.message) == expected

    def test_keda_not_installed(self) -> None:
        c = status.keda_not_installed("404")
        assert (c.status, c.reason) == (FALSE, "KedaNotInstalled")


# -- what each stage of a reconcile reports ---------------------------------------------------

QUEUE_DOWN = status.broker_unavailable("rabbitmq", "refused")
WAITING = Condition(
    status.WORKLOAD_READY,
    UNKNOWN,
    "WaitingForQueue",
    "the workload is applied once the queue exists",
)
WAITING_SCALING = Condition(
    status.SCALING_READY,
    UNKNOWN,
    "WaitingForQueue",
    "the workload is applied once the queue exists",
)


@pytest.mark.parametrize(
    ("shown", "expected"),
    [
        ([], [QUEUE_DOWN, WAITING, WAITING_SCALING]),
        # A workload that was shown keeps showing what it was; only the queue changes.
        (conds(QUEUE_OK, WORKLOAD_OK), [QUEUE_DOWN, WAITING_SCALING]),
        (conds(QUEUE_OK, WORKLOAD_OK, SCALING_OK), [QUEUE_DOWN]),
    ],
)
def test_queue_unreachable(shown: list[models.Condition], expected: list[Condition]) -> None:
    assert status.queue_unreachable("rabbitmq", "refused", shown=shown) == expected


def test_queue_refused_blocks_the_workload_and_its_scaling() -> None:
    assert status.queue_refused("sqs", "name too long") == [
        Condition(status.QUEUE_READY, FALSE, "QueueError", "sqs refused the queue: name too long"),
        Condition(status.WORKLOAD_READY, FALSE, "QueueError", "name too long"),
        Condition(status.SCALING_READY, FALSE, "QueueError", "name too long"),
    ]


@pytest.mark.parametrize("reason", [status.RENDER_ERROR, status.APPLY_ERROR])
def test_workload_blocked_leaves_the_queue_alone(reason: str) -> None:
    assert status.workload_blocked(reason, "m") == [
        Condition(status.WORKLOAD_READY, FALSE, reason, "m"),
        Condition(status.SCALING_READY, FALSE, reason, "m"),
    ]


def test_queue_missing() -> None:
    c = status.queue_missing("asya-ns-a", "rabbit")
    assert (c.type, c.status, c.reason) == (status.QUEUE_READY, FALSE, "QueueMissing")
    assert c.message == "queue asya-ns-a is gone from rabbit; the next resync creates it"


@pytest.mark.parametrize(
    ("shown", "permanent"),
    [
        (None, False),
        (Condition(status.QUEUE_READY, FALSE, "InvalidSpec"), True),
        (Condition(status.QUEUE_READY, FALSE, "UnknownTransport"), True),
        (Condition(status.QUEUE_READY, FALSE, "QueueError"), True),
        (Condition(status.QUEUE_READY, FALSE, "BrokerUnavailable"), False),
        (Condition(status.QUEUE_READY, TRUE, "QueueExists"), False),
        # A permanent reason only counts while the condition is False.
        (Condition(status.QUEUE_READY, UNKNOWN, "RenderError"), False),
    ],
)
def test_an_observer_never_replaces_a_permanent_problem(
    shown: Condition | None, permanent: bool
) -> None:
    stored = conds(shown) if shown is not None else []
    assert status.is_permanent(status.find(stored, status.QUEUE_READY)) == permanent
    kept = status.unless_permanent([QUEUE_OK, WORKLOAD_OK], shown=stored)
    assert kept == ([WORKLOAD_OK] if permanent else [QUEUE_OK, WORKLOAD_OK])


# -- the word ---------------------------------------------------------------------------------


class TestWord:
    def word(self, conditions: list[models.Condition], **kwargs: Any) -> str:
        options: dict[str, Any] = {
            "previous": None,
            "scaling_enabled": True,
            "desired_replicas": 2,
            "queue_depth": 0,
        }
        options.update(kwargs)
        return status.word(conditions, **options)

    def test_running(self) -> None:
        assert self.word(conds(QUEUE_OK, WORKLOAD_OK, SCALING_OK)) == "Running"

    def test_terminating_wins(self) -> None:
        invalid = status.blocked(status.INVALID_SPEC, "bad")
        assert self.word(conds(*invalid), terminating=True) == "Terminating"

    @pytest.mark.parametrize(
        "reason", ["InvalidSpec", "UnknownTransport", "RenderError", "QueueError", "ApplyError"]
    )
    def test_permanent_problems_are_errors(self, reason: str) -> None:
        assert self.word(conds(*status.blocked(reason, "msg"))) == "Error"

    def test_broker_down_is_degraded(self) -> None:
        down = status.queue_unreachable("rabbitmq", "refused", shown=[])
        assert self.word(conds(*down)) == "Degraded"
        assert (
            self.word(conds(QUEUE_DOWN, WORKLOAD_OK, SCALING_OK), previous="Running") == "Degraded"
        )

    def test_scaling_broken_is_degraded(self) -> None:
        broken = Condition(status.SCALING_READY, FALSE, status.SCALER_NOT_READY, "x")
        assert self.word(conds(QUEUE_OK, WORKLOAD_OK, broken)) == "Degraded"

    def test_waiting_for_keda_is_not_degraded(self) -> None:
        waiting = status.scaling_condition(observed.scaler({"status": {}}), enabled=True)
        assert self.word(conds(QUEUE_OK, WORKLOAD_OK, waiting)) == "Running"

    def test_first_rollout_is_creating(self) -> None:
        pending = status.workload_condition(None)
        assert self.word(conds(QUEUE_OK, pending)) == "Creating"
        starting = status.workload_condition(rollout(ready=0, available=FALSE))
        assert self.word(conds(QUEUE_OK, starting), previous="Creating") == "Creating"

    def test_replicas_lost_later_is_degraded(self) -> None:
        lost = status.workload_condition(rollout(ready=0, available=FALSE))
        assert self.word(conds(QUEUE_OK, lost), previous="Running") == "Degraded"

    def test_stuck_rollout_is_degraded_even_at_first(self) -> None:
        stuck = status.workload_condition(rollout(progressing=FALSE))
        assert self.word(conds(QUEUE_OK, stuck)) == "Degraded"

    def test_rollout_in_progress_keeps_the_previous_word(self) -> None:
        pending = status.workload_condition(rollout(generation=5, observed=4))
        assert self.word(conds(QUEUE_OK, pending), previous="Running") == "Running"
        assert self.word(conds(QUEUE_OK, pending), previous="Napping") == "Napping"
        assert self.word(conds(QUEUE_OK, pending), previous="Error") == "Creating"
        # The broker came back after an outage: the workload is being created now.
        assert self.word(conds(QUEUE_OK, pending), previous="Degraded") == "Creating"

    def test_napping(self) -> None:
        zero = status.workload_condition(rollout(replicas=0, ready=None))
        assert self.word(conds(QUEUE_OK, zero), desired_replicas=0) == "Napping"
        # Pub/Sub cannot count: nothing known queued counts as nothing queued.
        assert self.word(conds(QUEUE_OK, zero), desired_replicas=0, queue_depth=None) == "Napping"

    def test_zero_replicas_with_work_queued_is_waking_up(self) -> None:
        zero = status.workload_condition(rollout(replicas=0, ready=None))
        assert self.word(conds(QUEUE_OK, zero), desired_replicas=0, queue_depth=7) == "Running"

    def test_zero_fixed_replicas_without_keda_is_not_napping(self) -> None:
        zero = status.workload_condition(rollout(replicas=0, ready=None))
        word = self.word(conds(QUEUE_OK, zero), desired_replicas=0, scaling_enabled=False)
        assert word == "Running"


# -- the whole status -------------------------------------------------------------------------


class TestNextStatus:
    def test_whole_status(self) -> None:
        new = status.next_status(
            AsyncActorStatus(),
            [QUEUE_OK, status.workload_condition(rollout(replicas=2, ready=2)), SCALING_OK],
            now=T0,
            generation=2,
            scaling_enabled=True,
            rollout=rollout(replicas=2, ready=2),
            queue="asya-ns-a",
            transport="rabbitmq",
            queue_depth=3,
        )
        written = status.to_json(new)
        assert {k: v for k, v in written.items() if k != "conditions"} == {
            "status": "Running",
            "readyReplicas": 2,
            "desiredReplicas": 2,
            "queueDepth": 3,
            "queue": "asya-ns-a",
            "transport": "rabbitmq",
            "observedGeneration": 2,
        }
        assert [c["type"] for c in written["conditions"]] == [
            "QueueReady",
            "WorkloadReady",
            "ScalingReady",
        ]

    def test_unknown_fields_keep_their_old_values(self) -> None:
        old = AsyncActorStatus(
            status="Running",
            ready_replicas=1,
            desired_replicas=1,
            queue_depth=9,
            queue="q",
            transport="t",
            observed_generation=1,
            conditions=conds(QUEUE_OK, WORKLOAD_OK, SCALING_OK),
        )
        new = status.next_status(old, [], now=T1, generation=None, scaling_enabled=True)
        assert new == old
        assert not status.changed(old, new)

    def test_terminating(self) -> None:
        old = AsyncActorStatus(status="Running", conditions=conds(QUEUE_OK, WORKLOAD_OK))
        new = status.next_status(
            old, [], now=T1, generation=3, scaling_enabled=True, terminating=True
        )
        assert (new.status, new.observed_generation) == ("Terminating", 3)
        assert new.conditions == old.conditions


class TestToJson:
    def test_every_field_is_written_so_a_merge_patch_removes_what_is_unknown(self) -> None:
        assert status.to_json(AsyncActorStatus()) == {
            "status": None,
            "conditions": [],
            "readyReplicas": None,
            "desiredReplicas": None,
            "queueDepth": None,
            "queue": None,
            "transport": None,
            "observedGeneration": None,
        }

    @pytest.mark.parametrize(
        ("old", "new", "changed"),
        [
            (
                AsyncActorStatus(status="Running", queue_depth=1),
                AsyncActorStatus(status="Running", queue_depth=2),
                True,
            ),
            (AsyncActorStatus(status="Running"), AsyncActorStatus(status="Running"), False),
            (
                AsyncActorStatus(conditions=conds(QUEUE_OK)),
                AsyncActorStatus(conditions=conds(QUEUE_DOWN)),
                True,
            ),
            (AsyncActorStatus(), AsyncActorStatus(transport="t"), True),
        ],
    )
    def test_changed_notices_any_difference(
        self, old: AsyncActorStatus, new: AsyncActorStatus, changed: bool
    ) -> None:
        assert status.changed(old, new) == changed


def test_unknown_transport_message_lists_the_configured_ones() -> None:
    message = status.unknown_transport("kafka", ["sqs", "rabbitmq"])
    assert "'kafka'" in message
    assert "rabbitmq, sqs" in message
    assert "rabbitmq" in status.unknown_transport(None, ["rabbitmq", "sqs"])
