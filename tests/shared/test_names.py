from __future__ import annotations

import pytest

from asya_shared import names
from asya_shared.durations import parse_duration, positive_duration_from_env


@pytest.mark.parametrize("good", ["a", "prep", "x-sink", "step-2", "a" * 63, "0abc"])
def test_actor_names_that_are_dns_labels(good: str) -> None:
    assert names.check_actor_name(good) == good


@pytest.mark.parametrize("bad", ["", "Prep", "-a", "a-", "a_b", "a.b", "a b", "a" * 64, "ü"])
def test_actor_names_that_are_refused(bad: str) -> None:
    with pytest.raises(names.InvalidName, match="not a DNS label"):
        names.check_actor_name(bad)


def test_queue_name_is_prefixed_with_namespace() -> None:
    assert names.queue_name("prod", "infer") == "asya-prod-infer"


def test_long_queue_name_is_refused_with_its_length_never_truncated() -> None:
    name = names.queue_name("n" * 40, "a" * 40)

    with pytest.raises(names.InvalidName, match=f"has {len(name)} characters; sqs allows 80"):
        names.check_queue_name(name, "sqs")
    assert names.check_queue_name(name, "rabbitmq") == name


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30.0),
        ("2.5", 2.5),
        (7, 7.0),
        ("250ms", 0.25),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1m0.5s", 60.5),
        (" 10s ", 10.0),
        ("0", 0.0),
    ],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "ten", "5x", "1h-3m", "-1", "s", "nan", "5m1"])
def test_bad_durations_name_the_input(bad: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("environ", "seconds"),
    [({}, 30.0), ({"LEASE": " "}, 30.0), ({"LEASE": "90s"}, 90.0), ({"LEASE": "10m"}, 600.0)],
)
def test_positive_duration_from_env(environ: dict[str, str], seconds: float) -> None:
    found = positive_duration_from_env(environ, "LEASE", 30.0, maximum=600, limit="at most 10m")
    assert found == seconds


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("0", "LEASE='0' is out of range: at most 10m"),
        ("601", "LEASE='601' is out of range: at most 10m"),
        ("soon", "LEASE='soon' is not a duration"),
        ("inf", "LEASE='inf' is out of range"),
    ],
)
def test_positive_duration_from_env_names_the_variable(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match="LEASE") as caught:
        positive_duration_from_env(
            {"LEASE": raw},
            "LEASE",
            30.0,
            maximum=float("inf") if raw == "inf" else 600,
            limit="at most 10m",
        )
    assert message in str(caught.value)


def test_a_name_whose_dead_letter_queue_would_not_fit_is_refused() -> None:
    name = "asya-" + "n" * 73  # 78 characters: fits SQS's 80, its "-dlq" twin does not

    with pytest.raises(names.InvalidName, match="dead-letter queue"):
        names.check_queue_name(name, "sqs")
    assert names.check_queue_name(name, "rabbitmq") == name
