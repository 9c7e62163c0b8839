"""Named flows: a route (and its defaults) a caller submits by name instead of spelling it.

The flows file (`--flows FILE`, ASYA_GATEWAY_FLOWS) is YAML:

    flows:
      - name: summarize
        route: [fetch, summarize, store]
        description: Summarize a web page      # optional
        timeout: 5m                            # optional; a request's own timeout wins
        input_schema:                          # optional JSON Schema (2020-12) of the payload
          type: object
          required: [url]
          properties: {url: {type: string}}

Everything is checked when the file is loaded, and the first problem stops the gateway with
a message naming the file and the entry; a flow that loaded is known to be usable. A
payload submitted to a flow with an input schema is validated against it (`check_payload`),
and the message names the JSON path that failed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema import Draft202012Validator

from asya_shared import names
from asya_shared.durations import parse_duration

__all__ = [
    "Flow",
    "FlowsError",
    "PayloadInvalid",
    "check_payload",
    "load_flows",
    "parse_flows",
]

# Flow names appear in URLs, logs and the CLI: keep them to a plain, unambiguous word.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_KEYS = frozenset({"name", "route", "description", "timeout", "input_schema"})


class FlowsError(ValueError):
    """The flows file cannot be used; the message names the file, the entry and the fix."""


class PayloadInvalid(ValueError):
    """A payload does not match its flow's input schema; the message names the path."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


@dataclass(frozen=True)
class Flow:
    name: str
    route: tuple[str, ...]
    description: str = ""
    timeout: float | None = None  # seconds; the deadline of a task that names none
    input_schema: Mapping[str, Any] | None = None
    # Built once at load, not per request; not part of the flow's identity.
    validator: Draft202012Validator | None = field(default=None, compare=False, repr=False)


def load_flows(path: str | Path) -> dict[str, Flow]:
    """The flows in the YAML file at `path`, by name; FlowsError naming what is wrong."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise FlowsError(f"cannot read the flows file {source}: {exc.strerror or exc}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FlowsError(f"the flows file {source} is not valid YAML: {exc}") from None
    return parse_flows(document, str(source))


def parse_flows(document: Any, source: str) -> dict[str, Flow]:
    """The flows of a parsed document (`{"flows": [...]}`); `source` names it in errors."""
    if document is None:
        return {}  # an empty file: no flows
    if not isinstance(document, dict) or set(document) - {"flows"}:
        raise FlowsError(
            f"{source}: expected a mapping with one key, `flows: [...]`, not {_describe(document)}"
        )
    entries = document.get("flows") or []
    if not isinstance(entries, list):
        raise FlowsError(f"{source}: `flows` must be a list of flows, not {_describe(entries)}")
    flows: dict[str, Flow] = {}
    for index, entry in enumerate(entries):
        flow = _parse_flow(entry, f"{source}: flows[{index}]")
        if flow.name in flows:
            raise FlowsError(
                f"{source}: flows[{index}] repeats the name {flow.name!r}; flow names must be "
                "unique"
            )
        flows[flow.name] = flow
    return flows


def _parse_flow(entry: Any, where: str) -> Flow:
    if not isinstance(entry, dict):
        raise FlowsError(f"{where} must be a mapping with name and route, not {_describe(entry)}")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise FlowsError(
            f"{where}: name {name!r} is not a flow name: use 1-100 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    where = f"{where} ({name!r})"
    unknown = sorted(set(entry) - _KEYS)
    if unknown:
        raise FlowsError(
            f"{where}: unknown keys {', '.join(map(str, unknown))}; a flow has "
            f"{', '.join(sorted(_KEYS))}"
        )
    schema = _schema(entry.get("input_schema"), where)
    return Flow(
        name=name,
        route=_route(entry.get("route"), where),
        description=_description(entry.get("description"), where),
        timeout=_timeout(entry.get("timeout"), where),
        input_schema=schema,
        validator=None if schema is None else Draft202012Validator(schema),
    )


def _route(route: Any, where: str) -> tuple[str, ...]:
    if not isinstance(route, list) or not route:
        raise FlowsError(f"{where}: route must be a non-empty list of actor names")
    for actor in route:
        try:
            names.check_actor_name(actor)
        except names.InvalidName as exc:
            raise FlowsError(f"{where}: route: {exc}") from None
    return tuple(route)


def _description(description: Any, where: str) -> str:
    if description is None:
        return ""
    if not isinstance(description, str):
        raise FlowsError(f"{where}: description must be a string, not {_describe(description)}")
    return description


def _timeout(timeout: Any, where: str) -> float | None:
    if timeout is None:
        return None
    try:
        seconds = parse_duration(timeout)
    except ValueError as exc:
        raise FlowsError(f"{where}: timeout: {exc}") from None
    if seconds <= 0:
        raise FlowsError(f"{where}: timeout must be more than 0 seconds, not {timeout!r}")
    return seconds


def _schema(schema: Any, where: str) -> Mapping[str, Any] | None:
    if schema is None:
        return None
    if not isinstance(schema, dict):
        raise FlowsError(
            f"{where}: input_schema must be a JSON Schema object, not {_describe(schema)}"
        )
    try:
        Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise FlowsError(
            f"{where}: input_schema is not a valid JSON Schema (2020-12) at {exc.json_path}: "
            f"{exc.message}"
        ) from None
    return schema


def check_payload(flow: Flow, payload: Any) -> None:
    """Raise PayloadInvalid when `payload` does not match the flow's input schema.

    Of all the failures, the one jsonschema ranks most relevant is reported, with its path
    (`$.items[2].name`) so a caller can find it in their own document.
    """
    if flow.input_schema is None:
        return
    validator = flow.validator or Draft202012Validator(flow.input_schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(payload))
    if error is None:
        return
    path = error.json_path
    raise PayloadInvalid(
        f"payload does not match the input schema of flow {flow.name!r} at {path}: {error.message}",
        path,
    )


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"
