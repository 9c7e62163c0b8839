"""docs/install.md: every values example installs as shown, the RBAC it lists is what the
operator chart grants, and the gateway it shows is the one the operator example reports to."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from asya_operator import config as operator_config
from asya_operator import render as operator_render
from asya_operator.crd import CHART_CRD_PATH
from asya_operator.models import AsyncActor
from tests.charts.charts import (
    CREW,
    CREW_NAMESPACE,
    GATEWAY,
    GATEWAY_NAMESPACE,
    OPERATOR,
    OPERATOR_NAMESPACE,
    ROOT,
    assert_restricted,
    grants,
    of_kind,
    one,
    pod_templates,
    render,
)
from tests.support.schemas import CrdValidator, validate

DOC = ROOT / "docs" / "install.md"
OPERATOR_MARK = "# asya-operator values\n"
CREW_MARK = "# asya-crew values\n"
GATEWAY_MARK = "# asya-gateway values\n"


def examples() -> list[tuple[str, dict[str, Any], dict[str, Any] | None]]:
    """(chart, values, the operator values shown before it) for every marked YAML block."""
    found: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
    last_operator: dict[str, Any] | None = None
    for block in re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S):
        if block.startswith(OPERATOR_MARK):
            last_operator = yaml.safe_load(block)
            found.append(("asya-operator", last_operator, None))
        elif block.startswith(CREW_MARK):
            found.append(("asya-crew", yaml.safe_load(block), last_operator))
        elif block.startswith(GATEWAY_MARK):
            found.append(("asya-gateway", yaml.safe_load(block), None))
    return found


EXAMPLES = examples()
IDS = [f"{chart}-{i}" for i, (chart, _, _) in enumerate(EXAMPLES)]


def test_the_doc_has_examples_for_both_charts_and_every_transport() -> None:
    charts = {chart for chart, _, _ in EXAMPLES}
    assert charts == {"asya-operator", "asya-crew", "asya-gateway"}
    types = {
        transport["type"]
        for chart, values, _ in EXAMPLES
        if chart == "asya-operator"
        for transport in values["transports"].values()
    }
    assert types == {"rabbitmq", "sqs", "pubsub"}


@pytest.mark.parametrize(("chart", "values", "operator_values"), EXAMPLES, ids=IDS)
def test_example_installs(
    chart: str,
    values: dict[str, Any],
    operator_values: dict[str, Any] | None,
    tmp_path: Path,
) -> None:
    if chart == "asya-gateway":
        objects = render(GATEWAY, values, GATEWAY_NAMESPACE)
        validate(objects)
        for where, pod in pod_templates(objects).items():
            assert_restricted(pod, where)
        return
    if chart == "asya-operator":
        objects = render(OPERATOR, values, OPERATOR_NAMESPACE)
        validate(objects)
        path = tmp_path / "operator.yaml"
        path.write_text(one(objects, "ConfigMap")["data"]["operator.yaml"])
        operator_config.load(path)
        return
    assert operator_values is not None, "a crew example must follow an operator example"
    operator_objects = render(OPERATOR, operator_values, OPERATOR_NAMESPACE)
    config = operator_config.parse(
        yaml.safe_load(one(operator_objects, "ConfigMap")["data"]["operator.yaml"])
    )
    crd = CrdValidator.from_file(CHART_CRD_PATH)
    objects = render(CREW, values, CREW_NAMESPACE)
    validate(o for o in objects if o["kind"] != "AsyncActor")
    for actor in of_kind(objects, "AsyncActor"):
        assert crd.errors(actor) == []
        workload = operator_render.render(AsyncActor.from_object(actor), config)
        validate(workload)
        for where, pod in pod_templates(workload).items():
            assert_restricted(pod, where)


def test_rbac_table_is_what_the_chart_grants() -> None:
    section = DOC.read_text().split("## What the operator may do (RBAC)", 1)[1].split("\n## ")[0]
    rows = re.findall(r"^\| `([^`]*)`[^|]*\| ([^|]+) \| ([^|]+) \|$", section, re.M)
    documented = {
        # `""` is the core group.
        (group.strip('"'), resource.strip("` "), verb.strip("` "))
        for group, resources, verbs in rows
        for resource in resources.split(",")
        for verb in verbs.split(",")
    }
    objects = render(OPERATOR, {}, OPERATOR_NAMESPACE)
    granted = {(g.group, g.resource, g.verb) for g in grants(objects)}
    assert documented == granted


def test_operator_example_reports_to_the_gateway_example() -> None:
    (gateway_values,) = [values for chart, values, _ in EXAMPLES if chart == "asya-gateway"]
    urls = [
        values["gateway"]["url"]
        for chart, values, _ in EXAMPLES
        if chart == "asya-operator" and "gateway" in values
    ]
    assert urls, "no operator example sets gateway.url"
    # The gateway installed as the doc says (release asya-gateway in asya-gateway).
    objects = render(GATEWAY, gateway_values, GATEWAY_NAMESPACE)
    (internal,) = [
        s for s in of_kind(objects, "Service") if s["metadata"]["name"].endswith("-internal")
    ]
    port = internal["spec"]["ports"][0]["port"]
    expected = f"http://{internal['metadata']['name']}.{GATEWAY_NAMESPACE}.svc:{port}"
    assert set(urls) == {expected}
    assert f"helm install asya-gateway charts/asya-gateway -n {GATEWAY_NAMESPACE}" in (
        DOC.read_text()
    )
