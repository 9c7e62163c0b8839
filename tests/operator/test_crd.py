"""The AsyncActor CRD: in sync with the models, structural, a valid CustomResourceDefinition,
and its OpenAPI schema accepting and refusing the manifests it should. The CEL rules are
exercised in test_cel.py."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pydantic
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from asya_operator import crd
from asya_operator.crd import apply_defaults, build_crd
from asya_operator.models import AsyncActor, AsyncActorSpec
from tests.support.schemas import closed, walk

ROOT = Path(__file__).resolve().parents[2]
CRD = build_crd()
VERSION = CRD["spec"]["versions"][0]
SCHEMA: dict[str, Any] = VERSION["schema"]["openAPIV3Schema"]
SPEC = SCHEMA["properties"]["spec"]
DOCS = ROOT / "docs" / "asyncactor.md"


# ----------------------------------------------------------------------------- helpers


# jsonschema ignores the x-kubernetes-* keys, as unknown keywords; the CEL rules are not here.
VALIDATOR = jsonschema.Draft7Validator(closed(SCHEMA))


def openapi_errors(obj: dict[str, Any]) -> list[str]:
    """Where the schema refuses `obj`: `spec.scaling.queueLength: 0 is less than ...`."""
    errors = sorted(VALIDATOR.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    return [".".join(map(str, e.absolute_path)) + ": " + e.message for e in errors]


def manifest(spec: dict[str, Any], name: str = "summarize") -> dict[str, Any]:
    return {
        "apiVersion": "asya.sh/v1alpha1",
        "kind": "AsyncActor",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }


def examples() -> list[dict[str, Any]]:
    """The AsyncActor manifests of examples/ and the complete one of docs/asyncactor.md."""
    found = []
    for path in sorted((ROOT / "examples").rglob("*.yaml")):
        found += [
            d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "AsyncActor"
        ]
    found.append(docs_example())
    return found


def docs_example() -> dict[str, Any]:
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), re.S)
    manifests = [yaml.safe_load(b) for b in blocks if "kind: AsyncActor" in b]
    assert manifests, "docs/asyncactor.md has no complete AsyncActor example"
    example: dict[str, Any] = manifests[0]
    return example


MINIMAL = {"handler": "summarize.summarize", "image": "ghcr.io/example/summarize:1"}


# --------------------------------------------------------------------------- generation


def test_committed_crd_is_up_to_date() -> None:
    committed = crd.CRD_PATH.read_text()
    assert yaml.safe_load(committed) == CRD, "crds/asyncactor.yaml is out of date: run `make crds`"
    assert committed == crd.render(), "crds/asyncactor.yaml is out of date: run `make crds`"


def test_check_flag_reports_a_stale_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "asyncactor.yaml"
    assert crd.main(["--check", "--output", str(target)]) == 1  # missing
    target.write_text(crd.render().replace("maxItems: 64", "maxItems: 65"))
    assert crd.main(["--check", "--output", str(target)]) == 1
    assert "run `make crds`" in capsys.readouterr().err
    assert crd.main(["--output", str(target)]) == 0
    assert crd.main(["--check", "--output", str(target)]) == 0
    assert target.read_text() == crd.render()


def test_names_scope_and_version() -> None:
    assert CRD["metadata"]["name"] == "asyncactors.asya.sh"
    spec = CRD["spec"]
    assert spec["group"] == "asya.sh"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "AsyncActor",
        "listKind": "AsyncActorList",
        "plural": "asyncactors",
        "singular": "asyncactor",
        "shortNames": ["asya"],
    }
    assert [v["name"] for v in spec["versions"]] == ["v1alpha1"]
    assert VERSION["served"] is True
    assert VERSION["storage"] is True
    assert VERSION["subresources"] == {"status": {}}


def test_printer_columns() -> None:
    columns = {
        c["name"]: (c["jsonPath"], c["type"], c.get("priority", 0))
        for c in VERSION["additionalPrinterColumns"]
    }
    assert columns == {
        "Status": (".status.status", "string", 0),
        "Ready": (".status.readyReplicas", "integer", 0),
        "Desired": (".status.desiredReplicas", "integer", 0),
        "Min": (".spec.scaling.minReplicas", "integer", 0),
        "Max": (".spec.scaling.maxReplicas", "integer", 0),
        "Queued": (".status.queueDepth", "integer", 0),
        "Transport": (".status.transport", "string", 0),
        "Age": (".metadata.creationTimestamp", "date", 0),
        "Actor": (".spec.actor", "string", 1),
        "Handler": (".spec.handler", "string", 1),
        "Image": (".spec.image", "string", 1),
        "Reason": ('.status.conditions[?(@.status=="False")].reason', "string", 1),
    }
    # Age is last of the default columns, as in every kubectl table.
    default = [c["name"] for c in VERSION["additionalPrinterColumns"] if not c.get("priority")]
    assert default[-1] == "Age"


# --------------------------------------------------------------------------- structure

FORBIDDEN = {"$ref", "$defs", "definitions", "anyOf", "allOf", "oneOf", "not", "title", "const"}
FORBIDDEN |= {"patternProperties", "additionalItems", "dependencies", "propertyNames", "$schema"}
FORBIDDEN |= {"exclusiveMinimum", "exclusiveMaximum", "uniqueItems", "prefixItems"}


def test_schema_is_structural() -> None:
    nodes = list(walk(SCHEMA))
    assert len(nodes) > 50
    for path, node in nodes:
        where = path or "<root>"
        assert "type" in node, f"{where} has no type"
        assert not FORBIDDEN & set(node), f"{where} uses {FORBIDDEN & set(node)}"
        assert node.get("default", ...) is not None, f"{where} has a null default"
        if "additionalProperties" in node:
            assert "properties" not in node, f"{where}: properties and additionalProperties"
            assert isinstance(node["additionalProperties"], dict), (
                f"{where}: boolean additionalProperties"
            )
        if node["type"] == "object":
            # An object that lists nothing would be pruned to {} by the API server.
            assert (
                "properties" in node
                or "additionalProperties" in node
                or node.get("x-kubernetes-preserve-unknown-fields")
            ), f"{where} is an object that keeps nothing"
        if node["type"] == "array":
            assert "items" in node, f"{where} is an array without items"
        for name in node.get("required", []):
            assert name in node.get("properties", {}), f"{where} requires unknown {name}"


class _Exclusive(pydantic.BaseModel):
    weight: float = pydantic.Field(gt=0)


class _Union(pydantic.BaseModel):
    size: int | str = 1


class _Untyped(pydantic.BaseModel):
    anything: Any = None


@pytest.mark.parametrize(
    ("model", "problem"),
    [
        (_Exclusive, "_Exclusive.weight: ['exclusiveMinimum'] cannot be expressed"),
        (_Union, "_Union.size: a union of several types is not structural"),
        (_Untyped, "_Untyped.anything: every node of a structural schema needs a type"),
    ],
)
def test_fields_a_structural_schema_cannot_hold_are_refused(
    model: type[pydantic.BaseModel], problem: str
) -> None:
    with pytest.raises(crd.SchemaError, match=re.escape(problem)):
        crd.structural_schema(model)


def test_metadata_restricts_only_name_and_generate_name() -> None:
    metadata = SCHEMA["properties"]["metadata"]
    assert set(metadata) == {"type", "properties"}
    assert set(metadata["properties"]) == {"name", "generateName"}


def test_free_form_kubernetes_shapes_are_preserved() -> None:
    props = SPEC["properties"]
    for key in ("env", "envFrom", "tolerations"):
        assert props[key]["items"] == {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
        }
    assert props["resources"]["x-kubernetes-preserve-unknown-fields"] is True
    assert props["nodeSelector"]["additionalProperties"] == {"type": "string"}
    template = props["template"]
    assert set(template["properties"]) == {"metadata", "spec"}
    assert template["properties"]["spec"]["x-kubernetes-preserve-unknown-fields"] is True


def test_status_comes_from_the_status_model() -> None:
    status = SCHEMA["properties"]["status"]
    assert not status.get("x-kubernetes-preserve-unknown-fields")
    assert set(status["properties"]) == {
        "status",
        "conditions",
        "readyReplicas",
        "desiredReplicas",
        "queueDepth",
        "queue",
        "transport",
        "observedGeneration",
    }
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert conditions["items"]["properties"]["status"]["enum"] == ["True", "False", "Unknown"]


def test_enums_and_descriptions() -> None:
    policy = SPEC["properties"]["resiliency"]["properties"]["policies"]["additionalProperties"]
    assert policy["properties"]["backoff"]["enum"] == ["constant", "linear", "exponential"]
    queue = SPEC["properties"]["queue"]["properties"]["deletionPolicy"]
    assert queue["enum"] == ["DeleteIfEmpty", "Delete", "Retain"]
    for name, prop in SPEC["properties"].items():
        assert prop.get("description"), f"spec.{name} has no description"


def test_nested_objects_default_to_empty_so_their_fields_default() -> None:
    for key in ("scaling", "resiliency", "queue"):
        assert SPEC["properties"][key]["default"] == {}


def test_schema_defaults_are_the_model_defaults() -> None:
    spec = {
        **MINIMAL,
        "resiliency": {"policies": {"retry": {"maxAttempts": 3}}, "rules": []},
        "template": {"spec": {"containers": [{"name": "helper", "image": "busybox"}]}},
    }
    defaulted = apply_defaults(spec, SPEC)
    # Empty lists and maps are the models' defaults too, but the schema leaves them out:
    # an absent list means the same, and stays out of every stored object.
    dumped = AsyncActorSpec.model_validate(spec).model_dump(
        by_alias=True, mode="json", exclude_none=True
    )
    expected = {k: v for k, v in dumped.items() if v not in ([], {})}
    expected["resiliency"]["policies"]["retry"] = {
        k: v for k, v in expected["resiliency"]["policies"]["retry"].items() if v != []
    }
    assert defaulted == expected
    assert defaulted["scaling"] == {
        "enabled": True,
        "minReplicas": 0,
        "maxReplicas": 10,
        "queueLength": 5,
        "pollingInterval": 10,
        "cooldownPeriod": 300,
    }


def test_apply_defaults_replaces_nulls_keeps_given_values_and_copies() -> None:
    spec = {**MINIMAL, "scaling": {"maxReplicas": 3}, "queue": None, "replicas": None}
    defaulted = apply_defaults(spec, SPEC)
    assert defaulted["scaling"]["maxReplicas"] == 3
    assert defaulted["scaling"]["minReplicas"] == 0
    assert defaulted["queue"] == {"deletionPolicy": "DeleteIfEmpty"}
    assert "replicas" not in defaulted  # a null without a default is pruned
    assert spec["scaling"] == {"maxReplicas": 3}  # the input is left alone


def test_rule_field_paths_name_declared_fields() -> None:
    found = 0
    for path, node in walk(SCHEMA):
        for rule in node.get("x-kubernetes-validations", []):
            assert rule.get("message"), f"{path}: rule without message: {rule['rule']}"
            assert "\n" not in rule["message"]
            if "fieldPath" in rule:
                found += 1
                field = rule["fieldPath"].removeprefix(".")
                assert field in node["properties"], f"{path}: fieldPath {rule['fieldPath']}"
            if "oldSelf" in rule["rule"]:
                assert "[]" not in path, f"{path}: transition rule under a list"
    assert found >= 5


def test_lists_and_maps_that_rules_read_are_bounded() -> None:
    """The API server estimates each rule's worst-case cost from these bounds."""
    nodes = dict(walk(SCHEMA))
    bounded = {
        ".spec.resiliency.rules": "maxItems",
        ".spec.resiliency.rules[].errors": "maxItems",
        ".spec.resiliency.rules[].policy": "maxLength",
        ".spec.resiliency.policies": "maxProperties",
        ".spec.resiliency.policies.*.thenRoute": "maxItems",
        ".spec.resiliency.actorTimeout": "maxLength",
        ".spec.resiliency.policies.*.initialDelay": "maxLength",
        ".spec.resiliency.policies.*.maxInterval": "maxLength",
        ".spec.template.spec.containers": "maxItems",
        ".spec.template.spec.containers[].name": "maxLength",
        ".spec.template.spec.initContainers": "maxItems",
        ".spec.template.spec.initContainers[].name": "maxLength",
        ".spec.actor": "maxLength",
        ".metadata.name": "maxLength",
    }
    for path, key in bounded.items():
        assert key in nodes[path], f"{path} needs {key}"
    for path, node in nodes.items():
        if node.get("x-kubernetes-validations") and node["type"] == "array":
            assert "maxItems" in node, f"{path} carries rules but has no maxItems"


