"""Validation of rendered manifests against the real schemas, shared by the operator's and the
charts' tests: Kubernetes' own kinds through kubernetes-validate, KEDA's against its published
CRDs in tests/data/keda, and AsyncActors against the CRD (OpenAPI schema and CEL rules)."""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import yaml
from celpy import celtypes
from celpy.adapter import json_to_cel

from asya_operator.crd import apply_defaults

KEDA_SCHEMAS = Path(__file__).resolve().parents[1] / "data" / "keda"
K8S_VERSION = kubernetes_validate.latest_version()
KEDA_API = "keda.sh/v1alpha1"
_KEDA_FILES = {
    "ScaledObject": "scaledobjects",
    "TriggerAuthentication": "triggerauthentications",
}


def _strict(schema: Any) -> Any:
    """KEDA's schema as plain JSON Schema: Kubernetes extensions dropped, and unknown fields
    refused (the API server would silently prune a misspelled one)."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    result = {k: _strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if "properties" in result and "additionalProperties" not in result:
        result["additionalProperties"] = False
    return result


@functools.cache
def keda_validator(kind: str) -> jsonschema.Draft7Validator:
    crd = yaml.safe_load((KEDA_SCHEMAS / f"keda.sh_{_KEDA_FILES[kind]}.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return jsonschema.Draft7Validator(_strict(version["schema"]["openAPIV3Schema"]))


def validate(objects: Iterable[dict[str, Any]]) -> None:
    """Raise on the first object its schema refuses (unknown fields included)."""
    for obj in objects:
        if obj["apiVersion"] == KEDA_API:
            keda_validator(obj["kind"]).validate(obj)
        else:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


# ------------------------------------------------------------------------- AsyncActor CRD


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}.*")


def closed(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema as `kubectl apply` (strict field validation) applies it: an object that does
    not preserve unknown fields refuses them instead of pruning them. metadata is the API
    server's ObjectMeta, which the CRD only restricts."""
    out = copy.deepcopy(schema)
    for path, node in walk(out):
        if (
            path != ".metadata"
            and node.get("type") == "object"
            and not node.get("x-kubernetes-preserve-unknown-fields")
            and "additionalProperties" not in node
        ):
            node["additionalProperties"] = False
    return out


_CEL = celpy.Environment()


@functools.cache
def cel_program(expression: str) -> celpy.Runner:
    return _CEL.program(_CEL.compile(expression))


def cel_value(value: Any) -> Any:
    # The API server treats null fields as absent.
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if v is not None}
    return json_to_cel(value)


class CrdValidator:
    """Admission of a new object by a CRD's first version: OpenAPI schema, then CEL rules
    (after defaulting, each at the node that declares it; transition rules skipped)."""

    def __init__(self, crd: dict[str, Any]) -> None:
        self.schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        # jsonschema ignores the x-kubernetes-* keywords; the CEL rules are evaluated below.
        self._openapi = jsonschema.Draft7Validator(closed(self.schema))

    @classmethod
    def from_file(cls, path: Path) -> CrdValidator:
        return cls(yaml.safe_load(path.read_text()))

    def errors(self, obj: dict[str, Any]) -> list[str]:
        """`spec.scaling.queueLength: 0 is less than ...`, one line per refusal."""
        found = sorted(self._openapi.iter_errors(obj), key=lambda e: list(map(str, e.path)))
        problems = [".".join(map(str, e.absolute_path)) + ": " + e.message for e in found]
        if not problems:
            problems = self._cel_errors(self.schema, apply_defaults(obj, self.schema), "")
        return problems

    def _cel_errors(self, schema: dict[str, Any], value: Any, path: str) -> list[str]:
        problems = []
        for rule in schema.get("x-kubernetes-validations", []):
            if "oldSelf" in rule["rule"]:
                continue
            result = cel_program(rule["rule"]).evaluate({"self": cel_value(value)})
            if not isinstance(result, celtypes.BoolType) or not result:
                problems.append(f"{path or '<root>'}: {rule['message']}")
        if isinstance(value, dict):
            for name, sub in schema.get("properties", {}).items():
                if name in value:
                    problems += self._cel_errors(sub, value[name], f"{path}.{name}")
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict):
                for key, item in value.items():
                    problems += self._cel_errors(extra, item, f"{path}.{key}")
        if isinstance(value, list) and "items" in schema:
            for index, item in enumerate(value):
                problems += self._cel_errors(schema["items"], item, f"{path}[{index}]")
        return problems
