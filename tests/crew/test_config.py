"""config.py: crew settings from the environment (pure functions)."""

from __future__ import annotations

import pytest

from asya_crew import config


def test_store_url_is_read_and_trimmed() -> None:
    env = {config.RESULT_STORE: "  file://.asya/results "}
    assert config.store_url(env, config.RESULT_STORE) == "file://.asya/results"


@pytest.mark.parametrize("env", [{}, {"ASYA_SUMP_STORE": ""}, {"ASYA_SUMP_STORE": "  "}])
def test_a_missing_store_url_names_the_variable(env: dict[str, str]) -> None:
    with pytest.raises(config.ConfigError, match="ASYA_SUMP_STORE is not set") as info:
        config.store_url(env, config.SUMP_STORE)
    assert "file://" in str(info.value)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, config.MetricsAddress("0.0.0.0", 8081)),
        ({"ASYA_CREW_METRICS_PORT": ""}, config.MetricsAddress("0.0.0.0", 8081)),
        ({"ASYA_CREW_METRICS_PORT": "9100"}, config.MetricsAddress("0.0.0.0", 9100)),
        ({"ASYA_CREW_METRICS_PORT": " 0 "}, config.MetricsAddress("0.0.0.0", 0)),
        (
            {"ASYA_CREW_METRICS_PORT": "9100", "ASYA_CREW_METRICS_HOST": "127.0.0.1"},
            config.MetricsAddress("127.0.0.1", 9100),
        ),
    ],
)
def test_metrics_address(env: dict[str, str], expected: config.MetricsAddress) -> None:
    assert config.metrics_address(env) == expected


@pytest.mark.parametrize("raw", ["abc", "-1", "65536", "80.5", "8081x"])
def test_an_invalid_metrics_port_names_the_variable(raw: str) -> None:
    with pytest.raises(config.ConfigError, match=f"ASYA_CREW_METRICS_PORT='{raw}'"):
        config.metrics_address({"ASYA_CREW_METRICS_PORT": raw})
