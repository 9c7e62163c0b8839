"""resiliency.py: parsing, choosing a policy, delays and attempt counting (pure)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asya_sidecar import resiliency
from asya_sidecar.resiliency import Backoff, GiveUp, Policy, Retry, RouteTo

FULL = {
    "actorTimeout": "30s",
    "policies": {
        "default": {"maxAttempts": 2, "initialDelay": 1},
        "rate-limited": {
            "maxAttempts": 6,
            "backoff": "exponential",
            "initialDelay": "2s",
            "maxInterval": "1m",
            "jitter": 0.2,
            "maxDuration": "10m",
            "thenRoute": ["fallback"],
        },
    },
    "rules": [{"errors": ["openai.RateLimitError", "TimeoutError"], "policy": "rate-limited"}],
}


def test_parse_a_full_configuration() -> None:
    parsed = resiliency.parse(FULL)

    assert parsed.actor_timeout == 30.0
    policy = parsed.policies["rate-limited"]
    assert policy == Policy(
        name="rate-limited",
        max_attempts=6,
        backoff=Backoff.EXPONENTIAL,
        initial_delay=2.0,
        max_interval=60.0,
        jitter=0.2,
        max_duration=600.0,
        then_route=("fallback",),
    )
    assert parsed.rules == (
        resiliency.Rule(("openai.RateLimitError", "TimeoutError"), "rate-limited"),
    )
    assert parsed.configured


def test_nothing_configured_means_one_attempt() -> None:
    parsed = resiliency.parse(None)

    assert parsed.policies == {"default": Policy("default", max_attempts=1)}
    assert not parsed.configured
    assert parsed.actor_timeout is None


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ([], "resiliency must be an object"),
        ({"actorTimout": "5s"}, "unknown field 'actorTimout' (did you mean 'actorTimeout'?)"),
        ({"actorTimeout": "soon"}, "resiliency.actorTimeout"),
        ({"actorTimeout": 0}, "more than zero"),
        ({"policies": {"p": {"maxAttempt": 3}}}, "unknown field 'maxAttempt'"),
        ({"policies": {"p": {"maxAttempts": 0}}}, "policies.p.maxAttempts"),
        ({"policies": {"p": {"maxAttempts": True}}}, "policies.p.maxAttempts"),
        ({"policies": {"p": {"backoff": "random"}}}, "'random' is not one of"),
        ({"policies": {"p": {"jitter": 1.5}}}, "policies.p.jitter"),
        ({"policies": {"p": {"initialDelay": "10s", "maxInterval": "1s"}}}, "maxInterval"),
        ({"policies": {"p": {"maxDuration": "forever"}}}, "policies.p.maxDuration"),
        ({"policies": {"p": {"thenRoute": ["Bad Name"]}}}, "thenRoute"),
        ({"policies": {"p": {"thenRoute": "x"}}}, "thenRoute must be a list"),
        ({"rules": {"errors": []}}, "rules must be a list"),
        ({"rules": [{"errors": [], "policy": "default"}]}, "rules[0].errors"),
        ({"rules": [{"errors": ["E"], "policy": "nope"}]}, "rules[0].policy 'nope'"),
        ({"rules": [{"errors": ["E"], "policy": "default", "when": 1}]}, "unknown field 'when'"),
    ],
)
def test_bad_configuration_names_the_path(raw: Any, fragment: str) -> None:
    with pytest.raises(resiliency.ResiliencyError) as caught:
        resiliency.parse(raw)

    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("rule", "cls", "expected"),
    [
        ("TimeoutError", "TimeoutError", True),
        ("TimeoutError", "asyncio.exceptions.TimeoutError", True),
        ("openai.RateLimitError", "openai._exceptions.RateLimitError", True),
        ("openai.RateLimitError", "openai.RateLimitError", True),
        ("openai.RateLimitError", "anthropic.RateLimitError", False),
        ("torch.cuda.OutOfMemoryError", "torch.cuda.OutOfMemoryError", True),
        ("torch.OutOfMemoryError", "torch.cuda.memory.OutOfMemoryError", True),
        ("RateLimitError", "openai._exceptions.RateLimitError", True),
        ("ValueError", "ValueErrorish", False),
        ("mypkg.errors.Quota", "mypkg.Quota", False),
    ],
)
def test_rule_names_match_classes(rule: str, cls: str, expected: bool) -> None:
    assert resiliency.matches(rule, cls) is expected


def test_first_matching_rule_wins_and_base_classes_match_through_the_mro() -> None:
    parsed = resiliency.parse({
        "policies": {"a": {"maxAttempts": 2}, "b": {"maxAttempts": 3}},
        "rules": [{"errors": ["mylib.ProviderError"], "policy": "a"},
                  {"errors": ["mylib.QuotaError"], "policy": "b"}],
    })  # fmt: skip
    mro = ["mylib._errors.QuotaError", "mylib._errors.ProviderError", "Exception"]

    assert resiliency.choose(parsed, mro).name == "a"
    assert resiliency.choose(parsed, ["KeyError", "LookupError", "Exception"]).name == "default"


@pytest.mark.parametrize(
    ("backoff", "delays"),
    [
        (Backoff.CONSTANT, [2, 2, 2, 2, 2]),
        (Backoff.LINEAR, [2, 4, 6, 8, 10]),
        (Backoff.EXPONENTIAL, [2, 4, 8, 10, 10]),
    ],
)
def test_backoff_shapes(backoff: Backoff, delays: list[float]) -> None:
    policy = Policy("p", max_attempts=9, backoff=backoff, initial_delay=2, max_interval=10)

    assert [resiliency.delay(policy, attempt=a, rand=0.5) for a in range(1, 6)] == delays


policies = st.builds(
    Policy,
    name=st.just("p"),
    max_attempts=st.integers(1, 20),
    backoff=st.sampled_from(list(Backoff)),
    initial_delay=st.floats(0, 60, allow_nan=False),
    max_interval=st.floats(60, 3600, allow_nan=False),
    jitter=st.floats(0, 1, allow_nan=False),
    max_duration=st.one_of(st.none(), st.floats(0, 7200, allow_nan=False)),
)


@given(policy=policies, attempt=st.integers(1, 60), rand=st.floats(0, 1, exclude_max=True))
def test_a_delay_is_never_negative_nor_longer_than_max_interval(
    policy: Policy, attempt: int, rand: float
) -> None:
    wait = resiliency.delay(policy, attempt=attempt, rand=rand)

    assert 0 <= wait <= policy.max_interval


@given(policy=policies, attempt=st.integers(1, 60), rand=st.floats(0, 1, exclude_max=True))
def test_jitter_only_shortens_by_at_most_its_fraction(
    policy: Policy, attempt: int, rand: float
) -> None:
    plain = resiliency.delay(policy, attempt=attempt, rand=0.0)
    jittered = resiliency.delay(policy, attempt=attempt, rand=rand)

    assert plain * (1 - policy.jitter) - 1e-9 <= jittered <= plain + 1e-9


@given(policy=policies, rand=st.floats(0, 1, exclude_max=True))
def test_without_jitter_delays_never_shrink_as_attempts_grow(policy: Policy, rand: float) -> None:
    steady = dataclasses.replace(policy, jitter=0.0)

    delays = [resiliency.delay(steady, attempt=a, rand=rand) for a in range(1, 30)]

    assert delays == sorted(delays)


@given(policy=policies, rand=st.floats(0, 1, exclude_max=True))
def test_an_always_failing_call_is_tried_exactly_max_attempts_times(
    policy: Policy, rand: float
) -> None:
    unlimited = dataclasses.replace(policy, max_duration=None)
    attempt, calls = 1, 1
    while isinstance(
        step := resiliency.after_failure(unlimited, attempt=attempt, retrying_for=0, rand=rand),
        Retry,
    ):
        assert step.attempt == attempt + 1
        attempt, calls = step.attempt, calls + 1

    assert calls == policy.max_attempts
    assert isinstance(step, GiveUp)


@given(policy=policies, rand=st.floats(0, 1, exclude_max=True))
def test_retries_stop_within_max_duration(policy: Policy, rand: float) -> None:
    attempt, elapsed = 1, 0.0
    while isinstance(
        step := resiliency.after_failure(policy, attempt=attempt, retrying_for=elapsed, rand=rand),
        Retry,
    ):
        elapsed += step.delay
        attempt = step.attempt

    assert policy.max_duration is None or elapsed <= policy.max_duration


@given(time_left=st.floats(0, 100, allow_nan=False), rand=st.floats(0, 1, exclude_max=True))
def test_no_retry_is_scheduled_past_the_deadline(time_left: float, rand: float) -> None:
    policy = Policy("p", max_attempts=5, initial_delay=10, max_interval=10)

    step = resiliency.after_failure(
        policy, attempt=1, retrying_for=0, rand=rand, time_left=time_left
    )

    assert isinstance(step, Retry) == (time_left > 10)
    if not isinstance(step, Retry):
        assert step == GiveUp(by_deadline=True)


@given(
    policy=policies,
    rand=st.floats(0, 1, exclude_max=True),
    retry_after=st.floats(0, 10_000, allow_nan=False),
)
def test_a_retry_after_from_the_server_is_waited_out_up_to_max_interval(
    policy: Policy, rand: float, retry_after: float
) -> None:
    unlimited = dataclasses.replace(policy, max_attempts=2, max_duration=None)
    own = resiliency.delay(unlimited, attempt=1, rand=rand)

    step = resiliency.after_failure(
        unlimited, attempt=1, retrying_for=0, rand=rand, retry_after=retry_after
    )

    assert isinstance(step, Retry)
    assert step.delay == max(own, min(retry_after, unlimited.max_interval))
    assert step.delay <= unlimited.max_interval


def test_a_retry_after_does_not_stretch_past_the_deadline() -> None:
    policy = Policy("p", max_attempts=3, initial_delay=1, max_interval=60)

    step = resiliency.after_failure(
        policy, attempt=1, retrying_for=0, rand=0, time_left=10, retry_after=30
    )

    assert step == GiveUp(by_deadline=True)


def test_exhaustion_takes_then_route_when_given() -> None:
    policy = Policy("p", max_attempts=2, then_route=("fallback", "post"))

    assert isinstance(resiliency.after_failure(policy, attempt=1, retrying_for=0, rand=0), Retry)
    assert resiliency.after_failure(policy, attempt=2, retrying_for=0, rand=0) == RouteTo(
        ("fallback", "post")
    )
