"""charts/asya-operator/dashboards/asya.json: the Grafana dashboard the operator chart ships.

The dashboard's queries may name only metrics our code defines (read from the registries our
metrics modules fill, so the check follows the code) plus a short, explicit list of series
that KEDA and kube-state-metrics export. The chart renders it, byte for byte, into one
ConfigMap with the label Grafana's dashboard sidecar watches, and only when asked to."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from collections.abc import Iterable, Iterator
from functools import cache
from typing import Any

import helm_python as helm
import prometheus_client
import pytest
from prometheus_client import CollectorRegistry

import asya_crew
from tests.charts.charts import (
    OPERATOR,
    OPERATOR_NAMESPACE,
    Obj,
    of_kind,
    render,
    render_templates,
)
from tests.support.schemas import validate

DASHBOARD_FILE = OPERATOR / "dashboards" / "asya.json"
TEMPLATE = "asya-operator/templates/dashboard-configmap.yaml"
DATASOURCE = "${datasource}"

# Series the dashboard reads that other software exports, and where each comes from. Nothing
# here may start with `asya_`: our own names are checked against our code, never listed.
EXTERNAL_METRICS = {
    # KEDA's operator (its Prometheus metrics, port 8080 of keda-operator): the value each
    # scaler last read, labelled scaledObject; the operator names the ScaledObject after the
    # actor, so this is the queue depth KEDA scales on.
    "keda_scaler_metrics_value": "KEDA",
    # kube-state-metrics, Deployment metrics (label `deployment`, the actor's name).
    "kube_deployment_status_replicas_available": "kube-state-metrics",
}

# Words of PromQL that are neither functions nor metric names.
KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "inf", "nan"}
    | {"by", "without", "on", "ignoring", "group_left", "group_right"}
)


# ------------------------------------------------------------------ metric names we export


def sample_names(family: str, kind: str) -> set[str]:
    """The series names a metric family of this type exposes (a histogram `x`: x_bucket,
    x_sum, x_count, x_created). prometheus_client strips `_total` from a counter family."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
        "stateset": ("",),
        "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
        "unknown": ("",),
    }
    assert kind in suffixes, f"metric {family} has type {kind!r}, which this test cannot expand"
    return {family + suffix for suffix in suffixes[kind]}


def registry_names(registry: CollectorRegistry) -> set[str]:
    # collect() yields every family, labelled ones with no series yet included.
    return {
        name for family in registry.collect() for name in sample_names(family.name, family.type)
    }


@cache
def our_metrics() -> frozenset[str]:
    """Every series name the sidecar, operator, gateway and crew can serve."""
    # The crew's counters are module globals in the default registry (which the crew's
    # metrics endpoint serves): importing every crew module registers them all, a new one
    # included. `__main__` is left out because importing it runs the CLI.
    for module in pkgutil.walk_packages(asya_crew.__path__, "asya_crew."):
        if not module.name.endswith(".__main__"):
            importlib.import_module(module.name)
    from asya_gateway.metrics import GatewayMetrics
    from asya_operator.metrics import METRICS
    from asya_sidecar.metrics import SidecarMetrics

    registries = [
        SidecarMetrics("probe").registry,
        METRICS.registry,
        GatewayMetrics().registry,
        prometheus_client.REGISTRY,
    ]
    return frozenset(name for r in registries for name in registry_names(r))


# --------------------------------------------------------------------------- PromQL


STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
MATCHERS = re.compile(r"\{[^}]*\}")
RANGE = re.compile(r"\[[^\]]*\]")
VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
# Label lists of grouping and vector matching: `by (actor, le)`, `on(pod)`, `group_left(x)`.
LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
# Not after a letter, digit or dot: the `e3` of 1e3 and the `m` of 5m are not names.
IDENTIFIER = re.compile(r"(?<![\w.:])[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects.

    Strings, label matchers, range selectors, Grafana variables and grouping label lists go
    first; of what is left, an identifier followed by `(` is a function or aggregation and a
    keyword is syntax, so every other identifier is a metric name."""
    if "__name__" in expr:
        raise ValueError(f"{expr!r}: select metrics by name, not with a __name__ matcher")
    text = STRING.sub(" ", expr)
    for pattern in (MATCHERS, RANGE, VARIABLE, LABEL_LIST):
        text = pattern.sub(" ", text)
    names = set()
    for match in IDENTIFIER.finditer(text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or match.group() in KEYWORDS:
            continue
        names.add(match.group())
    return names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('sum by (actor) (rate(a_total{actor=~"$actor"}[$__rate_interval]))', {"a_total"}),
        (
            "histogram_quantile(0.99, sum by (actor, le) (rate(h_bucket[5m])))",
            {"h_bucket"},
        ),
        ("sum(rate(x[1m])) without (pod) / on(actor) group_left(kind) y", {"x", "y"}),
        ('a{reason="by (le) rate(b)"} > bool 1e3 offset 5m unless c', {"a", "c"}),
        ("max_over_time(g[${window}]) and ignoring(le) inf > nan", {"g"}),
        ("sum by(x)(rate(job:requests:rate5m[5m]))", {"job:requests:rate5m"}),
    ],
)
def test_metric_names_are_found_and_nothing_else(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_a_name_matcher_is_refused() -> None:
    with pytest.raises(ValueError, match="__name__"):
        metric_names('{__name__="asya_sidecar_runtime_up"}')


def test_histograms_and_counters_expand_to_their_series() -> None:
    registry = CollectorRegistry()
    prometheus_client.Histogram("h_seconds", "h", ["actor"], registry=registry)
    prometheus_client.Counter("c_total", "c", registry=registry)
    prometheus_client.Gauge("g", "g", registry=registry)
    assert registry_names(registry) == {
        "h_seconds_bucket", "h_seconds_sum", "h_seconds_count", "h_seconds_created",
        "c_total", "c_created", "g",
    }  # fmt: skip


# ------------------------------------------------------------------------ the dashboard


def dashboard() -> Obj:
    loaded: Obj = json.loads(DASHBOARD_FILE.read_text())
    return loaded


def panels() -> list[Obj]:
    found: list[Obj] = dashboard()["panels"]
    return found


def targets() -> Iterator[tuple[str, Obj]]:
    for panel in panels():
        for target in panel["targets"]:
            yield f"panel {panel['title']!r} target {target['refId']}", target


def variables() -> dict[str, Obj]:
    return {v["name"]: v for v in dashboard()["templating"]["list"]}


def actor_variable_metric() -> str:
    query = variables()["actor"]["query"]
    text = query["query"] if isinstance(query, dict) else query
    match = re.fullmatch(r"label_values\(\s*([A-Za-z_:][\w:]*)\s*,\s*actor\s*\)", text)
    assert match, f"the actor variable's query {text!r} is not label_values(<metric>, actor)"
    return match.group(1)


def test_every_query_names_only_metrics_we_or_the_allowlist_export() -> None:
    ours = our_metrics()
    assert "asya_sidecar_runtime_seconds_bucket" in ours  # the registries were really read
    assert not [name for name in EXTERNAL_METRICS if name.startswith("asya_")]
    used_external: set[str] = set()
    unknown = []
    for where, target in targets():
        for name in metric_names(target["expr"]):
            if name in EXTERNAL_METRICS:
                used_external.add(name)
            elif name not in ours:
                unknown.append(f"{where}: {name}")
    assert not unknown, f"metrics no Asya component exports: {unknown}"
    # An allowlist entry nothing uses would let a stale name slip back in unnoticed.
    assert used_external == set(EXTERNAL_METRICS)
    assert actor_variable_metric() in ours


def test_dashboard_is_grafana_dashboard_json() -> None:
    board = dashboard()
    assert board["uid"]
    assert board["title"]
    assert isinstance(board["schemaVersion"], int)
    # A provisioned dashboard must not carry a database id of another Grafana.
    assert board.get("id") is None
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids)), ids
    for panel in panels():
        assert panel["title"], panel
        assert panel["type"] == "timeseries", panel["title"]
        assert panel["datasource"]["uid"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
    for where, target in targets():
        assert target["datasource"] == {"type": "prometheus", "uid": DATASOURCE}, where
        assert target["expr"].strip(), where


def test_panels_fit_the_grid_without_overlapping() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in panels():
        grid = panel["gridPos"]
        assert 0 <= grid["x"] < grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def test_datasource_and_actor_variables() -> None:
    found = variables()
    assert found["datasource"]["type"] == "datasource"
    assert found["datasource"]["query"] == "prometheus"
    actor = found["actor"]
    assert actor["type"] == "query"
    assert actor["datasource"]["uid"] == DATASOURCE
    assert actor_variable_metric().startswith("asya_sidecar_")
    assert actor["multi"] is True
    assert actor["includeAll"] is True
    # "All" must stay the list of actors: a custom `.*` would make the KEDA and
    # kube-state-metrics queries select every ScaledObject and Deployment of the cluster.
    assert not actor.get("allValue")


def test_every_query_is_narrowed_to_the_chosen_actors() -> None:
    for where, target in targets():
        assert '=~"$actor"' in target["expr"], where


def exprs_of_panels() -> Iterable[str]:
    for panel in panels():
        yield " ".join(t["expr"] for t in panel["targets"])


def panel_with(*needles: str) -> str:
    """The queries of the one panel whose queries contain every needle."""
    matching = [e for e in exprs_of_panels() if all(n in e for n in needles)]
    assert len(matching) == 1, f"{len(matching)} panels query all of {needles}"
    return matching[0]


def test_panels_cover_what_an_operator_watches() -> None:
    panel_with("sum by (actor) (rate(asya_sidecar_envelopes_processed_total")
    assert "sum by (actor, reason)" in panel_with("asya_sidecar_envelopes_failed_total")
    panel_with("asya_actor_queue_depth", "keda_scaler_metrics_value")
    panel_with("asya_sidecar_envelopes_in_flight")
    panel_with(
        "histogram_quantile(0.5, sum by (actor, le) (rate(asya_sidecar_runtime_seconds_bucket",
        "histogram_quantile(0.99, sum by (actor, le) (rate(asya_sidecar_runtime_seconds_bucket",
    )
    panel_with("asya_actor_replicas", "kube_deployment_status_replicas_available")


# ----------------------------------------------------------------------------- the chart


def rendered(values: dict[str, Any]) -> list[Obj]:
    return render(OPERATOR, values, OPERATOR_NAMESPACE)


def dashboard_maps(objects: list[Obj]) -> list[Obj]:
    maps = of_kind(objects, "ConfigMap")
    return [o for o in maps if o["metadata"]["name"].endswith("-dashboard")]


def test_no_dashboard_by_default() -> None:
    objects = rendered({})
    assert [o["metadata"]["name"] for o in of_kind(objects, "ConfigMap")] == ["asya-operator"]
    assert render_templates(OPERATOR, {}, OPERATOR_NAMESPACE)[TEMPLATE].strip() == ""


def test_enabled_renders_one_configmap_the_grafana_sidecar_picks_up() -> None:
    objects = rendered({"dashboard": {"enabled": True}})
    (found,) = dashboard_maps(objects)
    metadata = found["metadata"]
    assert metadata["name"] == "asya-operator-dashboard"
    assert metadata["namespace"] == OPERATOR_NAMESPACE
    assert metadata["labels"]["grafana_dashboard"] == "1"
    assert metadata["labels"]["app.kubernetes.io/part-of"] == "asya"
    assert "annotations" not in metadata
    assert found["data"] == {"asya.json": DASHBOARD_FILE.read_text()}
    assert json.loads(found["data"]["asya.json"]) == dashboard()
    validate([found])
    assert len(of_kind(objects, "ConfigMap")) == 2


def test_label_namespace_and_annotations_are_configurable() -> None:
    values = {
        "dashboard": {
            "enabled": True,
            "label": {"name": "grafana.example.com/dashboard", "value": "asya"},
            "namespace": "monitoring",
            "annotations": {"grafana_folder": "Asya"},
        }
    }
    (found,) = dashboard_maps(rendered(values))
    metadata = found["metadata"]
    assert metadata["namespace"] == "monitoring"
    assert metadata["labels"]["grafana.example.com/dashboard"] == "asya"
    assert "grafana_dashboard" not in metadata["labels"]
    assert metadata["annotations"] == {"grafana_folder": "Asya"}
    validate([found])


def test_lint_is_clean_with_the_dashboard() -> None:
    values = {"dashboard": {"enabled": True, "annotations": {"grafana_folder": "Asya"}}}
    report = helm.lint(OPERATOR, values, strict=True, namespace=OPERATOR_NAMESPACE)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_the_json_exists_once_and_is_loaded_from_the_file() -> None:
    template = (OPERATOR / "templates" / "dashboard-configmap.yaml").read_text()
    assert '.Files.Get "dashboards/asya.json"' in template
    uid = dashboard()["uid"]
    copies = [p for p in (OPERATOR / "templates").iterdir() if uid in p.read_text()]
    assert copies == []


@pytest.mark.parametrize(
    ("dashboard_values", "error"),
    [
        ({"enable": True}, "at '/dashboard': additional properties 'enable' not allowed"),
        ({"label": {"name": "grafana dashboard", "value": "1"}}, "at '/dashboard/label/name'"),
        ({"label": {"name": "grafana_dashboard", "value": 1}}, "at '/dashboard/label/value'"),
        ({"label": {"name": "grafana_dashboard", "value": "-1"}}, "at '/dashboard/label/value'"),
        ({"namespace": "Monitoring"}, "at '/dashboard/namespace'"),
        ({"annotations": {"grafana_folder": 3}}, "at '/dashboard/annotations/grafana_folder'"),
    ],
)
def test_bad_dashboard_values_fail_naming_the_field(
    dashboard_values: dict[str, Any], error: str
) -> None:
    with pytest.raises(helm.HelmValuesError) as caught:
        rendered({"dashboard": {"enabled": True, **dashboard_values}})
    assert error in str(caught.value)
