"""The CRD's CEL rules (x-kubernetes-validations), evaluated with cel-python the way the API
server evaluates them: after defaulting, each rule at the node that declares it (`self` that
node, skipped where the node is absent), transition rules (`oldSelf`) only on updates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from celpy import celtypes

from asya_operator.crd import apply_defaults
from tests.operator.test_crd import SCHEMA, examples, manifest, openapi_errors
from tests.support.schemas import cel_program, cel_value, walk

RULES = [
    (path or "<root>", rule["rule"])
    for path, node in walk(SCHEMA)
    for rule in node.get("x-kubernetes-validations", [])
]


@dataclass(frozen=True)
class Refusal:
    path: str  # the node that declares the rule: "<root>", ".spec.scaling", ...
    rule: str
    message: str


def _evaluate(schema: dict[str, Any], new: Any, old: Any, path: str) -> list[Refusal]:
    refusals = []
    for rule in schema.get("x-kubernetes-validations", []):
        transition = "oldSelf" in rule["rule"]
        if transition and old is None:
            continue
        activation = {"self": cel_value(new)}
        if transition:
            activation["oldSelf"] = cel_value(old)
        result = cel_program(rule["rule"]).evaluate(activation)
        # An evaluation error would refuse the request in the API server too, with a message
        # nobody understands: a rule must give a boolean for every schema-valid object.
        assert isinstance(result, celtypes.BoolType), f"{path}: {rule['rule']} gave {result!r}"
        if not result:
            message = rule["message"]
            if "messageExpression" in rule:
                message = str(cel_program(rule["messageExpression"]).evaluate(activation))
            refusals.append(Refusal(path or "<root>", rule["rule"], message))
    old_map = old if isinstance(old, dict) else {}
    if isinstance(new, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in new:
                refusals += _evaluate(sub, new[name], old_map.get(name), f"{path}.{name}")
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            # Map values are correlated by key for transition rules.
            for key, value in new.items():
                refusals += _evaluate(extra, value, old_map.get(key), f"{path}.*")
    if isinstance(new, list) and "items" in schema:
        # Items of an atomic list are never correlated with old ones.
        for item in new:
            refusals += _evaluate(schema["items"], item, None, f"{path}[]")
    return refusals


def refusals(obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[Refusal]:
    """What the CEL rules say about creating `obj` (or updating `old` to it)."""
    before = None if old is None else apply_defaults(old, SCHEMA)
    return _evaluate(SCHEMA, apply_defaults(obj, SCHEMA), before, "")


IMAGE = "ghcr.io/example/summarize:1"


def spec(**fields: Any) -> dict[str, Any]:
    """A valid spec with `fields` changed; a field given as None is left out."""
    base: dict[str, Any] = {"handler": "summarize.summarize", "image": IMAGE, **fields}
    return {k: v for k, v in base.items() if v is not None}


def pod(**lists: list[dict[str, Any]]) -> dict[str, Any]:
    return {"spec": dict(lists)}


def policy_rule(policy: str) -> dict[str, Any]:
    return {"errors": ["openai.RateLimitError"], "policy": policy}


# ---------------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class Case:
    name: str
    obj: dict[str, Any]
    old: dict[str, Any] | None = None


RUNTIME = "asya-runtime"
NO_SIDECAR = (
    "template.spec.containers must not contain asya-sidecar: the operator injects that container"
)
REPLICAS = (
    "replicas is only allowed when scaling.enabled is false: with scaling on, KEDA sets the "
    "replica count between scaling.minReplicas and scaling.maxReplicas"
)
IMAGE_REQUIRED = (
    "image is required unless the handler is a built-in caller (asya_callers.*) or "
    "spec.template gives its asya-runtime container an image"
)
RUNTIME_COMMAND = (
    "the asya-runtime container in template.spec.{} must not set command or args: the operator "
    "runs the Asya runtime there, which calls spec.handler"
)
NAME_NOT_LABEL = (
    "metadata.name must be a DNS label (at most 63 characters, no dots) to serve as the actor "
    "name; otherwise set spec.actor"
)
IMMUTABLE = (
    "the actor name (spec.actor, else metadata.name) cannot change: it names the actor's queue "
    "and its place in routes; create a new AsyncActor instead"
)
UNKNOWN_POLICY = "resiliency.rules names policy {}, which resiliency.policies does not define"
TIMEOUT_ZERO = "resiliency.actorTimeout must be longer than zero"

# (case, where the refusing rule is declared, its message)
INVALID: list[tuple[Case, str, str]] = [
    (Case("replicas with scaling on by default", manifest(spec(replicas=2))), ".spec", REPLICAS),
    (
        Case("replicas with scaling on", manifest(spec(replicas=0, scaling={"enabled": True}))),
        ".spec",
        REPLICAS,
    ),
    (Case("no image, no template", manifest(spec(image=None))), ".spec", IMAGE_REQUIRED),
    (
        # Only the package's own handlers ship in the Asya image; a look-alike name does not.
        Case(
            "no image, handler named like a caller",
            manifest(spec(image=None, handler="asya_callersx.f")),
        ),
        ".spec",
        IMAGE_REQUIRED,
    ),
    (
        Case(
            "no image, runtime without image",
            manifest(spec(image=None, template=pod(containers=[{"name": RUNTIME}]))),
        ),
        ".spec",
        IMAGE_REQUIRED,
    ),
    (
        Case(
            "no image, runtime image empty",
            manifest(spec(image=None, template=pod(containers=[{"name": RUNTIME, "image": ""}]))),
        ),
        ".spec",
        IMAGE_REQUIRED,
    ),
    (
        Case(
            "no image, only another container has one",
            manifest(
                spec(image=None, template=pod(containers=[{"name": "helper", "image": "busybox"}]))
            ),
        ),
        ".spec",
        IMAGE_REQUIRED,
    ),
    (
        Case(
            "no image, template without spec",
            manifest(spec(image=None, template={"metadata": {"labels": {"a": "b"}}})),
        ),
        ".spec",
        IMAGE_REQUIRED,
    ),
    (
        Case(
            "minReplicas above maxReplicas",
            manifest(spec(scaling={"minReplicas": 5, "maxReplicas": 2})),
        ),
        ".spec.scaling",
        "scaling.minReplicas (5) must not be greater than scaling.maxReplicas (2)",
    ),
    (
        Case(
            "minReplicas above the default maxReplicas", manifest(spec(scaling={"minReplicas": 11}))
        ),
        ".spec.scaling",
        "scaling.minReplicas (11) must not be greater than scaling.maxReplicas (10)",
    ),
    (
        Case(
            "rule names a policy, no policies",
            manifest(spec(resiliency={"rules": [policy_rule("rate-limited")]})),
        ),
        ".spec.resiliency",
        UNKNOWN_POLICY.format("rate-limited"),
    ),
    (
        Case(
            "rule names a misspelt policy",
            manifest(
                spec(
                    resiliency={
                        "policies": {"rate-limited": {"maxAttempts": 3}},
                        "rules": [policy_rule("rate-limit")],
                    }
                )
            ),
        ),
        ".spec.resiliency",
        UNKNOWN_POLICY.format("rate-limit"),
    ),
    (
        Case(
            "second rule names an unknown policy",
            manifest(
                spec(
                    resiliency={
                        "policies": {"gpu-oom": {}},
                        "rules": [policy_rule("gpu-oom"), policy_rule("Default")],
                    }
                )
            ),
        ),
        ".spec.resiliency",
        UNKNOWN_POLICY.format("Default"),
    ),
    (
        Case("actorTimeout 0s", manifest(spec(resiliency={"actorTimeout": "0s"}))),
        ".spec.resiliency",
        TIMEOUT_ZERO,
    ),
    (
        Case("actorTimeout bare 0", manifest(spec(resiliency={"actorTimeout": "0.0"}))),
        ".spec.resiliency",
        TIMEOUT_ZERO,
    ),
    (
        Case(
            "initialDelay above the default maxInterval",
            manifest(spec(resiliency={"policies": {"slow": {"initialDelay": "10m"}}})),
        ),
        ".spec.resiliency.policies.*",
        "maxInterval (5m) must not be shorter than initialDelay (10m)",
    ),
    (
        Case(
            "bare-number initialDelay above maxInterval",
            manifest(
                spec(resiliency={"policies": {"p": {"initialDelay": "90", "maxInterval": "1m"}}})
            ),
        ),
        ".spec.resiliency.policies.*",
        "maxInterval (1m) must not be shorter than initialDelay (90)",
    ),
    (
        Case(
            "maxInterval below the default initialDelay",
            manifest(spec(resiliency={"policies": {"p": {"maxInterval": "500ms"}}})),
        ),
        ".spec.resiliency.policies.*",
        "maxInterval (500ms) must not be shorter than initialDelay (1s)",
    ),
    (
        Case(
            "sidecar in containers",
            manifest(spec(template=pod(containers=[{"name": "asya-sidecar", "image": "x"}]))),
        ),
        ".spec.template.spec.containers",
        NO_SIDECAR,
    ),
    (
        Case(
            "sidecar in initContainers",
            manifest(spec(template=pod(initContainers=[{"name": "asya-sidecar"}]))),
        ),
        ".spec.template.spec.initContainers",
        NO_SIDECAR.replace("containers", "initContainers", 1),
    ),
    (
        Case(
            "runtime with command",
            manifest(
                spec(template=pod(containers=[{"name": RUNTIME, "command": ["python", "app.py"]}]))
            ),
        ),
        ".spec.template.spec.containers",
        RUNTIME_COMMAND.format("containers"),
    ),
    (
        Case(
            "runtime with args",
            manifest(spec(template=pod(containers=[{"name": RUNTIME, "args": ["--fast"]}]))),
        ),
        ".spec.template.spec.containers",
        RUNTIME_COMMAND.format("containers"),
    ),
    (
        Case(
            "runtime init container with command",
            manifest(spec(template=pod(initContainers=[{"name": RUNTIME, "command": ["sh"]}]))),
        ),
        ".spec.template.spec.initContainers",
        RUNTIME_COMMAND.format("initContainers"),
    ),
    (
        Case(
            "two containers with one name",
            manifest(spec(template=pod(containers=[{"name": "helper"}, {"name": "helper"}]))),
        ),
        ".spec.template.spec.containers",
        "template.spec.containers has more than one container named helper",
    ),
    (
        Case(
            "two runtime init containers",
            manifest(spec(template=pod(initContainers=[{"name": RUNTIME}, {"name": RUNTIME}]))),
        ),
        ".spec.template.spec.initContainers",
        "template.spec.initContainers has more than one container named asya-runtime",
    ),
    (
        Case(
            "runtime in both lists",
            manifest(
                spec(
                    template=pod(containers=[{"name": RUNTIME}], initContainers=[{"name": RUNTIME}])
                )
            ),
        ),
        ".spec.template.spec",
        "container name asya-runtime is used in both template.spec.containers and "
        "template.spec.initContainers",
    ),
    (
        Case("dotted name, no actor", manifest(spec(), name="summarize.v2")),
        "<root>",
        NAME_NOT_LABEL,
    ),
    (
        Case("64-character name, no actor", manifest(spec(), name="s" * 64)),
        "<root>",
        NAME_NOT_LABEL,
    ),
    (
        Case(
            "actor changed",
            manifest(spec(actor="summarize-v2")),
            old=manifest(spec(actor="summarize-v1")),
        ),
        "<root>",
        IMMUTABLE,
    ),
    (
        Case("actor set to another name", manifest(spec(actor="other")), old=manifest(spec())),
        "<root>",
        IMMUTABLE,
    ),
    (
        Case(
            "actor dropped, name differs",
            manifest(spec()),
            old=manifest(spec(actor="summarize-v1")),
        ),
        "<root>",
        IMMUTABLE,
    ),
]

VALID: list[Case] = [
    Case("minimal", manifest(spec())),
    Case("scaling off with fixed replicas", manifest(spec(replicas=3, scaling={"enabled": False}))),
    Case(
        "scaling off without replicas", manifest(spec(scaling={"enabled": False, "minReplicas": 1}))
    ),
    Case(
        "minReplicas equals maxReplicas",
        manifest(spec(scaling={"minReplicas": 4, "maxReplicas": 4})),
    ),
    Case(
        "image from the template",
        manifest(
            spec(
                image=None,
                template=pod(
                    containers=[
                        {
                            "name": RUNTIME,
                            "image": "python:3.12",
                            "env": [{"name": "A", "value": "1"}],
                        }
                    ]
                ),
            )
        ),
    ),
    Case(
        "no image for a built-in caller",
        manifest(spec(image=None, handler="asya_callers.openai.Chat.handle")),
    ),
    Case(
        "image from a runtime init container",
        manifest(
            spec(
                image=None,
                template=pod(
                    initContainers=[
                        {"name": RUNTIME, "image": "python:3.12", "restartPolicy": "Always"}
                    ]
                ),
            )
        ),
    ),
    Case(
        "runtime merged with spec.image, helpers beside it",
        manifest(
            spec(
                template=pod(
                    containers=[
                        {
                            "name": RUNTIME,
                            "volumeMounts": [{"name": "models", "mountPath": "/models"}],
                        },
                        {"name": "proxy", "image": "envoy", "command": ["envoy"]},
                    ],
                    initContainers=[{"name": "fetch", "image": "busybox", "args": ["wget"]}],
                )
            )
        ),
    ),
    Case(
        "resiliency of docs/resiliency.md",
        manifest(
            spec(
                resiliency={
                    "actorTimeout": "2m",
                    "policies": {
                        "default": {"maxAttempts": 1},
                        "rate-limited": {
                            "maxAttempts": 6,
                            "backoff": "exponential",
                            "initialDelay": "2s",
                            "maxInterval": "1m",
                            "jitter": 0.2,
                            "maxDuration": "10m",
                        },
                        "gpu-oom": {"maxAttempts": 2, "thenRoute": ["infer-small"]},
                    },
                    "rules": [
                        {
                            "errors": [
                                "openai.RateLimitError",
                                "anthropic.RateLimitError",
                                "TimeoutError",
                            ],
                            "policy": "rate-limited",
                        },
                        {"errors": ["torch.OutOfMemoryError"], "policy": "gpu-oom"},
                    ],
                }
            )
        ),
    ),
    Case(
        "rule to the built-in default policy",
        manifest(spec(resiliency={"rules": [policy_rule("default")]})),
    ),
    Case(
        "bare-number durations",
        manifest(
            spec(
                resiliency={
                    "actorTimeout": "30",
                    "policies": {"p": {"initialDelay": "1.5", "maxInterval": "1.5"}},
                }
            )
        ),
    ),
    Case(
        "maxInterval equal to initialDelay in other units",
        manifest(
            spec(resiliency={"policies": {"p": {"initialDelay": "60s", "maxInterval": "1m"}}})
        ),
    ),
    Case(
        "dotted metadata.name with spec.actor",
        manifest(spec(actor="summarize"), name="summarize.v2"),
    ),
    Case("63-character name", manifest(spec(), name="s" * 63)),
    Case("update, actor still defaulted", manifest(spec(concurrency=8)), old=manifest(spec())),
    Case(
        "update, defaulted actor spelt out", manifest(spec(actor="summarize")), old=manifest(spec())
    ),
    Case(
        "update, actor equal to the name dropped",
        manifest(spec()),
        old=manifest(spec(actor="summarize")),
    ),
    Case(
        "update, actor kept, scaling changed",
        manifest(spec(actor="sum", scaling={"maxReplicas": 50})),
        old=manifest(spec(actor="sum")),
    ),
    *(Case(f"example {obj['metadata']['name']}", obj) for obj in examples()),
]


@pytest.mark.parametrize(("case", "where", "message"), INVALID, ids=[c.name for c, _, _ in INVALID])
def test_invalid_specs_are_refused_by_the_expected_rule(
    case: Case, where: str, message: str
) -> None:
    # The schema itself accepts them: the CEL rule is what stops each one.
    assert openapi_errors(case.obj) == []
    found = refusals(case.obj, case.old)
    assert [(r.path, r.message) for r in found] == [(where, message)]


@pytest.mark.parametrize("case", VALID, ids=[c.name for c in VALID])
def test_valid_specs_are_accepted_by_every_rule(case: Case) -> None:
    assert openapi_errors(case.obj) == []
    assert refusals(case.obj, case.old) == []


def test_tables_are_large_enough_and_every_rule_refuses_something() -> None:
    assert len(INVALID) >= 20
    assert len(VALID) >= 10
    refusing = {(r.path, r.rule) for case, _, _ in INVALID for r in refusals(case.obj, case.old)}
    assert set(RULES) - refusing == set()


def test_transition_rules_wait_for_an_old_object() -> None:
    changed = manifest(spec(actor="other"))
    assert refusals(changed) == []  # a create: no oldSelf, the transition rule is skipped
    assert [r.message for r in refusals(changed, old=manifest(spec()))] == [IMMUTABLE]


def test_rules_on_absent_nodes_are_skipped() -> None:
    # No template, no policies, no rules: their rules never run, nothing errors.
    assert refusals(manifest(spec(resiliency={}))) == []


def test_every_rule_and_message_expression_compiles() -> None:
    for _, node in walk(SCHEMA):
        for rule in node.get("x-kubernetes-validations", []):
            cel_program(rule["rule"])
            if "messageExpression" in rule:
                cel_program(rule["messageExpression"])
    assert len(RULES) >= 12
