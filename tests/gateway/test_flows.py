"""asya_gateway.flows: the flows file, checked at load, and payloads checked against a
flow's input schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from asya_gateway.flows import (
    Flow,
    FlowsError,
    PayloadInvalid,
    check_payload,
    load_flows,
    parse_flows,
)

SCHEMA = {
    "type": "object",
    "required": ["items"],
    "properties": {
        "items": {
            "type": "array",
            "items": {"type": "object", "properties": {"name": {"type": "string"}}},
        }
    },
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "flows.yaml"
    path.write_text(text)
    return path


def test_a_full_file_loads_every_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
flows:
  - name: summarize
    route: [fetch, summarize, store]
    description: Summarize a page
    timeout: 5m
    input_schema:
      type: object
      required: [url]
      properties: {url: {type: string}}
  - name: echo
    route: [echo]
""",
    )
    flows = load_flows(path)
    assert list(flows) == ["summarize", "echo"]
    summarize = flows["summarize"]
    assert (summarize.route, summarize.description, summarize.timeout) == (
        ("fetch", "summarize", "store"), "Summarize a page", 300.0
    )  # fmt: skip
    assert summarize.input_schema == {
        "type": "object",
        "required": ["url"],
        "properties": {"url": {"type": "string"}},
    }
    assert flows["echo"] == Flow(name="echo", route=("echo",))


@pytest.mark.parametrize("text", ["", "flows: []", "flows:\n"])
def test_an_empty_file_has_no_flows(tmp_path: Path, text: str) -> None:
    assert load_flows(write(tmp_path, text)) == {}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("flows: [", "not valid YAML"),
        ("- name: a", "one key, `flows: [...]`"),
        ("flow: []", "one key"),
        ("flows: {name: a}", "`flows` must be a list"),
        ("flows: [3]", "flows[0] must be a mapping"),
        ("flows: [{route: [a]}]", "flows[0]: name None"),
        ("flows: [{name: 'a b', route: [a]}]", "name 'a b' is not a flow name"),
        ("flows: [{name: x, route: [a]}, {name: x, route: [b]}]", "flows[1] repeats the name 'x'"),
        ("flows: [{name: x}]", "flows[0] ('x'): route must be a non-empty list"),
        ("flows: [{name: x, route: []}]", "('x'): route must be a non-empty list"),
        ("flows: [{name: x, route: [Fetch]}]", "('x'): route: actor name 'Fetch'"),
        ("flows: [{name: x, route: [a], steps: 3}]", "('x'): unknown keys steps"),
        ("flows: [{name: x, route: [a], timeout: soon}]", "('x'): timeout: duration 'soon'"),
        ("flows: [{name: x, route: [a], timeout: 0}]", "('x'): timeout must be more than 0"),
        ("flows: [{name: x, route: [a], description: [1]}]", "description must be a string"),
        ("flows: [{name: x, route: [a], input_schema: [1]}]", "input_schema must be a JSON"),
        (
            "flows: [{name: x, route: [a], input_schema: {type: object, "
            "properties: {n: {type: nope}}}}]",
            "('x'): input_schema is not a valid JSON Schema (2020-12) at $.properties.n.type",
        ),
    ],
)
def test_a_bad_file_is_refused_naming_the_entry(tmp_path: Path, text: str, words: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(FlowsError) as caught:
        load_flows(path)
    assert words in str(caught.value)
    assert str(path) in str(caught.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FlowsError, match=r"cannot read the flows file .*missing\.yaml"):
        load_flows(tmp_path / "missing.yaml")


def flow_with_schema(schema: dict[str, Any] | None) -> Flow:
    return parse_flows({"flows": [{"name": "f", "route": ["a"], "input_schema": schema}]}, "t")["f"]


def test_a_payload_is_checked_against_the_schema_with_its_path() -> None:
    flow = flow_with_schema(SCHEMA)
    check_payload(flow, {"items": [{"name": "a"}, {"name": "b"}]})
    with pytest.raises(PayloadInvalid) as caught:
        check_payload(flow, {"items": [{"name": "a"}, {"name": 7}]})
    assert caught.value.path == "$.items[1].name"
    assert "flow 'f'" in str(caught.value)
    assert "7 is not of type 'string'" in str(caught.value)


def test_a_missing_required_field_is_reported_at_the_object() -> None:
    with pytest.raises(PayloadInvalid) as caught:
        check_payload(flow_with_schema(SCHEMA), {})
    assert caught.value.path == "$"
    assert "'items' is a required property" in str(caught.value)


def test_without_a_schema_any_payload_passes() -> None:
    flow = flow_with_schema(None)
    payloads: list[Any] = [None, 1, "x", [1], {"a": {}}]
    for payload in payloads:
        check_payload(flow, payload)
