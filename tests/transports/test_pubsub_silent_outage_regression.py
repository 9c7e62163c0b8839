"""A silent network outage (packets dropped, no reset) between an idle Pub/Sub receiver and
the endpoint shows in `Receiver.trouble` (and so in the sidecar's /healthz) within about
PROBE_AFTER_S + PROBE_TIMEOUT_S, although the pull it waits on is held for up to 120 s.

Found by the fault suite's network-blackhole scenario (long profile, Pub/Sub): an outage
that began while the middle sidecar had nothing in flight left its /healthz OK for all
60 s, since only a send's timeout or the pull's could show it. The transport reaches the
emulator through a TCP proxy the test controls.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from asya_transports import pubsub
from asya_transports.pubsub import PROBE_TIMEOUT_S, PubSubTransport
from faults.proxy import Proxy
from tests.support.services import ServiceProcess
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

PROJECT = "asya-test"
# Checks come sooner than in production (20 s), to keep the test short; the timeout of one
# check is the real one. The old code noticed only when the held pull timed out (the
# emulator holds it ~90 s, the client gives up at 120 s).
PROBE_AFTER_S = 2.0
NOTICED_WITHIN_S = PROBE_AFTER_S + PROBE_TIMEOUT_S + 15


@pytest.fixture(autouse=True)
def frequent_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pubsub, "PROBE_AFTER_S", PROBE_AFTER_S)


@pytest.fixture
async def proxy(pubsub_emulator: ServiceProcess) -> AsyncIterator[Proxy]:
    async with Proxy(target_port=pubsub_emulator.port) as started:
        yield started


@pytest.mark.timeout(240)
async def test_an_idle_receiver_reports_a_silent_outage_while_its_pull_is_held(
    proxy: Proxy, pubsub_emulator: ServiceProcess
) -> None:
    queue = f"asya-test-{uuid.uuid4().hex[:8]}"
    async with PubSubTransport(project=PROJECT, emulator_host=pubsub_emulator.host) as direct:
        await direct.ensure_queue(queue)
        async with PubSubTransport(
            project=PROJECT, emulator_host=f"127.0.0.1:{proxy.port}"
        ) as transport:
            receiver = transport.receive(queue, prefetch=1)
            try:
                waiting = asyncio.ensure_future(receiver.__anext__())
                proxy.blackhole()
                started = time.monotonic()
                await eventually(
                    lambda: receiver.trouble is not None,
                    "the idle receiver to report the outage",
                    timeout=NOTICED_WITHIN_S,
                )
                print(f"noticed after {time.monotonic() - started:.1f} s: {receiver.trouble}")
                assert queue in str(receiver.trouble)
                proxy.restore()
                await eventually(
                    lambda: receiver.trouble is None,
                    "the next check (or pull) to clear the trouble",
                    timeout=NOTICED_WITHIN_S,
                )
                # Published around the proxy, as a producer elsewhere would.
                await direct.send(queue, b"after")
                delivery = await asyncio.wait_for(waiting, 150)
                assert delivery.body == b"after"
                await delivery.ack()
            finally:
                proxy.restore()
                await receiver.aclose()
        await direct.delete_queue(queue)


@pytest.mark.timeout(120)
async def test_a_quiet_subscription_is_not_trouble(
    pubsub_emulator: ServiceProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe's answer keeps an idle receiver healthy past several checks."""
    queue = f"asya-test-{uuid.uuid4().hex[:8]}"
    async with PubSubTransport(project=PROJECT, emulator_host=pubsub_emulator.host) as transport:
        await transport.ensure_queue(queue)
        receiver = transport.receive(queue, prefetch=1)
        probes = 0
        original = transport._unreachable

        async def counted(name: str) -> str | None:
            nonlocal probes
            probes += 1
            return await original(name)

        monkeypatch.setattr(transport, "_unreachable", counted)
        try:
            waiting = asyncio.ensure_future(receiver.__anext__())
            await eventually(lambda: probes >= 3, "three checks while the pull is held", timeout=60)
            assert receiver.trouble is None
            assert not waiting.done()
            waiting.cancel()
        finally:
            await receiver.aclose()
            await transport.delete_queue(queue)