# ------------------------------------------------------------- Kubernetes' own schema


@pytest.mark.parametrize("version", ["1.29", latest_version()])
def test_crd_is_a_valid_custom_resource_definition(version: str) -> None:
    kubernetes_validate.validate(copy.deepcopy(CRD), version, strict=True)


def test_the_committed_file_is_a_valid_custom_resource_definition() -> None:
    committed = yaml.safe_load(crd.CRD_PATH.read_text())
    kubernetes_validate.validate(committed, latest_version(), strict=True)


# ------------------------------------------------------------ manifests vs the schema


def test_examples_and_docs_manifests_are_valid() -> None:
    found = examples()
    assert len(found) >= 4
    for obj in found:
        assert openapi_errors(obj) == [], obj["metadata"]["name"]
        assert openapi_errors(apply_defaults(obj, SCHEMA)) == [], obj["metadata"]["name"]
        AsyncActor.from_object(obj)  # the operator reads it too


VALID_SPECS: list[tuple[str, dict[str, Any]]] = [
    ("minimal", MINIMAL),
    ("scaling off, fixed replicas", {**MINIMAL, "scaling": {"enabled": False}, "replicas": 2}),
    (
        "bare-number durations",
        {
            **MINIMAL,
            "resiliency": {
                "actorTimeout": "90",
                "policies": {"p": {"initialDelay": "0.5", "maxInterval": "1h30m"}},
            },
        },
    ),
    (
        "error names",
        {
            **MINIMAL,
            "resiliency": {
                "rules": [
                    {
                        "errors": ["TimeoutError", "openai._exceptions.RateLimitError"],
                        "policy": "default",
                    }
                ]
            },
        },
    ),
    (
        "template only",
        {
            "handler": "m.f",
            "template": {
                "metadata": {"labels": {"team": "ml"}},
                "spec": {
                    "containers": [
                        {
                            "name": "asya-runtime",
                            "image": "python:3.12",
                            "env": [{"name": "X", "value": "1"}],
                        }
                    ],
                    "volumes": [{"name": "cache", "emptyDir": {}}],
                },
            },
        },
    ),
    (
        "kubernetes shapes",
        {
            **MINIMAL,
            "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
            "envFrom": [{"configMapRef": {"name": "c"}}],
            "resources": {"limits": {"nvidia.com/gpu": 1}},
            "tolerations": [{"key": "gpu", "operator": "Exists"}],
            "nodeSelector": {"pool": "gpu"},
        },
    ),
]


