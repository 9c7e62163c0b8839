"""The AsyncActor status as pure functions: conditions, replicas, and the one word."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from asya_operator import status
from asya_operator.status import FALSE, TRUE, UNKNOWN, Condition

T0 = "2024-05-01T10:00:00Z"
T1 = "2024-05-01T10:05:00Z"


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


def conds(*items: Condition) -> list[dict[str, Any]]:
    return status.merge_conditions([], items, now=T0, generation=1)


QUEUE_OK = status.queue_ready("asya-ns-a", "rabbitmq")
WORKLOAD_OK = Condition(status.WORKLOAD_READY, TRUE, status.REPLICAS_READY, "2/2")
SCALING_OK = Condition(status.SCALING_READY, TRUE, status.SCALER_READY)


def test_timestamp_is_rfc3339_utc() -> None:
    moment = datetime.datetime(
        2024, 5, 1, 12, 0, 7, 123, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
    )
    assert status.timestamp(moment) == "2024-05-01T10:00:07Z"


class TestMergeConditions:
    def test_new_condition_gets_now_and_generation(self) -> None:
        merged = status.merge_conditions(None, [QUEUE_OK], now=T0, generation=4)
        assert merged == [
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
        old = status.merge_conditions(None, [QUEUE_OK], now=T0, generation=1)
        again = Condition(status.QUEUE_READY, TRUE, "QueueExists", "another message")
        merged = status.merge_conditions(old, [again], now=T1, generation=2)
        assert merged[0]["lastTransitionTime"] == T0
        assert merged[0]["message"] == "another message"
        assert merged[0]["observedGeneration"] == 2

    def test_transition_time_moves_when_status_changes(self) -> None:
        old = status.merge_conditions(None, [QUEUE_OK], now=T0, generation=1)
        down = status.broker_unavailable("rabbitmq", "connection refused")
        merged = status.merge_conditions(old, [down], now=T1, generation=1)
        assert merged[0]["status"] == FALSE
        assert merged[0]["reason"] == "BrokerUnavailable"
        assert "connection refused" in merged[0]["message"]
        assert merged[0]["lastTransitionTime"] == T1

    def test_untouched_conditions_are_kept_and_order_is_fixed(self) -> None:
        old = [
            {"type": "Foreign", "status": "True", "reason": "X", "lastTransitionTime": T0},
            *status.merge_conditions(None, [SCALING_OK], now=T0, generation=1),
        ]
        merged = status.merge_conditions(old, [WORKLOAD_OK, QUEUE_OK], now=T1, generation=None)
        assert [c["type"] for c in merged] == [
            "QueueReady",
            "WorkloadReady",
            "ScalingReady",
            "Foreign",
        ]
        assert merged[2]["lastTransitionTime"] == T0
        assert "observedGeneration" not in merged[0]


class TestReplicas:
    def test_from_spec_and_status(self) -> None:
        assert status.replicas(deployment(replicas=3, ready=1)) == (1, 3)

    def test_keda_owned_replicas_come_from_status(self) -> None:
        obj = deployment(replicas=None, ready=0)
        obj["status"]["replicas"] = 4
        assert status.replicas(obj) == (0, 4)

    def test_nothing_known(self) -> None:
        assert status.replicas(None) == (None, None)
        assert status.replicas(deployment(replicas=None, status_block=False)) == (None, None)

    def test_status_without_ready_count_means_zero_ready(self) -> None:
        assert status.replicas(deployment(replicas=2, ready=None)) == (0, 2)


class TestWorkloadCondition:
    def test_no_deployment(self) -> None:
        c = status.workload_condition(None)
        assert (c.status, c.reason) == (UNKNOWN, "Pending")

    def test_controller_has_not_seen_it(self) -> None:
        assert status.workload_condition(deployment(status_block=False)).status == UNKNOWN
        lagging = deployment(generation=4, observed=3)
        assert status.workload_condition(lagging).reason == "Pending"

    def test_ready(self) -> None:
        c = status.workload_condition(deployment(replicas=2, ready=2))
        assert (c.status, c.reason, c.message) == (TRUE, "ReplicasReady", "2/2 replicas ready")

    def test_scaled_to_zero(self) -> None:
        c = status.workload_condition(deployment(replicas=0, ready=None, available=TRUE))
        assert (c.status, c.reason) == (TRUE, "ScaledToZero")

    def test_unavailable(self) -> None:
        c = status.workload_condition(deployment(replicas=3, ready=1, available=FALSE))
        assert (c.status, c.reason) == (FALSE, "ReplicasUnavailable")
        assert "avail msg" in c.message
        assert "1/3" in c.message

    def test_stuck_rollout(self) -> None:
        c = status.workload_condition(deployment(progressing=FALSE, available=TRUE))
        assert (c.status, c.reason) == (FALSE, "ProgressDeadlineExceeded")
        assert "prog msg" in c.message

    def test_scaling_up_while_available_is_ready(self) -> None:
        c = status.workload_condition(deployment(replicas=5, ready=2, available=TRUE))
        assert c.status == TRUE


class TestScalingCondition:
    def test_disabled(self) -> None:
        c = status.scaling_condition(None, enabled=False, fixed_replicas=2)
        assert (c.status, c.reason) == (TRUE, "ScalingDisabled")
        assert "2 replicas" in c.message

    def test_missing_or_unreported(self) -> None:
        assert status.scaling_condition(None, enabled=True).status == UNKNOWN
        c = status.scaling_condition({"metadata": {}}, enabled=True)
        assert (c.status, c.reason) == (UNKNOWN, "WaitingForKeda")

    @pytest.mark.parametrize(
        ("keda", "expected"),
        [(TRUE, (TRUE, "ScalerReady")), (FALSE, (FALSE, "ScalerNotReady"))],
    )
    def test_keda_verdict(self, keda: str, expected: tuple[str, str]) -> None:
        obj = {"status": {"conditions": [{"type": "Ready", "status": keda, "message": "m"}]}}
        c = status.scaling_condition(obj, enabled=True)
        assert (c.status, c.reason) == expected

    def test_keda_not_installed(self) -> None:
        c = status.keda_not_installed("404")
        assert (c.status, c.reason) == (FALSE, "KedaNotInstalled")


class TestWord:
    def word(self, conditions: list[dict[str, Any]], **kwargs: Any) -> str:
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
        down = status.broker_unavailable("rabbitmq", "refused")
        assert self.word(conds(down, *status.waiting_for_queue())) == "Degraded"
        assert self.word(conds(down, WORKLOAD_OK, SCALING_OK), previous="Running") == "Degraded"

    def test_scaling_broken_is_degraded(self) -> None:
        broken = Condition(status.SCALING_READY, FALSE, status.SCALER_NOT_READY, "x")
        assert self.word(conds(QUEUE_OK, WORKLOAD_OK, broken)) == "Degraded"

    def test_waiting_for_keda_is_not_degraded(self) -> None:
        waiting = status.scaling_condition({}, enabled=True)
        assert self.word(conds(QUEUE_OK, WORKLOAD_OK, waiting)) == "Running"

    def test_first_rollout_is_creating(self) -> None:
        pending = status.workload_condition(None)
        assert self.word(conds(QUEUE_OK, pending)) == "Creating"
        starting = status.workload_condition(deployment(ready=0, available=FALSE))
        assert self.word(conds(QUEUE_OK, starting), previous="Creating") == "Creating"

    def test_replicas_lost_later_is_degraded(self) -> None:
        lost = status.workload_condition(deployment(ready=0, available=FALSE))
        assert self.word(conds(QUEUE_OK, lost), previous="Running") == "Degraded"

    def test_stuck_rollout_is_degraded_even_at_first(self) -> None:
        stuck = status.workload_condition(deployment(progressing=FALSE))
        assert self.word(conds(QUEUE_OK, stuck)) == "Degraded"

    def test_rollout_in_progress_keeps_the_previous_word(self) -> None:
        pending = status.workload_condition(deployment(generation=5, observed=4))
        assert self.word(conds(QUEUE_OK, pending), previous="Running") == "Running"
        assert self.word(conds(QUEUE_OK, pending), previous="Napping") == "Napping"
        assert self.word(conds(QUEUE_OK, pending), previous="Error") == "Creating"
        # The broker came back after an outage: the workload is being created now.
        assert self.word(conds(QUEUE_OK, pending), previous="Degraded") == "Creating"

    def test_napping(self) -> None:
        zero = status.workload_condition(deployment(replicas=0, ready=None))
        assert self.word(conds(QUEUE_OK, zero), desired_replicas=0) == "Napping"
        # Pub/Sub cannot count: nothing known queued counts as nothing queued.
        assert self.word(conds(QUEUE_OK, zero), desired_replicas=0, queue_depth=None) == "Napping"

    def test_zero_replicas_with_work_queued_is_waking_up(self) -> None:
        zero = status.workload_condition(deployment(replicas=0, ready=None))
        assert self.word(conds(QUEUE_OK, zero), desired_replicas=0, queue_depth=7) == "Running"

    def test_zero_fixed_replicas_without_keda_is_not_napping(self) -> None:
        zero = status.workload_condition(deployment(replicas=0, ready=None))
        word = self.word(conds(QUEUE_OK, zero), desired_replicas=0, scaling_enabled=False)
        assert word == "Running"


class TestStatusPatch:
    def test_whole_status(self) -> None:
        new = status.status_patch(
            None,
            [QUEUE_OK, status.workload_condition(deployment(replicas=2, ready=2)), SCALING_OK],
            now=T0,
            generation=2,
            scaling_enabled=True,
            deployment=deployment(replicas=2, ready=2),
            queue="asya-ns-a",
            transport="rabbitmq",
            queue_depth=3,
        )
        assert new["status"] == "Running"
        assert new["readyReplicas"] == 2
        assert new["desiredReplicas"] == 2
        assert new["queueDepth"] == 3
        assert new["queue"] == "asya-ns-a"
        assert new["transport"] == "rabbitmq"
        assert new["observedGeneration"] == 2
        assert [c["type"] for c in new["conditions"]] == [
            "QueueReady",
            "WorkloadReady",
            "ScalingReady",
        ]

    def test_unknown_fields_keep_their_old_values(self) -> None:
        old = {
            "status": "Running",
            "readyReplicas": 1,
            "desiredReplicas": 1,
            "queueDepth": 9,
            "queue": "q",
            "transport": "t",
            "observedGeneration": 1,
            "conditions": conds(QUEUE_OK, WORKLOAD_OK, SCALING_OK),
        }
        new = status.status_patch(old, [], now=T1, generation=None, scaling_enabled=True)
        assert {k: new[k] for k in old if k != "conditions"} == {
            k: v for k, v in old.items() if k != "conditions"
        }
        assert not status.changed(old, new)

    def test_changed_notices_any_difference(self) -> None:
        old = {"status": "Running", "queueDepth": 1}
        assert status.changed(old, {"status": "Running", "queueDepth": 2})
        assert not status.changed(old, {"status": "Running"})


def test_unknown_transport_message_lists_the_configured_ones() -> None:
    message = status.unknown_transport("kafka", ["sqs", "rabbitmq"])
    assert "'kafka'" in message
    assert "rabbitmq, sqs" in message
    assert "rabbitmq" in status.unknown_transport(None, ["rabbitmq", "sqs"])
