"""Retry policies: which policy an error falls under, and what to do after a failure.

Pure. The actor's `spec.resiliency` arrives as JSON (ASYA_RESILIENCY):

    actorTimeout: 5m                     # per call; the runtime enforces it
    policies:
      default: {maxAttempts: 1}          # applies when no rule matches
      rate-limited:
        maxAttempts: 6                   # attempts in all, the first one included
        backoff: exponential             # constant | linear | exponential
        initialDelay: 2s
        maxInterval: 1m                  # no single delay is longer
        jitter: 0.2                      # a delay is drawn from [d * (1 - jitter), d]
        maxDuration: 10m                 # no retry starts later than this after the first
                                         # failure at this actor
        thenRoute: [fallback-model]      # when exhausted: go on to these actors instead
    rules:                               # first match wins
      - errors: [openai.RateLimitError, TimeoutError]
        policy: rate-limited

An error name in a rule matches a class of the handler error's MRO by class name, and by
module when the rule names one; private module segments (`_exceptions`) are ignored, so
`openai.RateLimitError` matches `openai._exceptions.RateLimitError`.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from asya_shared import names
from asya_shared.durations import parse_duration

DEFAULT_POLICY = "default"
# Seconds per call when neither actorTimeout nor ASYA_ACTOR_TIMEOUT says otherwise.
DEFAULT_ACTOR_TIMEOUT = 300.0


class Backoff(StrEnum):
    CONSTANT = "constant"
    LINEAR = "linear"
    EXPONENTIAL = "exponential"


@dataclass(frozen=True)
class Policy:
    name: str
    max_attempts: int = 1
    backoff: Backoff = Backoff.EXPONENTIAL
    initial_delay: float = 1.0
    max_interval: float = 300.0
    jitter: float = 0.0
    max_duration: float | None = None
    then_route: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rule:
    errors: tuple[str, ...]
    policy: str


@dataclass(frozen=True)
class Resiliency:
    actor_timeout: float | None = None  # None: not set here (ASYA_ACTOR_TIMEOUT applies)
    policies: Mapping[str, Policy] = field(
        default_factory=lambda: {DEFAULT_POLICY: Policy(DEFAULT_POLICY)}
    )
    rules: tuple[Rule, ...] = ()

    @property
    def configured(self) -> bool:
        """Whether anything beyond the built-in single attempt was asked for."""
        return bool(self.rules) or self.policies[DEFAULT_POLICY] != Policy(DEFAULT_POLICY)


# ------------------------------------------------------------------------------ parsing

_POLICY_FIELDS = {
    "maxAttempts", "backoff", "initialDelay", "maxInterval", "jitter", "maxDuration", "thenRoute"
}  # fmt: skip
_TOP_FIELDS = {"actorTimeout", "policies", "rules"}
_RULE_FIELDS = {"errors", "policy"}


class ResiliencyError(ValueError):
    """The resiliency configuration is not valid; the message gives the path of the problem."""


def parse(raw: Any) -> Resiliency:
    if raw is None:
        return Resiliency()
    where = "resiliency"
    _check_object(raw, where, _TOP_FIELDS)
    timeout = raw.get("actorTimeout")
    actor_timeout = None
    if timeout is not None:
        actor_timeout = _duration(timeout, f"{where}.actorTimeout")
        if actor_timeout <= 0:
            raise ResiliencyError(f"{where}.actorTimeout must be more than zero")
    raw_policies = raw.get("policies") or {}
    _check_object(raw_policies, f"{where}.policies", None)
    policies = {
        name: _policy(name, spec, f"{where}.policies.{name}") for name, spec in raw_policies.items()
    }
    policies.setdefault(DEFAULT_POLICY, Policy(DEFAULT_POLICY))
    raw_rules = raw.get("rules") or []
    if not isinstance(raw_rules, list):
        raise ResiliencyError(f"{where}.rules must be a list")
    rules = tuple(_rule(item, f"{where}.rules[{i}]", policies) for i, item in enumerate(raw_rules))
    return Resiliency(actor_timeout=actor_timeout, policies=policies, rules=rules)


def _policy(name: Any, spec: Any, where: str) -> Policy:
    if not isinstance(name, str) or not name:
        raise ResiliencyError(f"{where}: policy names are non-empty strings")
    _check_object(spec, where, _POLICY_FIELDS)
    max_attempts = spec.get("maxAttempts", 1)
    if not isinstance(max_attempts, int) or isinstance(max_attempts, bool) or max_attempts < 1:
        raise ResiliencyError(f"{where}.maxAttempts must be an integer of at least 1")
    backoff = spec.get("backoff", Backoff.EXPONENTIAL.value)
    if backoff not in {b.value for b in Backoff}:
        raise ResiliencyError(
            f"{where}.backoff: {backoff!r} is not one of constant, linear, exponential"
        )
    jitter = spec.get("jitter", 0.0)
    if not isinstance(jitter, int | float) or isinstance(jitter, bool) or not 0 <= jitter <= 1:
        raise ResiliencyError(f"{where}.jitter must be a number from 0 to 1")
    initial = _duration(spec.get("initialDelay", 1.0), f"{where}.initialDelay")
    max_interval = _duration(spec.get("maxInterval", 300.0), f"{where}.maxInterval")
    if max_interval < initial:
        raise ResiliencyError(f"{where}.maxInterval must not be shorter than initialDelay")
    max_duration = spec.get("maxDuration")
    then_route = spec.get("thenRoute") or []
    if not isinstance(then_route, list):
        raise ResiliencyError(f"{where}.thenRoute must be a list of actor names")
    for actor in then_route:
        try:
            names.check_actor_name(actor)
        except names.InvalidName as exc:
            raise ResiliencyError(f"{where}.thenRoute: {exc}") from None
    return Policy(
        name=name,
        max_attempts=max_attempts,
        backoff=Backoff(backoff),
        initial_delay=initial,
        max_interval=max_interval,
        jitter=float(jitter),
        max_duration=None if max_duration is None else _duration(max_duration,
                                                                  f"{where}.maxDuration"),
        then_route=tuple(then_route),
    )  # fmt: skip


def _rule(item: Any, where: str, policies: Mapping[str, Policy]) -> Rule:
    _check_object(item, where, _RULE_FIELDS)
    errors = item.get("errors")
    if (
        not isinstance(errors, list)
        or not errors
        or not all(isinstance(e, str) and e for e in errors)
    ):
        raise ResiliencyError(f"{where}.errors must be a non-empty list of exception names")
    policy = item.get("policy")
    if policy not in policies:
        known = ", ".join(sorted(policies))
        raise ResiliencyError(f"{where}.policy {policy!r} is not defined (policies: {known})")
    return Rule(tuple(errors), policy)


def _check_object(value: Any, where: str, allowed: set[str] | None) -> None:
    if not isinstance(value, dict):
        raise ResiliencyError(f"{where} must be an object")
    if allowed is None:
        return
    for key in value:
        if key not in allowed:
            hint = difflib.get_close_matches(str(key), allowed, n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ResiliencyError(f"{where}: unknown field {key!r}{suggestion}")


def _duration(value: Any, where: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ResiliencyError(f"{where}: {exc}") from None


# ------------------------------------------------------------------------------ choosing


def matches(rule_name: str, class_name: str) -> bool:
    """Whether an error name from a rule names the class `class_name` (a qualified name)."""
    rule_module, _, rule_class = rule_name.rpartition(".")
    module, _, cls = class_name.rpartition(".")
    if rule_class != cls:
        return False
    if not rule_module:
        return True
    public = ".".join(part for part in module.split(".") if not part.startswith("_"))
    return public == rule_module or public.startswith(rule_module + ".") or module == rule_module


def choose(resiliency: Resiliency, error_mro: Sequence[str]) -> Policy:
    """The policy of the first rule naming a class in `error_mro`; else the default one."""
    for rule in resiliency.rules:
        if any(matches(name, cls) for name in rule.errors for cls in error_mro):
            return resiliency.policies[rule.policy]
    return resiliency.policies[DEFAULT_POLICY]


def delay(policy: Policy, *, attempt: int, rand: float) -> float:
    """Seconds to wait before attempt `attempt + 1`, after `attempt` failed (1-based).

    `rand` in [0, 1) is the caller's random draw, so that this function stays pure.
    """
    # The exponent is capped: past 2**63 every delay is max_interval anyway, and a float
    # power of a large attempt count would overflow.
    steps = {
        Backoff.CONSTANT: 1.0,
        Backoff.LINEAR: float(attempt),
        Backoff.EXPONENTIAL: 2.0 ** min(attempt - 1, 63),
    }
    base = policy.initial_delay * steps[policy.backoff]
    capped = min(base, policy.max_interval)
    return capped * (1 - policy.jitter * rand)


@dataclass(frozen=True)
class Retry:
    delay: float
    attempt: int  # the number of the next attempt


@dataclass(frozen=True)
class RouteTo:
    actors: tuple[str, ...]


@dataclass(frozen=True)
class GiveUp:
    by_deadline: bool = False  # the envelope's deadline, not the policy, ruled out a retry


Next = Retry | RouteTo | GiveUp


def after_failure(
    policy: Policy,
    *,
    attempt: int,
    retrying_for: float,
    rand: float,
    time_left: float | None = None,
    retry_after: float | None = None,
) -> Next:
    """What follows failed attempt number `attempt` (1-based) at this actor.

    `retrying_for` is how long ago the first failure at this actor was; `time_left` is how
    long until the envelope's deadline, if it has one. A retry that could not start before
    either limit is not scheduled. `retry_after` is the failed service's own wait (an HTTP
    Retry-After): the retry waits at least that long, but never longer than `maxInterval`.
    """
    by_deadline = False
    if attempt < policy.max_attempts:
        wait = delay(policy, attempt=attempt, rand=rand)
        if retry_after is not None:
            wait = max(wait, min(retry_after, policy.max_interval))
        within_duration = policy.max_duration is None or retrying_for + wait <= policy.max_duration
        within_deadline = time_left is None or wait < time_left
        if within_duration and within_deadline:
            return Retry(delay=wait, attempt=attempt + 1)
        by_deadline = within_duration and not within_deadline
    if policy.then_route:
        return RouteTo(policy.then_route)
    return GiveUp(by_deadline=by_deadline)
