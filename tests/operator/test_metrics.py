"""The operator's Prometheus metrics: the pure parts, `asya operator --metrics-port`, and a
real operator on kmock (fixtures of test_operator) scraped over HTTP."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kopf
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import asya_transports as transports
from asya_cli import main
from asya_operator import kube
from asya_operator.metrics import (
    CRASHED,
    FAILED,
    RETRYING,
    SUCCEEDED,
    OperatorMetrics,
    queue_outcome,
    reconcile_outcome,
    serve,
)
from asya_operator.models import AsyncActorStatus
from asya_operator.queues import BrokerUnavailable, QueueAdminError, QueueGone
from asya_shared import env
from tests.operator import test_operator
from tests.operator.test_operator import (
    RABBITMQ,
    Cluster,
    actor_manifest,
    eventually,
    rabbitmq_cleanup,
    unique,
)
from tests.support.kube_emulator import VersionedEmulator
from tests.support.services import free_port

# The operator fixtures of test_operator, under names of their own here: imported under
# theirs, every test taking them would read to linters as shadowing the import.
kube_cluster = test_operator.cluster
run_operator = test_operator.start_operator

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def actor_series(samples: Samples, namespace: str, name: str) -> list[str]:
    return [
        metric
        for metric, labels in samples
        if ("namespace", namespace) in labels and ("actor", name) in labels
    ]


# -- pure parts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (None, SUCCEEDED),
        (kopf.TemporaryError("broker down"), RETRYING),
        (kopf.PermanentError("invalid spec"), FAILED),
        (RuntimeError("bug"), CRASHED),
        (asyncio.CancelledError(), None),
    ],
)
def test_reconcile_outcome(exc: BaseException | None, expected: str | None) -> None:
    assert reconcile_outcome(exc) == expected


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (None, "ok"),
        (BrokerUnavailable("refused"), "broker_unavailable"),
        (QueueGone("q"), "queue_gone"),
        (QueueAdminError("denied"), "error"),
        (asyncio.CancelledError(), None),
    ],
)
def test_queue_outcome(exc: BaseException | None, expected: str | None) -> None:
    assert queue_outcome(exc) == expected


async def test_reconcile_counts_outcomes_but_not_cancellation() -> None:
    m = OperatorMetrics(CollectorRegistry())
    r = m.registry
    async with m.reconcile():
        pass
    with pytest.raises(kopf.TemporaryError):
        async with m.reconcile():
            raise kopf.TemporaryError("later")
    with pytest.raises(asyncio.CancelledError):
        async with m.reconcile():
            raise asyncio.CancelledError
    assert r.get_sample_value("asya_operator_reconciles_total", {"outcome": SUCCEEDED}) == 1
    assert r.get_sample_value("asya_operator_reconciles_total", {"outcome": RETRYING}) == 1
    assert r.get_sample_value("asya_operator_reconcile_duration_seconds_count") == 2


def test_queue_operation_counts_by_operation_and_outcome() -> None:
    m = OperatorMetrics(CollectorRegistry())
    with m.queue_operation("ensure"):
        pass
    with pytest.raises(BrokerUnavailable), m.queue_operation("depth"):
        raise BrokerUnavailable("refused")
    get = m.registry.get_sample_value
    name = "asya_operator_queue_operations_total"
    assert get(name, {"operation": "ensure", "outcome": "ok"}) == 1
    assert get(name, {"operation": "depth", "outcome": "broker_unavailable"}) == 1


def test_actor_series_follow_the_status_and_go_with_the_actor() -> None:
    m = OperatorMetrics(CollectorRegistry())
    get = m.registry.get_sample_value
    status = AsyncActorStatus(status="Creating", transport="rabbit")
    m.record_status("ns", "a", status)
    assert get("asya_actor_status", {"namespace": "ns", "actor": "a", "status": "Creating"}) == 1
    assert (
        get("asya_actor_queue_depth", {"namespace": "ns", "actor": "a", "transport": "rabbit"})
        is None
    )

    status = status.model_copy(
        update={"status": "Running", "queue_depth": 3, "ready_replicas": 1, "desired_replicas": 2}
    )
    m.record_status("ns", "a", status)
    m.record_status("ns", "b", status)
    a = {"namespace": "ns", "actor": "a"}
    assert get("asya_actor_status", {**a, "status": "Running"}) == 1
    assert get("asya_actor_status", {**a, "status": "Creating"}) is None, "one word per actor"
    assert get("asya_actor_queue_depth", {**a, "transport": "rabbit"}) == 3
    assert get("asya_actor_replicas", {**a, "kind": "ready"}) == 1
    assert get("asya_actor_replicas", {**a, "kind": "desired"}) == 2

    # Moved to another broker: the depth on the old one is no longer known.
    m.record_status("ns", "a", status.model_copy(update={"transport": "sqs", "queue_depth": 0}))
    assert get("asya_actor_queue_depth", {**a, "transport": "rabbit"}) is None
    assert get("asya_actor_queue_depth", {**a, "transport": "sqs"}) == 0

    m.forget("ns", "a")
    m.forget("ns", "never-seen")
    samples = [s for f in m.registry.collect() for s in f.samples]
    assert [s for s in samples if s.labels.get("actor") == "a"] == []
    assert [s for s in samples if s.labels.get("actor") == "b"], "other actors keep theirs"


def test_serve_port_zero_serves_nothing() -> None:
    assert serve("127.0.0.1", 0) is None


# -- asya operator --metrics-port ---------------------------------------------------------


@pytest.mark.parametrize("port", ["abc", "-1", "65536"])
def test_bad_metrics_port_exits_2(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main.main(["operator", "--metrics-port", port])
    assert done.value.code == 2
    assert "--metrics-port" in capsys.readouterr().err


def test_help_documents_the_metrics_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main.main(["operator", "--help"])
    out = capsys.readouterr().out
    assert "--metrics-port" in out
    assert "--metrics-host" in out


@pytest.fixture
def runnable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A valid configuration and kubeconfig, and kopf.run replaced by a probe of the metrics
    endpoint: what the command serves while kopf would be running. (kopf.configure too: it
    would install log handlers for the rest of the test session.)"""
    config = tmp_path / "operator.yaml"
    config.write_text("transports:\n  mq: {type: rabbitmq, url: 'amqp://127.0.0.1:5672/'}\n")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'http://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("ASYA_OPERATOR_CONFIG", "")  # the command exports it; undone after
    monkeypatch.setattr(kopf, "configure", lambda **_: None)
    return ["operator", "--config", str(config), "-n", "default"]


