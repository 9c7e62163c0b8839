"""sump.py: x-sump stores, counts and logs everything that could not be processed."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from asya_crew import config, sump
from asya_shared.stores import StoreError
from tests.crew.conftest import CrewFactory, crew_envelope, drive
from tests.crew.test_sink import FailingStore, expected_record, stored
from tests.support.services import free_port

METRIC = "asya_sump_envelopes_total"


def sump_envelope(payload: Any = None, **status: Any) -> dict[str, Any]:
    envelope = crew_envelope(payload, phase="failed")
    envelope["route"] = {"prev": ["prep"], "curr": "x-sump", "next": []}
    envelope["status"].update(status)
    return envelope


def counted(reason: str, actor: str) -> float:
    return REGISTRY.get_sample_value(METRIC, {"reason": reason, "actor": actor}) or 0.0


# --------------------------------------------------------------------------------- in-process


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "sump"


@pytest.fixture
def handler(root: Path) -> sump.Sump:
    return sump.Sump({config.SUMP_STORE: f"file://{root}"})


async def test_an_envelope_is_stored_counted_and_logged(
    handler: sump.Sump, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    envelope = sump_envelope(
        {"original": "{not json", "encoding": "utf-8"}, reason="ParseError", actor="prep"
    )
    before = counted("ParseError", "prep")
    with caplog.at_level(logging.WARNING, logger="asya.crew.sump"):
        frames = await drive(handler.handle(envelope["payload"]), envelope)
    assert frames == []
    assert stored(root, envelope) == expected_record(envelope)
    assert counted("ParseError", "prep") == before + 1
    (line,) = [r for r in caplog.records if r.name == "asya.crew.sump"]
    assert line.levelno == logging.WARNING
    message = line.getMessage()
    assert envelope["id"] in message
    assert "reason=ParseError" in message
    assert "actor=prep" in message
    assert getattr(line, "envelope_id", None) == envelope["id"]


async def test_without_a_status_it_counts_as_unknown(handler: sump.Sump) -> None:
    envelope = sump_envelope()
    del envelope["status"]
    before = counted("unknown", "unknown")
    await drive(handler.handle(envelope["payload"]), envelope)
    assert counted("unknown", "unknown") == before + 1


async def test_a_store_failure_raises_and_counts_nothing(handler: sump.Sump) -> None:
    handler.store = FailingStore()
    envelope = sump_envelope(reason="WrongActor", actor="store-failure-test")
    with pytest.raises(StoreError, match="disk on fire"):
        await drive(handler.handle(envelope["payload"]), envelope)
    assert counted("WrongActor", "store-failure-test") == 0


@pytest.mark.parametrize(
    ("status", "labels"),
    [
        ({"reason": "Timeout", "actor": "infer"}, ("Timeout", "infer")),
        ({"reason": None, "actor": "infer"}, ("unknown", "infer")),
        ({"reason": "", "actor": ""}, ("unknown", "unknown")),
        ({"reason": 7, "actor": ["x"]}, ("unknown", "unknown")),
        ({}, ("unknown", "unknown")),
        (None, ("unknown", "unknown")),
    ],
)
def test_labels(status: Any, labels: tuple[str, str]) -> None:
    assert sump.labels(status) == labels


def test_the_store_variable_is_required() -> None:
    with pytest.raises(config.ConfigError, match="ASYA_SUMP_STORE is not set"):
        sump.Sump({config.RESULT_STORE: "file://x"})


# --------------------------------------------------------- end to end: python -m asya_crew sump


def scrape(port: int) -> dict[tuple[str, str], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        (sample.labels["reason"], sample.labels["actor"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == METRIC
    }


# "role": `python -m asya_crew sump` (asya dev); "handler": the runtime file with ASYA_HANDLER,
# as the crew's pods run it on a cluster, where the handler class starts the endpoint.
@pytest.mark.parametrize(
    "launch", [{"role": "sump"}, {"handler": "asya_crew.sump.Sump.handle"}], ids=["role", "handler"]
)
def test_sump_process_stores_and_exposes_the_counter(
    start_crew: CrewFactory, root: Path, launch: dict[str, str]
) -> None:
    port = free_port()
    crew = start_crew(
        **launch,
        env={
            "ASYA_SUMP_STORE": f"file://{root}",
            "ASYA_CREW_METRICS_PORT": str(port),
            "ASYA_CREW_METRICS_HOST": "127.0.0.1",
        },
    )
    assert scrape(port) == {}
    first = sump_envelope({"original": "AAEC", "encoding": "base64"}, reason="ParseError")
    second = sump_envelope(reason="PolicyExhausted", actor="infer")
    for envelope in (first, second, first):
        response = crew.invoke(envelope)
        assert response.status_code == 204, response.text
    assert stored(root, first) == expected_record(first)
    assert stored(root, second) == expected_record(second)
    assert scrape(port) == {("ParseError", "infer"): 2.0, ("PolicyExhausted", "infer"): 1.0}
    code, stderr = crew.stop()
    assert code == 0
    warnings = [json.loads(line) for line in stderr.splitlines() if '"WARNING"' in line]
    assert [w["envelope_id"] for w in warnings] == [first["id"], second["id"], first["id"]]
    assert all(w["logger"] == "asya.crew.sump" for w in warnings)


def test_sump_process_answers_500_when_the_store_fails(start_crew: CrewFactory, root: Path) -> None:
    crew = start_crew(role="sump", env={"ASYA_SUMP_STORE": f"file://{root}"})
    shutil.rmtree(root)
    root.write_text("not a directory")
    response = crew.invoke(sump_envelope(reason="Timeout"))
    assert response.status_code == 500
    assert response.json()["error"] == "processing_error"
    assert response.json()["details"]["type"] == "asya_shared.stores.base.StoreError"
