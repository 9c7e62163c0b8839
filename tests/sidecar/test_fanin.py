"""fanin.py through routing.decide: a fan-out toward an x-join opens a join."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from asya_shared import joins
from asya_sidecar import envelope, routing
from asya_sidecar.envelope import Envelope, Reason
from asya_sidecar.routing import Context, Outcome
from asya_sidecar.runtime_client import Frames, Parked
from tests.sidecar.test_routing import NOW, ctx


def incoming(
    route: dict[str, Any],
    *,
    headers: dict[str, Any] | None = None,
    env_id: str = "t1",
    payload: Any = None,
) -> tuple[Envelope, bytes]:
    fields = {
        "id": env_id,
        "parent_id": "p0",
        "route": route,
        "headers": {"tenant": "acme", **(headers or {})},
        "status": {"phase": "pending", "deadline_at": "2026-12-07T13:00:00.000Z"},
        "payload": {"doc": "a b c"} if payload is None else payload,
    }
    body = json.dumps(fields).encode()
    parsed = envelope.parse(body, actor=route["curr"])
    assert isinstance(parsed, Envelope)
    return parsed, body


def frames(env: Envelope, payloads: list[Any], **headers: Any) -> Frames:
    return Frames(
        [
            {"payload": p, "headers": {**env.headers, **headers}}  # route unchanged
            for p in payloads
        ]
    )


def sent(decision: routing.Decision) -> list[tuple[str, dict[str, Any]]]:
    return [(o.actor, json.loads(o.body)) for o in decision.outputs]


SPLIT = {"prev": ["load"], "curr": "split", "next": ["summarize", "x-join", "combine"]}


def test_fanout_toward_xjoin_opens_a_join_with_own_ids_and_an_opener() -> None:
    env, body = incoming(SPLIT)
    decision = routing.decide(env, frames(env, ["a", "b", "c"]), body=body, ctx=ctx("split"))
    assert decision.outcome is Outcome.ROUTED
    out = sent(decision)
    assert [actor for actor, _ in out] == ["summarize"] * 3 + ["x-join"]
    parts = [msg for _, msg in out[:3]]
    assert [p["id"] for p in parts] == ["t1-0", "t1-1", "t1-2"]
    assert {p["parent_id"] for p in parts} == {"t1"}
    for index, part in enumerate(parts):
        (level,) = part["headers"][joins.PART_HEADER]
        assert level == {
            "origin": "t1",
            "index": index,
            "count": 3,
            "into": "/results",
            "policy": "fail",
            "deadline_at": "2026-11-24T12:10:00.000Z",
        }
        assert part["route"] == {
            "prev": ["load", "split"],
            "curr": "summarize",
            "next": ["x-join", "combine"],
        }
    opener = out[3][1]
    assert opener["id"] == "t1"
    assert opener["parent_id"] == "p0"
    assert opener["payload"] == {"doc": "a b c"}  # the splitter's input, not a part
    assert opener["route"] == {
        "prev": ["load", "split", "summarize"],
        "curr": "x-join",
        "next": ["combine"],
    }
    assert opener["headers"][joins.OPEN_HEADER]["count"] == 3
    assert joins.PART_HEADER not in opener["headers"]
    assert opener["status"]["deadline_at"] == "2026-12-07T13:00:00.000Z"


def test_handler_options_choose_into_timeout_and_policy_and_do_not_travel_on() -> None:
    env, body = incoming(SPLIT)
    options = {"into": "/summaries", "timeout": "30s", "policy": "partial"}
    decision = routing.decide(
        env, frames(env, [1, 2], **{joins.OPTIONS_HEADER: options}), body=body, ctx=ctx("split")
    )
    out = sent(decision)
    level = out[0][1]["headers"][joins.PART_HEADER][0]
    assert (level["into"], level["policy"]) == ("/summaries", "partial")
    assert level["deadline_at"] == "2026-11-24T12:00:30.000Z"
    assert all(joins.OPTIONS_HEADER not in msg["headers"] for _, msg in out)


def test_fanout_without_xjoin_ahead_keeps_the_old_ids() -> None:
    env, body = incoming({"prev": [], "curr": "split", "next": ["summarize"]})
    out = sent(routing.decide(env, frames(env, ["a", "b"]), body=body, ctx=ctx("split")))
    assert [msg["id"] for _, msg in out] == ["t1", "t1-1"]
    assert all(joins.PART_HEADER not in msg["headers"] for _, msg in out)


def test_a_part_moving_on_toward_its_xjoin_opens_nothing_more() -> None:
    level = {
        "origin": "t1",
        "index": 1,
        "count": 3,
        "into": "/results",
        "policy": "fail",
        "deadline_at": "2026-11-24T12:10:00.000Z",
    }
    route = {"prev": ["split"], "curr": "summarize", "next": ["x-join", "combine"]}
    env, body = incoming(route, headers={joins.PART_HEADER: [level]}, env_id="t1-1")
    out = sent(routing.decide(env, frames(env, ["short"]), body=body, ctx=ctx("summarize")))
    assert [(actor, msg["id"]) for actor, msg in out] == [("x-join", "t1-1")]
    assert out[0][1]["headers"][joins.PART_HEADER] == [level]


def test_nested_fanout_opens_an_inner_join_closed_by_the_first_xjoin() -> None:
    outer = {
        "origin": "t1",
        "index": 2,
        "count": 3,
        "into": "/results",
        "policy": "fail",
        "deadline_at": "2026-11-24T12:10:00.000Z",
    }
    route = {"prev": ["split"], "curr": "sub", "next": ["work", "x-join", "x-join", "combine"]}
    env, body = incoming(route, headers={joins.PART_HEADER: [outer]}, env_id="t1-2")
    out = sent(routing.decide(env, frames(env, ["x", "y"]), body=body, ctx=ctx("sub")))
    parts, opener = [m for _, m in out[:2]], out[2][1]
    assert [p["id"] for p in parts] == ["t1-2-0", "t1-2-1"]
    assert [lvl["origin"] for lvl in parts[0]["headers"][joins.PART_HEADER]] == ["t1", "t1-2"]
    # The inner opener carries the outer level, so the inner joined envelope is part 2.
    assert opener["id"] == "t1-2"
    assert opener["headers"][joins.PART_HEADER] == [outer]
    assert opener["route"]["next"] == ["x-join", "combine"]


def test_an_ungathered_fanout_inside_a_part_is_refused_clearly() -> None:
    level = {
        "origin": "t1",
        "index": 0,
        "count": 2,
        "into": "/results",
        "policy": "fail",
        "deadline_at": "2026-11-24T12:10:00.000Z",
    }
    route = {"prev": ["split"], "curr": "summarize", "next": ["x-join"]}
    env, body = incoming(route, headers={joins.PART_HEADER: [level]}, env_id="t1-0")
    decision = routing.decide(env, frames(env, ["a", "b"]), body=body, ctx=ctx("summarize"))
    assert decision.outcome is Outcome.SUMPED
    assert decision.reason is Reason.INVALID_RESULT
    record = json.loads(decision.outputs[0].body)
    assert "no x-join ahead gathers them" in record["status"]["error"]["message"]


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"policy": "maybe"}, "policy"),
        ({"into": "results"}, "must start with '/'"),
        ({"timeout": "soon"}, "timeout"),
        ({"timeout": 0}, "more than 0"),
        ({"size": 3}, "unknown keys"),
        ("fast", "must be an object"),
    ],
)
def test_bad_join_options_send_the_input_to_the_sump_naming_the_header(
    options: Any, words: str
) -> None:
    env, body = incoming(SPLIT)
    decision = routing.decide(
        env, frames(env, [1, 2], **{joins.OPTIONS_HEADER: options}), body=body, ctx=ctx("split")
    )
    assert decision.outcome is Outcome.SUMPED
    message = json.loads(decision.outputs[0].body)["status"]["error"]["message"]
    assert joins.OPTIONS_HEADER in message
    assert words in message


def test_more_parts_than_a_join_takes_are_refused() -> None:
    env, body = incoming(SPLIT)
    many = frames(env, list(range(joins.MAX_PARTS + 1)))
    decision = routing.decide(env, many, body=body, ctx=ctx("split", max_bytes=10**9))
    assert decision.outcome is Outcome.SUMPED
    assert (
        str(joins.MAX_PARTS) in json.loads(decision.outputs[0].body)["status"]["error"]["message"]
    )


def test_an_opener_too_big_for_the_transport_is_refused_as_oversize() -> None:
    # Small parts fit; the opener carries the splitter's big input and does not.
    env, body = incoming(SPLIT, payload={"doc": "x" * 3000})
    decision = routing.decide(env, frames(env, [1, 2]), body=body, ctx=ctx("split", max_bytes=2000))
    assert decision.outcome is Outcome.SUMPED
    assert decision.reason is Reason.OVERSIZE_RESULT


def test_holding_crew_parks_without_a_paused_report_and_skips_deadlines() -> None:
    route = {"prev": ["split", "summarize"], "curr": "x-join", "next": ["combine"]}
    env, body = incoming(route)
    late = ctx("x-join")
    late = Context(**{**late.__dict__, "now": NOW + datetime.timedelta(days=1)})
    assert not routing.past_deadline(env, late)
    decision = routing.decide(env, Parked("held"), body=body, ctx=late)
    assert decision.outcome is Outcome.DONE
    assert decision.outputs == ()


def test_a_part_of_a_canceled_join_is_canceled_even_when_nested() -> None:
    levels = [
        {
            "origin": origin,
            "index": 0,
            "count": 2,
            "into": "/results",
            "policy": "fail",
            "deadline_at": "2026-11-24T12:10:00.000Z",
        }
        for origin in ("t1", "t1-0")
    ]
    route = {"prev": ["split", "sub"], "curr": "work", "next": ["x-join", "x-join"]}
    env, _ = incoming(route, headers={joins.PART_HEADER: levels}, env_id="t1-0-1")
    assert routing.is_canceled(env, {"t1"})
    assert not routing.is_canceled(env, {"t2"})


def test_the_opener_names_the_namespace_the_joined_envelope_goes_on_in() -> None:
    """x-join may run in the crew's namespace: it sends the joined envelope to the next
    actor in the namespace of the actor that fanned out."""
    env, body = incoming(SPLIT)
    here = Context(**{**ctx("split").__dict__, "namespace": "team-a"})
    out = sent(routing.decide(env, frames(env, ["a"]), body=body, ctx=here))
    assert out[-1][1]["headers"][joins.OPEN_HEADER]["namespace"] == "team-a"