def test_metrics_are_served_while_the_operator_runs(
    runnable: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    seen: list[Samples] = []
    monkeypatch.setattr(kopf, "run", lambda **_: seen.append(scrape(port)))
    args = [*runnable, "--metrics-host", "127.0.0.1", "--metrics-port", str(port)]
    assert main.main(args) == 0
    (samples,) = seen
    assert any(name == "asya_operator_reconcile_duration_seconds_count" for name, _ in samples)
    with pytest.raises(urllib.error.URLError):
        scrape(port)  # closed when the operator stops


def test_metrics_port_zero_binds_nothing(
    runnable: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[bool] = []
    monkeypatch.setattr(kopf, "run", lambda **_: ran.append(True))
    # An address nobody can bind: the command fails with it unless metrics are off.
    args = [*runnable, "--metrics-host", "192.0.2.1", "--metrics-port"]
    assert main.main([*args, "0"]) == 0
    assert ran == [True]
    assert main.main([*args, str(free_port())]) == 2
    assert ran == [True]


def test_taken_metrics_port_exits_2(
    runnable: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(kopf, "run", lambda **_: pytest.fail("kopf must not start"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = [*runnable, "--metrics-host", "127.0.0.1", "--metrics-port", str(port)]
        assert main.main(args) == 2
    err = capsys.readouterr().err
    assert f"cannot serve metrics on 127.0.0.1:{port}" in err
    assert "--metrics-port" in err


# -- a real operator ----------------------------------------------------------------------


@pytest.fixture
def metrics_port() -> Iterator[int]:
    port = free_port()
    served = serve("127.0.0.1", port)
    assert served is not None
    server, _thread = served
    yield port
    server.shutdown()
    server.server_close()


async def scraped(port: int) -> Samples:
    return await asyncio.to_thread(scrape, port)


async def scrape_until(port: int, check: Callable[[Samples], bool], what: str) -> Samples:
    """Scrape until `check` holds: a scrape may fall between two updates of one reconcile."""

    async def attempt() -> Samples | None:
        samples = await scraped(port)
        return samples if check(samples) else None

    result: Samples = await eventually(attempt, what)
    return result


@pytest.mark.rabbitmq
@pytest.mark.timeout(180)
@pytest.mark.kmock(cls=VersionedEmulator)
async def test_a_reconciled_actor_shows_in_the_metrics(
    rabbitmq_url: str, kube_cluster: Cluster, run_operator: Any, metrics_port: int
) -> None:
    ns, name = unique("metrics"), "echo"
    queue = f"asya-{ns}-{name}"
    actor = {"namespace": ns, "actor": name}
    before = await scraped(metrics_port)

    def grew(samples: Samples, metric: str, **labels: str) -> bool:
        return (value(samples, metric, **labels) or 0) > (value(before, metric, **labels) or 0)

    def series(metric: str, expected: float, **labels: str) -> Callable[[Samples], bool]:
        return lambda samples: value(samples, metric, **actor, **labels) == expected

    try:
        async with run_operator(ns, {"transports": RABBITMQ}):
            spec = {"queue": {"deletionPolicy": "Delete"}}
            await kube_cluster.api.create(kube.ASYNCACTORS, ns, actor_manifest(ns, name, **spec))
            creating = series("asya_actor_status", 1, status="Creating")
            samples = await scrape_until(
                metrics_port,
                lambda s: (
                    creating(s) and grew(s, "asya_operator_reconciles_total", outcome=SUCCEEDED)
                ),
                "status Creating, after a successful reconcile",
            )
            assert grew(samples, "asya_operator_reconcile_duration_seconds_count")
            ops = "asya_operator_queue_operations_total"
            assert grew(samples, ops, operation="ensure", outcome="ok")

            # The refresh daemon measures the queue (every 5 s here).
            depth = "asya_actor_queue_depth"
            await scrape_until(metrics_port, series(depth, 0, transport="rabbit"), "depth 0")
            await kube_cluster.play_deployment_controller(ns, name)
            await kube_cluster.play_keda(ns, name)
            running = series("asya_actor_status", 1, status="Running")
            samples = await scrape_until(metrics_port, running, "status Running")
            assert value(samples, "asya_actor_status", **actor, status="Creating") is None
            assert value(samples, "asya_actor_replicas", **actor, kind="ready") == 1
            assert value(samples, "asya_actor_replicas", **actor, kind="desired") == 1

            async with transports.create("rabbitmq", {env.RABBITMQ_URL: rabbitmq_url}) as t:
                for i in range(2):
                    await t.send(queue, f"message {i}".encode())
            await scrape_until(metrics_port, series(depth, 2, transport="rabbit"), "depth 2")

            await kube_cluster.api.delete(kube.ASYNCACTORS, ns, name)
            await eventually(lambda: kube_cluster.gone(kube.ASYNCACTORS, ns, name), "deletion")

            samples = await scrape_until(
                metrics_port,
                lambda s: not actor_series(s, ns, name),
                "the actor's series to go",
            )
            assert grew(samples, ops, operation="delete", outcome="ok")
    finally:
        await rabbitmq_cleanup(queue)


@pytest.mark.rabbitmq
@pytest.mark.timeout(180)
@pytest.mark.kmock(cls=VersionedEmulator)
async def test_an_invalid_spec_counts_as_failed(
    rabbitmq_url: str, kube_cluster: Cluster, run_operator: Any, metrics_port: int
) -> None:
    ns, name = unique("metrics-bad"), "echo"
    before = await scraped(metrics_port)
    total = "asya_operator_reconciles_total"

    def failed(samples: Samples) -> bool:
        word = value(samples, "asya_actor_status", namespace=ns, actor=name, status="Error")
        count = value(samples, total, outcome=FAILED) or 0
        return word == 1 and count > (value(before, total, outcome=FAILED) or 0)

    async with run_operator(ns, {"transports": RABBITMQ}):
        await kube_cluster.api.create(kube.ASYNCACTORS, ns, actor_manifest(ns, name, concurrency=0))
        await scrape_until(metrics_port, failed, "status Error, counted as failed")
