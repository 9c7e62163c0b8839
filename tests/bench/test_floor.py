"""A smoke run of the floor forwarder against the real RabbitMQ broker: nothing is lost."""

from __future__ import annotations

import os
import uuid

import pytest

from asya_transports.rabbitmq import RabbitMQTransport
from bench.suite import FloorProcess, Ledger, Phase, collect, send_all

MESSAGES = 200


@pytest.mark.rabbitmq
async def test_rabbitmq_floor_forwards_every_message(rabbitmq_url: str) -> None:
    run = uuid.uuid4().hex[:8]
    source, target = f"asya-benchtest{run}-a", f"asya-benchtest{run}-b"
    ledger = Ledger()
    async with RabbitMQTransport(rabbitmq_url) as transport:
        try:
            for queue in (source, target):
                await transport.ensure_queue(queue)
            ids = [f"smoke-{i}" for i in range(MESSAGES)]
            await send_all(transport, source, ledger, ids, ["b"])
            floor = FloorProcess(
                "rabbitmq", source, target, 16, {**os.environ, "ASYA_RABBITMQ_URL": rabbitmq_url}
            )
            phase = Phase("smoke", MESSAGES)
            await floor.start()
            try:
                await collect(transport, target, phase, ledger, idle_timeout=60)
            finally:
                await floor.stop()
            assert phase.arrivals == MESSAGES
            assert ledger.lost == 0
            assert ledger.duplicates == 0
            assert f"forwarded {MESSAGES}" in floor.output
            assert await transport.queue_depth(source) == 0
        finally:
            for queue in (source, target):
                await transport.delete_queue(queue)
