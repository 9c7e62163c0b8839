"""At-least-once under fire: SIGKILL the middle actor's sidecar again and again while 1,000
envelopes (300 on moto) flow through a 3-hop pipeline. Every envelope must reach x-sink;
duplicates are allowed (and counted, from x-sink's own received counter), losses are not."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import urllib.request

import pytest

from tests.support.pipeline import StartPipeline, actor, backlog
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

ENVELOPES = 1000
KILLS = 4


def received_by(port: int, actor_name: str) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    pattern = rf'asya_sidecar_envelopes_received_total\{{actor="{actor_name}"\}} ([0-9.e+]+)'
    match = re.search(pattern, text)
    return int(float(match.group(1))) if match else 0


@pytest.mark.timeout(300)
async def test_killing_the_middle_sidecar_loses_nothing(start_pipeline: StartPipeline) -> None:
    pipeline = await start_pipeline(
        [
            actor("a", "flow.echo", concurrency=8),
            actor("b", "flow.pause", concurrency=4),
            actor("c", "flow.echo", concurrency=8),
        ],
        # A killed consumer's messages come back when its lease ends; short leases keep the
        # test quick (heartbeats extend them while a handler runs).
        extra_env={
            "ASYA_LOCAL_LEASE_SECONDS": "3",
            "ASYA_SQS_VISIBILITY_TIMEOUT": "5",
            "ASYA_PUBSUB_ACK_DEADLINE": "10",
        },
    )
    supervisor = pipeline.pipeline.supervisor
    envelopes = backlog(pipeline.pipeline.settings.transport, ENVELOPES)
    ids = [f"k{i:04d}" for i in range(envelopes)]
    for batch in range(0, envelopes, 100):
        await asyncio.gather(
            *(
                pipeline.send(["a", "b", "c"], {"i": i}, envelope_id=i)
                for i in ids[batch : batch + 100]
            )
        )

    for kill in range(KILLS):
        threshold = (kill + 1) * envelopes // (KILLS + 2)
        await eventually(
            lambda: sum(1 for i in ids if pipeline.stored(i) is not None) >= threshold,  # noqa: B023
            f"{threshold} results before kill {kill + 1}",
        )
        os.kill(supervisor.pid("b/sidecar"), signal.SIGKILL)
        await eventually(
            lambda: supervisor.restarts("b/sidecar") >= kill + 1,  # noqa: B023
            "the killed sidecar to be restarted",
        )

    results = await pipeline.results(ids, timeout=180)
    sink_port = next(s.health_port for s in pipeline.pipeline.specs if s.name == "x-sink/sidecar")
    assert sink_port is not None
    delivered_to_sink = received_by(sink_port, "x-sink")
    lost = envelopes - len(results)
    duplicates = delivered_to_sink - envelopes
    print(
        json.dumps(
            {
                "kill_test": pipeline.pipeline.settings.transport,
                "envelopes": envelopes,
                "kills": KILLS,
                "lost": lost,
                "duplicates": duplicates,
            }
        )
    )

    assert lost == 0
    assert duplicates >= 0
    assert all(r["status"]["phase"] == "succeeded" for r in results.values())
    assert supervisor.exit_codes("b/sidecar") == [-9] * KILLS
