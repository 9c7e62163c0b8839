"""A good envelope that shares its runtime's deaths with one that kills it is not failed.

Found by the fault suite's poison scenario: the sidecar failed as RuntimeCrashed any envelope
in flight at a death once the broker had delivered it 3 times, so a good envelope fetched
together with a self-killing one (requeued together, fetched together again) was failed with
it. Now an envelope in flight at a death is only a suspect, its next call runs alone, and
only deaths while it runs alone count (asya_sidecar/crash_ledger.py).
"""

from __future__ import annotations

import pytest

from tests.support.pipeline import StartPipeline, actor

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "transport_kind", ["local", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)], indirect=True
)
@pytest.mark.timeout(180)
async def test_the_killer_fails_and_its_companion_succeeds(start_pipeline: StartPipeline) -> None:
    pipeline = await start_pipeline([actor("k", "crashing.maybe_die", concurrency=2)])
    # The good one is sent first and holds the runtime for a while, so that every time both
    # are fetched together, the killer's call kills the runtime under it.
    good = await pipeline.send(["k"], {"hold_s": 1.5}, envelope_id="good")
    killer = await pipeline.send(["k"], {"die": True}, envelope_id="killer")

    results = await pipeline.results([good, killer], timeout=120)

    assert results[good]["status"]["phase"] == "succeeded", results[good]["status"]
    assert results[killer]["status"]["reason"] == "RuntimeCrashed", results[killer]["status"]
    assert "while it ran alone" in results[killer]["status"]["error"]["message"]
    deaths = pipeline.pipeline.supervisor.exit_codes("k/runtime")
    assert 2 <= len(deaths) <= 3, deaths
