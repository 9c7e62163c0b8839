"""A poison mix: 100 unusable messages among 1,000 good envelopes (300 on moto), on every
transport. Every bad one ends in x-sump with its reason, every good one in x-sink, none is
lost."""

from __future__ import annotations

import asyncio
import base64
import json
import random
from collections import Counter
from collections.abc import Coroutine
from typing import Any

import pytest

from tests.support.pipeline import StartPipeline, actor, backlog

pytestmark = pytest.mark.slow

GOOD, BAD = 1000, 100


def bad_message(i: int) -> tuple[bytes, str]:
    kind = i % 5
    if kind == 0:
        return f"not json {i}".encode(), "ParseError"
    if kind == 1:
        return b"\xff\xfe" + i.to_bytes(4, "big"), "ParseError"
    if kind == 2:
        return json.dumps({"id": f"nopayload-{i}", "route": {"curr": "a"}}).encode(), "ParseError"
    if kind == 3:
        return json.dumps(
            {"id": f"elsewhere-{i}", "route": {"curr": "zz"}, "payload": i}
        ).encode(), "WrongActor"
    return json.dumps([i, "an array"]).encode(), "ParseError"


# The waits below bound the test (240 s each); the suite's default 120 s would cut a run on
# moto, whose requests slow down as its queues fill, before those deadlines speak.
@pytest.mark.timeout(600)
async def test_poison_mix_lands_everything_where_it_belongs(
    start_pipeline: StartPipeline,
) -> None:
    pipeline = await start_pipeline([actor("a", "flow.mark_a", concurrency=8)])
    good = backlog(pipeline.pipeline.settings.transport, GOOD)
    good_ids = [f"good-{i:04d}" for i in range(good)]
    bad = [bad_message(i) for i in range(BAD)]
    sends: list[Coroutine[Any, Any, object]] = [
        pipeline.send(["a"], {"i": i}, envelope_id=envelope_id)
        for i, envelope_id in enumerate(good_ids)
    ]
    sends += [pipeline.send_raw("a", body) for body, _ in bad]
    random.Random(7).shuffle(sends)

    for start in range(0, len(sends), 100):
        await asyncio.gather(*sends[start : start + 100])
    results = await pipeline.results(good_ids, timeout=240)
    records = await pipeline.wait_sump(BAD, timeout=240)

    assert all(r["payload"]["trail"] == ["a"] for r in results.values())
    assert len(records) == BAD  # no more, no fewer
    seen: Counter[str] = Counter()
    expected = dict(bad)
    for record in records:
        payload = record["payload"]
        original = payload["original"]
        raw = base64.b64decode(original) if payload["encoding"] == "base64" else original.encode()
        assert record["status"]["reason"] == expected[raw]
        seen[record["status"]["reason"]] += 1
    assert seen == Counter(reason for _, reason in bad)
