"""Objects read back from the API, parsed: Deployments, ScaledObjects and stored AsyncActors."""

from __future__ import annotations

from typing import Any

import pytest

from asya_operator import observed
from asya_operator.models import AsyncActorStatus, Condition, DeletionPolicy
from asya_operator.observed import KubeCondition

T0 = "2024-05-01T10:00:00Z"


@pytest.mark.parametrize(
    ("deployment", "ready", "desired"),
    [
        ({"spec": {"replicas": 3}, "status": {"readyReplicas": 1, "replicas": 3}}, 1, 3),
        # KEDA owns spec.replicas: the count comes from the status until KEDA writes one.
        ({"spec": {}, "status": {"readyReplicas": 0, "replicas": 4}}, 0, 4),
        # No status yet: nothing known.
        ({"spec": {}}, None, None),
        ({"spec": {"replicas": 2}}, None, 2),
        # A status without readyReplicas: none are ready (Kubernetes omits zero).
        ({"spec": {"replicas": 2}, "status": {"replicas": 2}}, 0, 2),
        ({"spec": {"replicas": "two"}, "status": {"replicas": 2, "readyReplicas": None}}, None, 2),
    ],
)
def test_rollout_replicas(
    deployment: dict[str, Any], ready: int | None, desired: int | None
) -> None:
    rollout = observed.rollout(deployment)
    assert rollout is not None
    assert (rollout.ready, rollout.desired) == (ready, desired)


def test_rollout_of_nothing() -> None:
    assert observed.rollout(None) is None


def test_rollout_generations_and_conditions() -> None:
    rollout = observed.rollout(
        {
            "metadata": {"generation": 4},
            "status": {
                "observedGeneration": 3,
                "conditions": [
                    {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
                    {"type": "Available", "status": "False", "message": "minimum"},
                    {"type": "Available", "status": "True"},  # the first of a type counts
                    "not a condition",
                ],
            },
        }
    )
    assert rollout == observed.Rollout(
        generation=4,
        observed_generation=3,
        reported=True,
        ready=0,
        desired=None,
        available=KubeCondition("False", "", "minimum"),
        progressing=KubeCondition("True", "NewReplicaSetAvailable", ""),
    )


@pytest.mark.parametrize(
    ("scaled_object", "expected"),
    [
        (None, None),
        ({"metadata": {"name": "a"}}, observed.Scaler(ready=None)),
        ({"status": {"conditions": "junk"}}, observed.Scaler(ready=None)),
        (
            {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
            observed.Scaler(ready=KubeCondition("True")),
        ),
    ],
)
def test_scaler(scaled_object: dict[str, Any] | None, expected: observed.Scaler | None) -> None:
    assert observed.scaler(scaled_object) == expected


CONDITION = {"type": "QueueReady", "status": "True", "reason": "QueueExists", "message": "m"}
STORED_CONDITION = {**CONDITION, "lastTransitionTime": T0, "observedGeneration": 2}
STORED: dict[str, Any] = {
    "status": "Running",
    "conditions": [STORED_CONDITION],
    "queue": "asya-ns-a",
    "transport": "rabbit",
    "queueDepth": 0,
}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, AsyncActorStatus()),
        ("junk", AsyncActorStatus()),
        ({}, AsyncActorStatus()),
        (STORED, AsyncActorStatus.model_validate(STORED)),
        # What does not parse is left out, field by field and condition by condition.
        (
            {**STORED, "queueDepth": "many", "kopf": {"progress": {}}},
            AsyncActorStatus.model_validate({**STORED, "queueDepth": None}),
        ),
        (
            {**STORED, "conditions": [CONDITION, STORED_CONDITION]},
            AsyncActorStatus.model_validate(STORED),
        ),
        (
            {**STORED, "conditions": "junk"},
            AsyncActorStatus.model_validate({**STORED, "conditions": []}),
        ),
    ],
)
def test_stored_status(raw: Any, expected: AsyncActorStatus) -> None:
    assert observed.stored_status(raw) == expected


@pytest.mark.parametrize(
    ("spec", "scaling_enabled", "policy"),
    [
        ({}, True, DeletionPolicy.DELETE_IF_EMPTY),
        (
            {"scaling": {"enabled": False}, "queue": {"deletionPolicy": "Retain"}},
            False,
            DeletionPolicy.RETAIN,
        ),
        ({"queue": {"deletionPolicy": "Delete"}}, True, DeletionPolicy.DELETE),
        ({"queue": {"deletionPolicy": None}}, True, DeletionPolicy.DELETE_IF_EMPTY),
        # Not admitted by the CRD; read with the default's caution all the same.
        ({"queue": {"deletionPolicy": "delete"}}, True, DeletionPolicy.DELETE_IF_EMPTY),
        # A spec that does not validate (no handler, a bad concurrency) is still readable.
        ({"concurrency": 0, "scaling": {"enabled": False}}, False, DeletionPolicy.DELETE_IF_EMPTY),
    ],
)
def test_actor(spec: dict[str, Any], scaling_enabled: bool, policy: DeletionPolicy) -> None:
    seen = observed.actor(
        {
            "metadata": {"name": "a", "namespace": "ns", "uid": "u-1", "generation": 7},
            "spec": spec,
            "status": STORED,
        }
    )
    assert seen == observed.Actor(
        namespace="ns",
        name="a",
        uid="u-1",
        generation=7,
        status=AsyncActorStatus.model_validate(STORED),
        scaling_enabled=scaling_enabled,
        deletion_policy=policy,
    )
    assert seen.status.conditions == [
        Condition(
            type="QueueReady",
            status="True",
            reason="QueueExists",
            message="m",
            last_transition_time=T0,
            observed_generation=2,
        )
    ]