@pytest.mark.parametrize(("name", "spec"), VALID_SPECS, ids=[n for n, _ in VALID_SPECS])
def test_valid_specs_pass_the_schema_and_the_models(name: str, spec: dict[str, Any]) -> None:
    assert openapi_errors(manifest(spec)) == []
    AsyncActorSpec.model_validate(spec)


# (case, spec, where the schema refuses it, whether the pydantic models refuse it too)
INVALID_SPECS: list[tuple[str, dict[str, Any], str, bool]] = [
    ("no handler", {"image": "i"}, "spec: 'handler' is a required property", True),
    ("handler without module", {**MINIMAL, "handler": "summarize"}, "spec.handler: ", True),
    ("handler with a dash", {**MINIMAL, "handler": "my-mod.f"}, "spec.handler: ", True),
    ("actor not a DNS label", {**MINIMAL, "actor": "Summarize_V2"}, "spec.actor: ", True),
    ("actor too long", {**MINIMAL, "actor": "a" * 64}, "spec.actor: ", True),
    ("empty image", {**MINIMAL, "image": ""}, "spec.image: ", True),
    ("concurrency 0", {**MINIMAL, "concurrency": 0}, "spec.concurrency: ", True),
    ("replicas too many", {**MINIMAL, "replicas": 1001}, "spec.replicas: ", True),
    (
        "queueLength 0",
        {**MINIMAL, "scaling": {"queueLength": 0}},
        "spec.scaling.queueLength: ",
        True,
    ),
    (
        "minReplicas negative",
        {**MINIMAL, "scaling": {"minReplicas": -1}},
        "spec.scaling.minReplicas: ",
        True,
    ),
    (
        "unknown scaling field",
        {**MINIMAL, "scaling": {"minReplica": 1}},
        "spec.scaling: Additional properties",
        True,
    ),
    ("unknown spec field", {**MINIMAL, "replica": 1}, "spec: Additional properties", True),
    (
        "unknown backoff",
        {**MINIMAL, "resiliency": {"policies": {"p": {"backoff": "fibonacci"}}}},
        "spec.resiliency.policies.p.backoff: ",
        True,
    ),
    (
        "duration in words",
        {**MINIMAL, "resiliency": {"policies": {"p": {"initialDelay": "5 minutes"}}}},
        "spec.resiliency.policies.p.initialDelay: ",
        True,
    ),
    (
        "jitter above 1",
        {**MINIMAL, "resiliency": {"policies": {"p": {"jitter": 1.5}}}},
        "spec.resiliency.policies.p.jitter: ",
        True,
    ),
    (
        "thenRoute not a DNS label",
        {**MINIMAL, "resiliency": {"policies": {"p": {"thenRoute": ["Infer_Small"]}}}},
        "spec.resiliency.policies.p.thenRoute.0: ",
        True,
    ),
    (
        "thenRoute too long",
        {**MINIMAL, "resiliency": {"policies": {"p": {"thenRoute": [f"a{i}" for i in range(17)]}}}},
        "spec.resiliency.policies.p.thenRoute: ",
        True,
    ),
    (
        "rule without errors",
        {**MINIMAL, "resiliency": {"rules": [{"errors": [], "policy": "default"}]}},
        "spec.resiliency.rules.0.errors: ",
        True,
    ),
    (
        "error name with a space",
        {**MINIMAL, "resiliency": {"rules": [{"errors": ["Rate Limit"], "policy": "default"}]}},
        "spec.resiliency.rules.0.errors.0: ",
        True,
    ),
    (
        "too many rules",
        {**MINIMAL, "resiliency": {"rules": [{"errors": ["E"], "policy": "default"}] * 65}},
        "spec.resiliency.rules: ",
        True,
    ),
    (
        "unknown deletion policy",
        {**MINIMAL, "queue": {"deletionPolicy": "Keep"}},
        "spec.queue.deletionPolicy: ",
        True,
    ),
    (
        "grace period too short",
        {**MINIMAL, "terminationGracePeriodSeconds": 5},
        "spec.terminationGracePeriodSeconds: ",
        True,
    ),
    (
        "node selector value not a string",
        {**MINIMAL, "nodeSelector": {"gpu": True}},
        "spec.nodeSelector.gpu: ",
        True,
    ),
    # The pod template is plain JSON to the models; only the schema looks inside it.
    (
        "template field outside metadata and spec",
        {**MINIMAL, "template": {"containers": []}},
        "spec.template: Additional properties",
        False,
    ),
    (
        "template container without a name",
        {**MINIMAL, "template": {"spec": {"containers": [{"image": "i"}]}}},
        "spec.template.spec.containers.0: 'name' is a required property",
        False,
    ),
]


