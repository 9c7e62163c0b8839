"""A batch-job template (`ASYA_JOB_TEMPLATE`) and filling it from a payload: pure, no I/O.

The template is a YAML manifest of one of the supported job kinds (asya_shared.jobs.KINDS)
whose string values may hold placeholders naming payload fields:

    ${field}          the payload's `field`
    ${params.lr}      a field inside an object field (`payload["params"]["lr"]`)
    $${               a literal `${`

The YAML is parsed once, when the actor starts; placeholders are filled afterwards, in the
parsed tree, so a payload value is always data and never YAML text: a value holding
`"\\nkind: Pod"` stays that string. A value that is a placeholder and nothing else takes the
payload value with its JSON type (`parallelism: ${workers}` gives the number 4, `args:
${args}` a list); a placeholder inside a longer string is replaced by the value's text
(strings as they are, anything else as JSON). Placeholders fill values only, never keys.

The job's name is not the template's: it comes from the envelope id (`job_name`), which is
what makes a redelivered envelope find the job it already created.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from asya_callers.errors import ConfigError, InvalidInput
from asya_shared import jobs

__all__ = ["Template", "fill", "job_name", "parse"]

_PLACEHOLDER = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_FIELD_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$")
_WHOLE = re.compile(r"^\$\{([^}]*)\}$")

# Pods of a job are named after it with suffixes of their own (`-<5 chars>` for a Job,
# `-worker-12` for a PyTorchJob, `-node-0-3` for a TrainJob), and the batch/v1 controller
# copies the name into a label (63 characters at most): 40 leaves room for all of them.
MAX_NAME = 40
_HASH_CHARS = 16  # 64 bits of sha256: no two envelope ids of one namespace share a name
_NOT_DNS = re.compile(r"[^a-z0-9-]+")


@dataclass(frozen=True)
class Template:
    kind: jobs.JobKind
    body: dict[str, Any]
    fields: tuple[str, ...]  # the payload paths the placeholders name, in order of appearance
    source: str  # where it came from, for messages


def parse(text: str, source: str) -> Template:
    """The template in `text`, checked now so that a mistake stops the actor at start."""
    try:
        body = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}") from None
    if not isinstance(body, dict):
        raise ConfigError(
            f"{source} must hold one job manifest (a YAML mapping with apiVersion, kind, spec), "
            f"got {type(body).__name__}"
        )
    kind = jobs.kind_of(body.get("apiVersion"), body.get("kind"))
    if kind is None:
        raise ConfigError(
            f"{source}: apiVersion {body.get('apiVersion')!r} kind {body.get('kind')!r} is not "
            f"a job kind Asya launches; use one of: {jobs.described()}"
        )
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise ConfigError(f"{source}: metadata must be a mapping")
    named = sorted({"name", "generateName", "namespace"} & set(metadata or {}))
    if named:
        raise ConfigError(
            f"{source}: remove metadata.{', metadata.'.join(named)}: a launched job is named "
            "after its envelope (so a redelivered envelope finds its job) and created in the "
            "actor's namespace"
        )
    fields: list[str] = []
    for where, key, value in _strings(body):
        if isinstance(key, str) and _PLACEHOLDER.search(key):
            raise ConfigError(
                f"{source}: key {key!r} at {where or '.'} holds a placeholder; placeholders "
                "fill values only"
            )
        if isinstance(value, str):
            for path in _placeholders(value):
                if not _FIELD_PATH.match(path):
                    raise ConfigError(
                        f"{source}: placeholder ${{{path}}} at {where} does not name a payload "
                        "field; write ${field} or ${field.inner} (and $${ for a literal ${)"
                    )
                fields.append(path)
    if "spec" not in body:
        raise ConfigError(f"{source}: the manifest has no spec")
    return Template(kind=kind, body=body, fields=tuple(dict.fromkeys(fields)), source=source)


def fill(template: Template, payload: Any) -> dict[str, Any]:
    """The template with every placeholder replaced by its payload value, as data."""
    if template.fields and not isinstance(payload, dict):
        raise InvalidInput(
            f"{template.source} reads payload fields ({', '.join(template.fields)}), so the "
            f"payload must be a JSON object, got {type(payload).__name__}"
        )
    values: dict[str, Any] = {}
    missing: list[str] = []
    for path in template.fields:
        found, value = _lookup(payload, path)
        if found:
            values[path] = value
        else:
            missing.append(path)
    if missing:
        have = ", ".join(repr(k) for k in sorted(map(str, payload))[:20]) or "no fields"
        raise InvalidInput(
            f"{template.source} reads payload field(s) {', '.join(repr(m) for m in missing)}, "
            f"which this payload lacks; it has {have}"
        )
    filled = _fill_node(template.body, values)
    assert isinstance(filled, dict)
    return filled


def job_name(envelope_id: str, prefix: str) -> str:
    """A DNS-safe job name that the same envelope id always gives: `<prefix>-<hash>`.

    The hash covers the whole id, so ids that differ only in characters a name cannot hold
    (`A` and `a`, `_` and `-`) still get different names."""
    digest = hashlib.sha256(envelope_id.encode()).hexdigest()[:_HASH_CHARS]
    stem = _NOT_DNS.sub("-", prefix.lower()).strip("-")
    stem = stem[: MAX_NAME - _HASH_CHARS - 1].rstrip("-")
    if not stem or not stem[0].isalpha():
        stem = f"j{stem}"[: MAX_NAME - _HASH_CHARS - 1].rstrip("-")
    return f"{stem}-{digest}"


def _strings(node: Any, where: str = "") -> Iterator[tuple[str, Any, Any]]:
    """Every (path, key, value) below `node`, keys included, for the checks in `parse`."""
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{where}.{key}"
            yield path, key, value
            yield from _strings(value, path)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            path = f"{where}[{index}]"
            yield path, None, value
            yield from _strings(value, path)


def _placeholders(text: str) -> list[str]:
    return [m.group(1) for m in _PLACEHOLDER.finditer(text) if m.group(0) != "$${"]


def _lookup(payload: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    node: Any = payload
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _fill_node(node: Any, values: Mapping[str, Any]) -> Any:
    if isinstance(node, dict):
        return {key: _fill_node(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [_fill_node(value, values) for value in node]
    if not isinstance(node, str):
        return node
    whole = _WHOLE.match(node)
    if whole is not None:
        return copy.deepcopy(values[whole.group(1)])

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        value = values[match.group(1)]
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

    return _PLACEHOLDER.sub(replace, node)
