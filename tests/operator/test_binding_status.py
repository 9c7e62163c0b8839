"""AsyaBinding's status: the phase from the conditions, and what a refusal keeps."""

from __future__ import annotations

import pytest

from asya_operator import binding_status
from asya_operator.binding_decide import Refusal
from asya_operator.binding_models import AsyaBindingStatus, Injection, Target

NOW = "2026-12-06T00:00:00Z"
LATER = "2026-12-06T00:01:00Z"


@pytest.mark.parametrize(
    ("reason", "phase"),
    [
        ("WorkloadNotFound", "Pending"),
        ("ServiceNotFound", "Pending"),
        ("BrokerUnavailable", "Pending"),
        ("ScaledByOthers", "Refused"),
        ("WorkloadAlreadyBound", "Refused"),
        ("TransportNotConfigured", "Refused"),
        ("InvalidSpec", "Error"),
        ("ApplyError", "Error"),
    ],
)
def test_a_refusal_sets_the_phase(reason: str, phase: str) -> None:
    report = binding_status.Report(binding_status.refused(Refusal(reason, "why")))
    new = binding_status.next_status(AsyaBindingStatus(), report, now=NOW, generation=1)
    assert new.phase == phase
    (ready,) = new.conditions
    assert (ready.type, ready.status, ready.reason) == ("Ready", "False", reason)


def test_a_refusal_keeps_what_the_last_success_recorded() -> None:
    injection = Injection(containers=["asya-sidecar"])
    bound = binding_status.Report(
        [binding_status.ready("inject", "http://127.0.0.1:8000")],
        mode="inject",
        target=Target(kind="Deployment", name="vllm", uid="u"),
        injected=injection,
    )
    old = binding_status.next_status(AsyaBindingStatus(), bound, now=NOW, generation=1)
    assert old.phase == "Bound"
    refused = binding_status.Report(binding_status.refused(Refusal("ScaledByOthers", "an HPA")))
    new = binding_status.next_status(old, refused, now=LATER, generation=2)
    assert new.phase == "Refused"
    # What to take out at deletion is not forgotten because of a refusal.
    assert new.injected == injection
    assert new.mode == "inject"
    assert new.target == old.target
    (ready,) = new.conditions
    assert ready.last_transition_time == LATER


def test_bridge_forgets_the_injection_and_its_condition() -> None:
    injected = binding_status.Report(
        [binding_status.injected(restored=False)],
        mode="inject",
        injected=Injection(containers=["asya-sidecar"]),
    )
    old = binding_status.next_status(AsyaBindingStatus(), injected, now=NOW, generation=1)
    bridged = binding_status.Report(
        [binding_status.bridge_ready(None, "x-asya-bridge")], mode="bridge", forget_injection=True
    )
    new = binding_status.next_status(old, bridged, now=LATER, generation=2)
    assert new.injected is None
    assert [c.type for c in new.conditions] == ["BridgeReady"]


def test_scaling_disabled_says_who_scales_the_server() -> None:
    condition = binding_status.scaling(enabled=False, target="Deployment x", owner="RayService llm")
    assert condition.reason == "ScalingDisabled"
    assert "RayService llm" in condition.message