@pytest.mark.parametrize(
    ("name", "spec", "where", "models_refuse"), INVALID_SPECS, ids=[c[0] for c in INVALID_SPECS]
)
def test_invalid_specs_are_refused_by_the_schema(
    name: str, spec: dict[str, Any], where: str, models_refuse: bool
) -> None:
    errors = openapi_errors(manifest(spec))
    assert any(e.startswith(where) for e in errors), errors
    if models_refuse:
        with pytest.raises(pydantic.ValidationError):
            AsyncActorSpec.model_validate(spec)


def test_metadata_name_is_bounded() -> None:
    errors = openapi_errors(manifest(MINIMAL, name="a" * 254))
    assert any(e.startswith("metadata.name: ") for e in errors), errors


# ----------------------------------------------------------------------------------- docs


def test_docs_describe_every_spec_field_and_printer_column() -> None:
    text = DOCS.read_text()
    missing = [
        path
        for path, _ in walk(SPEC)
        if path and "[]" not in path and ".*" not in path and not path.startswith(".template.")
    ]
    missing = [p for p in missing if f"`{p.removeprefix('.')}`" not in text]
    assert missing == [], f"docs/asyncactor.md does not mention {missing}"
    status = [
        p for p in SCHEMA["properties"]["status"]["properties"] if f"`status.{p}`" not in text
    ]
    assert status == [], f"docs/asyncactor.md does not mention {status}"
    columns = [c["name"] for c in VERSION["additionalPrinterColumns"] if c["name"] not in text]
    assert columns == [], f"docs/asyncactor.md does not mention columns {columns}"
