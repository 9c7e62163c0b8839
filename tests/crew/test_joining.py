"""joining.py: the joined envelope built from what the join store holds (pure)."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from asya_crew import joining
from asya_crew.joinstore import Claimed, Part
from asya_shared import joins

NOW = datetime.datetime(2026, 12, 7, 12, 0, tzinfo=datetime.UTC)


def opener(
    *, into: str = "/results", policy: str = "fail", payload: Any = None, next_: Any = None
) -> str:
    return json.dumps(
        {
            "id": "t1",
            "parent_id": None,
            "route": {
                "prev": ["split", "summarize"],
                "curr": "x-join",
                "next": ["combine"] if next_ is None else next_,
            },
            "headers": {
                "tenant": "acme",
                joins.OPEN_HEADER: {
                    "origin": "t1",
                    "count": 3,
                    "into": into,
                    "policy": policy,
                    "deadline_at": "2026-12-07T12:10:00.000Z",
                },
            },
            "status": {"created_at": "2026-12-07T11:59:00.000Z", "deadline_at": None},
            "payload": {"doc": "a b c"} if payload is None else payload,
        }
    )


def ok(value: Any) -> Part:
    return Part(ok=True, data=json.dumps(value))


def failed(message: str) -> Part:
    error = {"type": "ValueError", "mro": ["ValueError"], "message": message, "traceback": ""}
    return Part(ok=False, data=json.dumps({"reason": "RuntimeError", "error": error}))


def claimed(parts: dict[int, Part], *, opener_text: str | None = None) -> Claimed:
    return Claimed(
        origin="t1",
        count=3,
        deadline_us=0,
        opener=opener() if opener_text is None else opener_text,
        parts=parts,
        claims=1,
    )


def test_complete_join_goes_on_with_results_in_index_order_under_the_origin_id() -> None:
    emission = joining.decide(claimed({2: ok("C"), 0: ok("A"), 1: ok("B")}), now=NOW)
    env = emission.envelope
    assert emission.actor == "combine"
    assert env["id"] == "t1"
    assert env["payload"] == {"doc": "a b c", "results": ["A", "B", "C"]}
    assert env["route"] == {
        "prev": ["split", "summarize", "x-join"],
        "curr": "combine",
        "next": [],
    }
    assert env["status"]["phase"] == "pending"
    assert env["status"]["created_at"] == "2026-12-07T11:59:00.000Z"
    assert joins.OPEN_HEADER not in env["headers"]
    assert env["headers"]["tenant"] == "acme"


def test_join_at_the_end_of_the_route_finishes_the_task() -> None:
    parts = {0: ok(1), 1: ok(2), 2: ok(3)}
    emission = joining.decide(claimed(parts, opener_text=opener(next_=[])), now=NOW)
    assert emission.actor == "x-sink"
    assert emission.envelope["status"]["phase"] == "succeeded"


def test_missing_part_with_fail_policy_fails_with_join_incomplete_naming_indexes() -> None:
    emission = joining.decide(claimed({0: ok("A"), 2: failed("bad chunk")}), now=NOW)
    env = emission.envelope
    assert emission.actor == "x-sink"
    assert env["status"]["phase"] == "failed"
    assert env["status"]["reason"] == "JoinIncomplete"
    message = env["status"]["error"]["message"]
    assert "never arrived: [1]" in message
    assert "2 (ValueError: bad chunk)" in message
    # What did arrive is kept with the failure, and the route left undone is shown.
    assert env["payload"]["results"] == ["A", None, None]
    assert env["payload"]["missing"] == [1, 2]
    assert env["route"]["curr"] == "x-sink"
    assert env["route"]["next"] == ["combine"]


def test_partial_policy_goes_on_with_nulls_and_a_missing_list() -> None:
    text = opener(policy="partial", into="/out/summaries")
    emission = joining.decide(claimed({0: ok("A"), 2: ok("C")}, opener_text=text), now=NOW)
    assert emission.actor == "combine"
    assert emission.envelope["payload"] == {
        "doc": "a b c",
        "out": {"summaries": ["A", None, "C"], "missing": [1]},
    }
    assert emission.missing == (1,)


def test_into_the_whole_document_replaces_the_payload_with_the_list() -> None:
    text = opener(into="")
    emission = joining.decide(claimed({0: ok(1), 1: ok(2), 2: ok(3)}, opener_text=text), now=NOW)
    assert emission.envelope["payload"] == [1, 2, 3]


def test_a_base_that_is_no_object_is_kept_under_input() -> None:
    text = opener(payload="the whole text")
    emission = joining.decide(claimed({0: ok(1), 1: ok(2), 2: ok(3)}, opener_text=text), now=NOW)
    assert emission.envelope["payload"] == {"input": "the whole text", "results": [1, 2, 3]}


def test_into_through_a_non_object_fails_the_join_clearly() -> None:
    text = opener(into="/doc/results")  # /doc is a string
    emission = joining.decide(claimed({0: ok(1), 1: ok(2), 2: ok(3)}, opener_text=text), now=NOW)
    assert emission.envelope["status"]["reason"] == "InvalidJoin"
    assert "'/doc' holds a string" in emission.envelope["status"]["error"]["message"]


def test_a_join_whose_opener_never_came_keeps_the_results_in_the_sump_only() -> None:
    """Parts redelivered after the join's tombstone was purged must not overwrite the
    finished task's record in x-sink."""
    item = Claimed(origin="t1", count=2, deadline_us=0, opener=None, parts={0: ok(1)}, claims=1)
    emission = joining.decide(item, now=NOW)
    assert emission.actor == "x-sump"
    assert emission.envelope["status"]["reason"] == "JoinIncomplete"
    assert emission.envelope["id"] == "t1"
    assert emission.envelope["payload"] == {"results": [1, None], "missing": [1]}


@pytest.mark.parametrize("next_", [["combine", "store"], []])
def test_oversize_fails_without_the_results_and_keeps_the_route(next_: list[str]) -> None:
    parts = {0: ok("A" * 10), 1: ok("B"), 2: ok("C")}
    emission = joining.decide(claimed(parts, opener_text=opener(next_=next_)), now=NOW)
    too_big = joining.oversize(emission, size=5_000_000, limit=1_000_000, now=NOW)
    env = too_big.envelope
    assert too_big.actor == "x-sink"
    assert env["status"]["reason"] == "OversizeResult"
    assert "references" in env["status"]["error"]["message"]
    assert "results" not in json.dumps(env["payload"])
    assert env["route"] == {
        "prev": ["split", "summarize", "x-join"],
        "curr": "x-sink",
        "next": next_,
    }


def test_the_joined_envelope_goes_on_in_the_namespace_the_opener_names() -> None:
    text = json.loads(opener())
    text["headers"][joins.OPEN_HEADER]["namespace"] = "team-a"
    parts = {0: ok(1), 1: ok(2), 2: ok(3)}
    onward = joining.decide(claimed(parts, opener_text=json.dumps(text)), now=NOW)
    assert (onward.actor, onward.namespace) == ("combine", "team-a")
    # The crew's own actors are in x-join's namespace, whatever the opener says.
    failed = joining.decide(claimed({0: ok(1)}, opener_text=json.dumps(text)), now=NOW)
    assert (failed.actor, failed.namespace) == ("x-sink", None)
