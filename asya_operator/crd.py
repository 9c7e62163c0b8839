"""The AsyncActor and AsyaBinding CustomResourceDefinitions, generated from pydantic models.

`asya_operator/models.py` and `binding_models.py` are the single source: fields, defaults,
constraints, descriptions and CEL rules all live there, and this module only translates
pydantic's JSON Schema into the *structural* OpenAPI v3 schema the API server demands (a
`type` on every node, no `$ref`, no `anyOf`, optional fields simply left out of `required`).

    python -m asya_operator.crd           # (or `make crds`) rewrite crds/asyncactor.yaml,
                                          # crds/asyabinding.yaml and the chart's copies
    python -m asya_operator.crd --check   # exit 1 when a committed file is out of date
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from asya_operator import binding_models
from asya_operator.models import (
    GROUP,
    KIND,
    PLURAL,
    RESOURCE_VALIDATIONS,
    SHORT_NAMES,
    VERSION,
    AsyncActorSpec,
    AsyncActorStatus,
)

ROOT = Path(__file__).resolve().parent.parent
CRD_PATH = ROOT / "crds" / "asyncactor.yaml"
# Helm installs what a chart's crds/ holds, and a chart cannot reach outside its directory.
CHART_CRD_PATH = ROOT / "charts" / "asya-operator" / "crds" / "asyncactor.yaml"
BINDING_CRD_PATH = ROOT / "crds" / "asyabinding.yaml"
CHART_BINDING_CRD_PATH = ROOT / "charts" / "asya-operator" / "crds" / "asyabinding.yaml"
HEADER = (
    "# Generated from asya_operator/models.py by `make crds` (python -m asya_operator.crd).\n"
    "# Do not edit by hand: tests/operator/test_crd.py fails when it is out of date.\n"
)
BINDING_HEADER = (
    "# Generated from asya_operator/binding_models.py by `make crds`"
    " (python -m asya_operator.crd).\n"
    "# Do not edit by hand: tests/operator/test_binding_crd.py fails when it is out of date.\n"
)

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Status", "type": "string", "jsonPath": ".status.status"},
    {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
    {"name": "Desired", "type": "integer", "jsonPath": ".status.desiredReplicas"},
    {"name": "Min", "type": "integer", "jsonPath": ".spec.scaling.minReplicas"},
    {"name": "Max", "type": "integer", "jsonPath": ".spec.scaling.maxReplicas"},
    {"name": "Queued", "type": "integer", "jsonPath": ".status.queueDepth"},
    {"name": "Transport", "type": "string", "jsonPath": ".status.transport"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    # -o wide. Actor is empty when it defaults to metadata.name.
    {"name": "Actor", "type": "string", "jsonPath": ".spec.actor", "priority": 1},
    {"name": "Handler", "type": "string", "jsonPath": ".spec.handler", "priority": 1},
    {"name": "Image", "type": "string", "jsonPath": ".spec.image", "priority": 1},
    {
        "name": "Reason",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.status=="False")].reason',
        "priority": 1,
        "description": "Reasons of the conditions that are False.",
    },
]

# OpenAPI keywords a structural schema may carry; anything else pydantic emits (exclusive
# bounds, oneOf, const, propertyNames, ...) is refused loudly rather than silently dropped.
_KEPT = (
    "description",
    "type",
    "format",
    "enum",
    "default",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "required",
    "nullable",
)
_DROPPED = {"title"}
_PRESERVE = "x-kubernetes-preserve-unknown-fields"
_VALIDATIONS = "x-kubernetes-validations"


class SchemaError(ValueError):
    """A model field that cannot be expressed in a structural schema; names its path."""


def _inline(node: Mapping[str, Any], defs: Mapping[str, Any], path: str) -> dict[str, Any]:
    """`node` with its `$ref`, single `allOf` or nullable `anyOf` replaced by the target.

    Keys next to the reference win: a field's description and default override the model's.
    """
    merged = dict(node)
    while True:
        if "$ref" in merged:
            name = merged.pop("$ref").rsplit("/", 1)[-1]
            target = defs[name]
        elif "allOf" in merged and len(merged["allOf"]) == 1:
            target = merged.pop("allOf")[0]
        elif "anyOf" in merged:
            branches = [b for b in merged.pop("anyOf") if b != {"type": "null"}]
            if len(branches) != 1:
                raise SchemaError(f"{path}: a union of several types is not structural")
            # Optional means "not required", never "may be null" (its null default is dropped).
            target = branches[0]
        else:
            return merged
        merged = {**target, **merged}


_RULE_KEYS = ("rule", "message", "messageExpression", "fieldPath", "reason")


def _rules(rules: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    # The rule first, whatever order pydantic's schema output gave the keys.
    return [
        {k: r[k] for k in (*_RULE_KEYS, *sorted(set(r) - set(_RULE_KEYS))) if k in r} for r in rules
    ]


def _structural(node: Mapping[str, Any], defs: Mapping[str, Any], path: str) -> dict[str, Any]:
    node = _inline(node, defs, path)
    out: dict[str, Any] = {}
    for key in _KEPT:
        if key in node and not (key == "default" and node[key] is None):
            out[key] = copy.deepcopy(node[key])
        if key == "type" and (node.get(_PRESERVE) or node.get("additionalProperties") is True):
            out[_PRESERVE] = True
    if "properties" in node:
        out["properties"] = {
            name: _structural(sub, defs, f"{path}.{name}")
            for name, sub in node["properties"].items()
        }
    if "items" in node:
        out["items"] = _structural(node["items"], defs, f"{path}[]")
    extra = node.get("additionalProperties")
    if isinstance(extra, Mapping):
        out["additionalProperties"] = _structural(extra, defs, f"{path}.*")
    # additionalProperties: false (extra="forbid") needs no keyword: the API server prunes,
    # or under strict field validation refuses, every field the schema does not list.
    for key in sorted(k for k in node if k.startswith("x-kubernetes-") and k != _PRESERVE):
        value = node[key]
        out[key] = _rules(value) if key == _VALIDATIONS else copy.deepcopy(value)
    unknown = set(node) - set(out) - _DROPPED - {"additionalProperties", "default"}
    if unknown:
        raise SchemaError(f"{path}: {sorted(unknown)} cannot be expressed in a structural schema")
    if "type" not in out:
        raise SchemaError(f"{path}: every node of a structural schema needs a type")
    return out


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a model, fields under their manifest (alias) names."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _structural(raw, defs, model.__name__)


BINDING_PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Mode", "type": "string", "jsonPath": ".status.mode"},
    {"name": "Kind", "type": "string", "jsonPath": ".spec.workloadRef.kind"},
    {"name": "Workload", "type": "string", "jsonPath": ".spec.workloadRef.name"},
    {"name": "Protocol", "type": "string", "jsonPath": ".spec.caller.protocol"},
    {"name": "Min", "type": "integer", "jsonPath": ".spec.scaling.minReplicas"},
    {"name": "Max", "type": "integer", "jsonPath": ".spec.scaling.maxReplicas"},
    {"name": "Transport", "type": "string", "jsonPath": ".spec.transport.name"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Queue", "type": "string", "jsonPath": ".status.queue", "priority": 1},
    {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint", "priority": 1},
    {
        "name": "Reason",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.status=="False")].reason',
        "priority": 1,
        "description": "Reasons of the conditions that are False.",
    },
]


def _object_schema(
    description: str,
    spec: type[BaseModel],
    status: type[BaseModel],
    validations: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    return {
        "description": description,
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            # Kubernetes caps names at 253 already; saying so bounds the cost of root rules.
            "metadata": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 253},
                    "generateName": {"type": "string"},
                },
            },
            "spec": structural_schema(spec),
            "status": structural_schema(status),
        },
        _VALIDATIONS: _rules(validations),
    }


def openapi_schema() -> dict[str, Any]:
    """The schema of a whole AsyncActor object, root CEL rules included."""
    return _object_schema(
        "An asynchronous actor: a Python handler deployed as its own workload, "
        "consuming its own queue, scaled by KEDA on that queue's depth.",
        AsyncActorSpec,
        AsyncActorStatus,
        RESOURCE_VALIDATIONS,
    )


def binding_openapi_schema() -> dict[str, Any]:
    """The schema of a whole AsyaBinding object, root CEL rules included."""
    return _object_schema(
        "A queue, a sidecar and queue-depth scaling for a model server deployed by other "
        "tools: injected into its Deployment, or run beside it as a bridge.",
        binding_models.AsyaBindingSpec,
        binding_models.AsyaBindingStatus,
        binding_models.RESOURCE_VALIDATIONS,
    )


def _crd(
    *,
    kind: str,
    plural: str,
    short_names: Sequence[str],
    columns: Sequence[Mapping[str, Any]],
    schema: dict[str, Any],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": list(short_names),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": copy.deepcopy(list(columns)),
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def build_crd() -> dict[str, Any]:
    """The CustomResourceDefinition of AsyncActor, as a plain dict."""
    return _crd(
        kind=KIND,
        plural=PLURAL,
        short_names=SHORT_NAMES,
        columns=PRINTER_COLUMNS,
        schema=openapi_schema(),
    )


def build_binding_crd() -> dict[str, Any]:
    """The CustomResourceDefinition of AsyaBinding, as a plain dict."""
    return _crd(
        kind=binding_models.KIND,
        plural=binding_models.PLURAL,
        short_names=binding_models.SHORT_NAMES,
        columns=BINDING_PRINTER_COLUMNS,
        schema=binding_openapi_schema(),
    )


def apply_defaults(value: Any, schema: Mapping[str, Any]) -> Any:
    """A copy of `value` with the schema's defaults applied the way the API server does.

    A property that is absent or null gets its default, then defaulting goes on inside it, so
    `scaling: {}` (itself a default) receives its fields' defaults; map values and list items
    are defaulted by their schemas. A null without a default is pruned.
    """
    if isinstance(value, dict):
        properties: Mapping[str, Any] = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        out: dict[str, Any] = {}
        for name, sub in properties.items():
            if value.get(name) is None and "default" in sub:
                out[name] = copy.deepcopy(sub["default"])
        for name, item in value.items():
            if name in out or item is None:
                continue
            out[name] = item
        for name, item in out.items():
            if name in properties:
                out[name] = apply_defaults(item, properties[name])
            elif isinstance(extra, Mapping):
                out[name] = apply_defaults(item, extra)
            else:
                out[name] = copy.deepcopy(item)
        return out
    if isinstance(value, list):
        items = schema.get("items")
        return [apply_defaults(item, items) if items else copy.deepcopy(item) for item in value]
    return value


class _Dumper(yaml.SafeDumper):
    # Never emit &anchors: every node is written out in full, as kubectl shows it.
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _dump(crd: dict[str, Any]) -> str:
    return yaml.dump(crd, Dumper=_Dumper, sort_keys=False, width=100)


def render() -> str:
    """The text of crds/asyncactor.yaml."""
    return HEADER + _dump(build_crd())


def render_binding() -> str:
    """The text of crds/asyabinding.yaml."""
    return BINDING_HEADER + _dump(build_binding_crd())


def _check(outputs: Sequence[Path], text: str, source: str) -> bool:
    stale = [o for o in outputs if not o.exists() or o.read_text() != text]
    for output in stale:
        print(f"{output} is out of date with {source}: run `make crds`", file=sys.stderr)
    for output in sorted(set(outputs) - set(stale)):
        print(f"{output} is up to date")
    return not stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m asya_operator.crd",
        description="Write the AsyncActor and AsyaBinding CRDs generated from the models.",
    )
    parser.add_argument(
        "--check", action="store_true", help="only compare; exit 1 when a file is out of date"
    )
    parser.add_argument(
        "--output",
        type=Path,
        action="append",
        help=f"an AsyncActor CRD file to write (repeatable); default: {CRD_PATH} and "
        f"{CHART_CRD_PATH}",
    )
    parser.add_argument(
        "--binding-output",
        type=Path,
        action="append",
        help=f"an AsyaBinding CRD file to write (repeatable); default: {BINDING_CRD_PATH} and "
        f"{CHART_BINDING_CRD_PATH}",
    )
    args = parser.parse_args(argv)
    # Naming files of one kind writes only those: the defaults apply when nothing is named.
    named = bool(args.output or args.binding_output)
    actor_outputs: list[Path] = args.output or ([] if named else [CRD_PATH, CHART_CRD_PATH])
    binding_outputs: list[Path] = args.binding_output or (
        [] if named else [BINDING_CRD_PATH, CHART_BINDING_CRD_PATH]
    )
    jobs = [
        (actor_outputs, render(), "asya_operator/models.py"),
        (binding_outputs, render_binding(), "asya_operator/binding_models.py"),
    ]
    if args.check:
        results = [_check(outputs, text, source) for outputs, text, source in jobs]
        return 0 if all(results) else 1
    for outputs, text, _ in jobs:
        for output in outputs:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(text)
            print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
