"""asya_gateway.submit: checking a POST /v1/tasks body and building its envelope (pure)."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from asya_gateway.errors import ApiError
from asya_gateway.flows import parse_flows
from asya_gateway.submit import (
    MAX_ID_LENGTH,
    Submission,
    build_envelope,
    build_task,
    encode,
    parse_submission,
    timestamp,
)
from asya_gateway.tasks import TaskStatus
from asya_shared import wire

NOW = datetime.datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=datetime.UTC)
FLOWS = parse_flows(
    {
        "flows": [
            {"name": "plain", "route": ["a", "b"], "timeout": "5m"},
            {
                "name": "typed",
                "route": ["a"],
                "input_schema": {
                    "type": "object",
                    "required": ["url"],
                    "properties": {"url": {"type": "string"}},
                },
            },
        ]
    },
    "test",
)


def parse(body: Any, *, transport: str = "local", namespace: str = "default") -> Submission:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_submission(raw, FLOWS, namespace=namespace, transport=transport)


def refused(body: Any, **kwargs: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse(body, **kwargs)
    return caught.value


def test_a_route_and_a_payload_make_a_submission() -> None:
    got = parse({"route": ["a", "b"], "payload": {"x": 1}})
    assert got == Submission(route=("a", "b"), payload={"x": 1})


def test_every_optional_field_is_read() -> None:
    got = parse(
        {
            "route": ["a"],
            "payload": None,
            "headers": {"tenant": "t1"},
            "timeout": "30s",
            "id": "order-17.v2_x",
        }
    )
    assert got == Submission(
        route=("a",), payload=None, id="order-17.v2_x", headers={"tenant": "t1"}, timeout=30.0
    )


def test_a_flow_gives_its_route_and_its_timeout() -> None:
    got = parse({"flow": "plain", "payload": 1})
    assert (got.route, got.timeout, got.flow) == (("a", "b"), 300.0, "plain")


def test_a_request_timeout_wins_over_the_flows() -> None:
    assert parse({"flow": "plain", "payload": 1, "timeout": 7}).timeout == 7.0


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        (b"{not json", "invalid_json", "not valid JSON"),
        (b"", "invalid_json", "empty"),
        (b'{"route": ["a"], "payload": NaN}', "invalid_json", "NaN"),
        (["a"], "invalid_request", "JSON object"),
        ({"route": ["a"]}, "invalid_request", 'no "payload"'),
        ({"payload": 1}, "invalid_request", "not neither"),
        ({"route": ["a"], "flow": "plain", "payload": 1}, "invalid_request", "not both"),
        ({"route": [], "payload": 1}, "invalid_route", "empty"),
        ({"route": "a", "payload": 1}, "invalid_route", "list of actor names"),
        ({"route": ["a", 3], "payload": 1}, "invalid_route", "list of actor names"),
        ({"route": ["a"], "payload": 1, "timeout": "soon"}, "invalid_timeout", "'soon'"),
        ({"route": ["a"], "payload": 1, "timeout": 0}, "invalid_timeout", "out of range"),
        ({"route": ["a"], "payload": 1, "timeout": -5}, "invalid_timeout", "-5"),
        ({"route": ["a"], "payload": 1, "timeout": "inf"}, "invalid_timeout", "out of range"),
        ({"route": ["a"], "payload": 1, "timeout": True}, "invalid_timeout", "True"),
        ({"route": ["a"], "payload": 1, "headers": {"k": 1}}, "invalid_headers", "strings"),
        ({"route": ["a"], "payload": 1, "headers": ["k"]}, "invalid_headers", "strings"),
        ({"route": ["a"], "payload": 1, "id": "../etc"}, "invalid_id", "'../etc'"),
        ({"route": ["a"], "payload": 1, "id": "a b"}, "invalid_id", "letters, digits"),
        ({"route": ["a"], "payload": 1, "id": "x\n"}, "invalid_id", "letters, digits"),
        ({"route": ["a"], "payload": 1, "id": 5}, "invalid_id", "5"),
        ({"route": ["a"], "payload": 1, "id": "x" * (MAX_ID_LENGTH + 1)}, "invalid_id", "200"),
        ({"route": ["a"], "payload": 1, "ttl": 5}, "invalid_request", "'ttl'"),
        ({"flow": 3, "payload": 1}, "invalid_request", "name of a flow"),
    ],
)
def test_a_bad_body_is_refused_with_400_saying_why(body: Any, code: str, words: str) -> None:
    error = refused(body)
    assert (error.status, error.code) == (400, code)
    assert words in error.message


def test_the_longest_id_is_accepted() -> None:
    assert parse({"route": ["a"], "payload": 1, "id": "x" * MAX_ID_LENGTH}).id == "x" * 200


def test_an_actor_name_that_is_no_dns_label_is_named() -> None:
    error = refused({"route": ["a", "Bad_Name"], "payload": 1})
    assert (error.status, error.code) == (400, "invalid_actor")
    assert "'Bad_Name'" in error.message


def test_an_actor_whose_queue_name_the_broker_refuses_is_named() -> None:
    # "asya-production-eu-" + 62 characters is 81 > SQS's 80; the local file takes 255.
    long_actor = "x" * 62
    assert parse({"route": [long_actor], "payload": 1}, namespace="production-eu")
    error = refused(
        {"route": ["a", long_actor], "payload": 1}, transport="sqs", namespace="production-eu"
    )
    assert (error.status, error.code) == (400, "invalid_actor")
    assert repr(long_actor) in error.message
    assert "sqs allows 80" in error.message


def test_an_unknown_flow_is_404_listing_the_known_ones() -> None:
    error = refused({"flow": "nope", "payload": 1})
    assert (error.status, error.code) == (404, "unknown_flow")
    assert "'nope'" in error.message
    assert "plain, typed" in error.message


def test_a_payload_failing_the_flows_schema_names_the_path() -> None:
    error = refused({"flow": "typed", "payload": {"url": 42}})
    assert (error.status, error.code) == (400, "invalid_payload")
    assert "$.url" in error.message
    assert "'typed'" in error.message
    assert parse({"flow": "typed", "payload": {"url": "https://x"}}).flow == "typed"


def test_the_envelope_starts_the_route_pending_with_the_sidecars_status_shape() -> None:
    submission = Submission(
        route=("a", "b", "c"), payload={"q": "é"}, headers={"tenant": "t"}, timeout=90
    )
    envelope = build_envelope(submission, task_id="t-1", now=NOW, traceparent="00-aa-bb-01")
    assert envelope == {
        "id": "t-1",
        "parent_id": None,
        "route": {"prev": [], "curr": "a", "next": ["b", "c"]},
        "headers": {"traceparent": "00-aa-bb-01", "tenant": "t"},
        "status": {
            "phase": "pending",
            "actor": "a",
            "attempt": 1,
            "max_attempts": 1,
            "created_at": "2030-05-06T07:08:09.123456Z",
            "updated_at": "2030-05-06T07:08:09.123456Z",
            "deadline_at": "2030-05-06T07:09:39.123456Z",
            "reason": None,
            "error": None,
        },
        "payload": {"q": "é"},
    }
    # The status has exactly the keys (and order) every sidecar writes.
    assert list(envelope["status"]) == [
        key for key in wire.Status.__annotations__ if key != "retry_since"
    ]


def test_a_callers_traceparent_wins_and_no_timeout_means_no_deadline() -> None:
    submission = Submission(route=("a",), payload=1, headers={"traceparent": "00-mine-01"})
    envelope = build_envelope(submission, task_id="t", now=NOW, traceparent="00-new-01")
    assert envelope["headers"] == {"traceparent": "00-mine-01"}
    assert envelope["status"]["deadline_at"] is None


def test_the_task_is_pending_at_the_first_actor() -> None:
    submission = Submission(route=("a", "b"), payload=1, timeout=60, flow="f", headers={"k": "v"})
    envelope = build_envelope(submission, task_id="t-2", now=NOW, traceparent="00-x-01")
    task = build_task(submission, envelope, tenant="acme")
    assert task.to_json() == {
        "id": "t-2",
        "status": "pending",
        "route": {"prev": [], "curr": "a", "next": ["b"]},
        "actor": "a",
        "progress": 0.0,
        "result": None,
        "error": None,
        "reason": None,
        "created_at": "2030-05-06T07:08:09.123456Z",
        "updated_at": "2030-05-06T07:08:09.123456Z",
        "deadline_at": "2030-05-06T07:09:09.123456Z",
    }
    assert (task.tenant, task.status, task.flow, task.headers) == (
        "acme", TaskStatus.PENDING, "f", {"k": "v"}
    )  # fmt: skip


def test_encoding_is_compact_utf8_json() -> None:
    assert encode({"a": [1, 2], "b": "é"}) == '{"a":[1,2],"b":"é"}'.encode()


def test_timestamps_are_utc_with_microseconds() -> None:
    plus_two = datetime.timezone(datetime.timedelta(hours=2))
    moment = datetime.datetime(2030, 1, 1, 2, 0, 0, 999, tzinfo=plus_two)
    assert timestamp(moment) == "2030-01-01T00:00:00.000999Z"
