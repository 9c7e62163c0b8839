"""A silent network outage (packets dropped, no reset) between the SQS transport and its
endpoint shows within one long poll, and a send gives up within its own read timeouts.

Found by the fault suite's network-blackhole scenario: every SQS call shared the long poll's
read timeout (20 s + 15 s) and was tried 3 times, so a receiver reported the outage only
after up to 105 s and a send hung as long; through 60 s blackholes the sidecar's /healthz
kept answering OK. The transport reaches moto through a TCP proxy the test controls.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from asya_transports import TransportUnavailable
from asya_transports.sqs import SQSTransport
from faults.proxy import Proxy
from tests.support.services import ServiceProcess
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

WAIT_SECONDS = 20  # the transport's default long poll: the case the fault suite hit
# The old code needed up to 3 x (20 + 15) s for either; the fix needs 20 + 8 s to notice in
# a receive and 3 x 15 s in a send. These deadlines sit between the two.
NOTICED_WITHIN_S = 60.0
SEND_FAILS_WITHIN_S = 75.0


@pytest.fixture
async def proxy(moto_server: ServiceProcess) -> AsyncIterator[Proxy]:
    async with Proxy(target_port=moto_server.port) as started:
        yield started


@pytest.fixture
async def transport(proxy: Proxy, aws_env: dict[str, str]) -> AsyncIterator[SQSTransport]:
    opened = SQSTransport(endpoint_url=f"http://127.0.0.1:{proxy.port}", wait_seconds=WAIT_SECONDS)
    async with opened:
        yield opened


@pytest.mark.timeout(240)
async def test_a_receiver_reports_a_silent_outage_within_one_long_poll(
    proxy: Proxy, transport: SQSTransport, moto_server: ServiceProcess, aws_env: dict[str, str]
) -> None:
    queue = f"asya-test-{uuid.uuid4().hex[:8]}"
    await transport.ensure_queue(queue)
    receiver = transport.receive(queue, prefetch=1)
    try:
        waiting = asyncio.ensure_future(receiver.__anext__())
        proxy.blackhole()
        started = time.monotonic()
        await eventually(
            lambda: receiver.trouble is not None,
            "the receiver to report the outage",
            timeout=NOTICED_WITHIN_S,
        )
        print(f"noticed after {time.monotonic() - started:.1f} s: {receiver.trouble}")
        proxy.restore()
        # Sent around the proxy, as a producer elsewhere would: it arrives once the receiver
        # is through again, and its trouble is cleared.
        async with SQSTransport(endpoint_url=moto_server.url) as direct:
            await direct.send(queue, b"after")
        delivery = await asyncio.wait_for(waiting, 90)
        assert delivery.body == b"after"
        assert receiver.trouble is None
        await delivery.ack()
    finally:
        proxy.restore()
        await receiver.aclose()


@pytest.mark.timeout(240)
async def test_a_send_into_a_silent_outage_fails_within_its_timeouts(
    proxy: Proxy, transport: SQSTransport
) -> None:
    queue = f"asya-test-{uuid.uuid4().hex[:8]}"
    await transport.ensure_queue(queue)
    await transport.send(queue, b"before")  # the queue's URL is known: only the send is left
    proxy.blackhole()
    started = time.monotonic()
    try:
        with pytest.raises(TransportUnavailable, match=queue):
            # Past this deadline the send hangs (TimeoutError), which is the bug.
            await asyncio.wait_for(transport.send(queue, b"during"), SEND_FAILS_WITHIN_S)
    finally:
        proxy.restore()
    print(f"the send failed after {time.monotonic() - started:.1f} s")
