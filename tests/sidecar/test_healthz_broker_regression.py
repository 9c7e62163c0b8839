"""A sidecar's /healthz answers 503 while its broker cannot be reached, and 200 again once it
can. Found by the fault suite's network-blackhole scenario: through a 90 s blackhole /healthz
kept saying "ok", because only a receiver that gave up reached it, while the sends that
timed out were only logged.

The sidecars reach RabbitMQ through a TCP proxy the test controls (faults/proxy.py).
"""

from __future__ import annotations

import random
import re
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from faults import brokers
from faults.harness import Context, Run, Sizes, wait_for
from faults.proxy import Proxy
from faults.scenarios.network import sidecars_through, via_proxy
from tests.support.services import free_port

pytestmark = [pytest.mark.slow, pytest.mark.rabbitmq]


@pytest.fixture
async def proxy(rabbitmq_url: str) -> AsyncIterator[Proxy]:
    async with Proxy(target_port=5672) as started:
        yield started


def context(tmp_path: Path) -> Context:
    return Context(
        broker=brokers.Broker("rabbitmq"),
        sizes=Sizes(envelopes=1, faults=1),
        rng=random.Random(0),
        workdir=tmp_path,
    )


def in_flight(port: int, actor: str) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = re.search(rf'asya_sidecar_envelopes_in_flight\{{actor="{actor}"\}} ([0-9.]+)', text)
    return int(float(found.group(1))) if found else 0


async def answers(run: Run, actor: str, code: int) -> bool:
    return await run.healthz(actor) == code


@pytest.mark.timeout(180)
async def test_a_silent_outage_shows_once_a_send_times_out(proxy: Proxy, tmp_path: Path) -> None:
    async with Run(
        context(tmp_path), prepare=sidecars_through(via_proxy(context(tmp_path), proxy.port))
    ) as run:
        await run.feed_ids(["slow"], work_s=3)
        port = run.health_port("b")
        await wait_for(lambda: in_flight(port, "b") == 1, "b to be handling the envelope", 60)
        # Packets dropped, no reset: b's handler ends, its send to c hangs until it times out.
        proxy.blackhole()
        await wait_for(
            lambda: answers(run, "b", 503), "b's /healthz to answer 503 during the outage", 90
        )
        proxy.restore()
        await wait_for(lambda: answers(run, "b", 200), "b's /healthz to answer 200 after it", 90)
        await run.settle(["slow"], timeout=90, quiet_s=0.5)
        assert run.outcome("healthz", ["slow"]).succeeded == 1


@pytest.mark.timeout(180)
async def test_a_broker_that_refuses_connections_shows(proxy: Proxy, tmp_path: Path) -> None:
    async with Run(
        context(tmp_path), prepare=sidecars_through(via_proxy(context(tmp_path), proxy.port))
    ) as run:
        assert await run.healthz("b") == 200
        proxy.target_port = free_port()  # nobody listens there
        proxy.drop_connections()
        await wait_for(lambda: answers(run, "b", 503), "b's /healthz to answer 503", 60)
        proxy.target_port = 5672
        await wait_for(lambda: answers(run, "b", 200), "b's /healthz to answer 200 again", 90)
        await run.feed_ids(["after"])
        await run.settle(["after"], timeout=60, quiet_s=0.5)
        assert run.outcome("healthz", ["after"]).succeeded == 1
