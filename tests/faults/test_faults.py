"""Every fault scenario of `python -m faults`, in its short profile, on every broker where it
means something. A run passes only with nothing lost and duplicates within the scenario's own
bound (faults/scenarios); its JSON line is printed, as `python -m faults` prints it."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from faults import brokers
from faults.harness import Context
from faults.scenarios import registry
from tests.support.services import ServiceProcess

pytestmark = pytest.mark.slow

SCENARIOS = registry()
CASES = [
    pytest.param(
        name,
        transport,
        id=f"{name}-{transport}",
        marks=[getattr(pytest.mark, transport)] if transport != "local" else [],
    )
    for name, scenario in SCENARIOS.items()
    for transport in scenario.transports
]


@pytest.fixture
def broker(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, transport: str
) -> brokers.Broker:
    service: ServiceProcess | None = None
    if transport == "rabbitmq":
        request.getfixturevalue("rabbitmq_url")
    elif transport == "sqs":
        request.getfixturevalue("aws_env")
        service = request.getfixturevalue("moto_server")
    elif transport == "pubsub":
        service = request.getfixturevalue("pubsub_emulator")
    found = brokers.Broker(transport, service)
    for name, value in found.env.items():
        monkeypatch.setenv(name, value)
    return found


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("name", "transport"), CASES)
async def test_scenario_short_profile(
    name: str, transport: str, broker: brokers.Broker, tmp_path: Path
) -> None:
    scenario = SCENARIOS[name]
    ctx = Context(
        broker=broker,
        sizes=scenario.sizes["short"],
        rng=random.Random(f"ci-{name}-{transport}"),
        workdir=tmp_path,
        log=print,
    )
    outcome = await scenario.run(ctx)
    print(json.dumps(outcome.to_json()))
    assert outcome.passed, outcome.problems
    assert outcome.lost == 0
    assert outcome.faults_injected >= 1, "a fault run that injected no fault proves nothing"
