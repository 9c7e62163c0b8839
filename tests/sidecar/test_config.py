from __future__ import annotations

import pytest

from asya_sidecar import config

MINIMAL = {"ASYA_ACTOR": "infer"}


def test_defaults() -> None:
    settings = config.load(MINIMAL)

    assert settings.actor == "infer"
    assert settings.namespace == "default"
    assert settings.transport == "local"
    assert settings.queue == "asya-default-infer"
    assert settings.sink_queue == "asya-default-x-sink"
    assert settings.sump_queue == "asya-default-x-sump"
    assert settings.socket_path == "/var/run/asya/asya-runtime.sock"
    assert settings.concurrency == 1
    assert settings.actor_timeout == 300.0
    assert settings.metrics_port == 8080
    assert not settings.queue_autocreate
    assert not settings.is_crew


def test_every_setting_can_be_given() -> None:
    settings = config.load(
        {
            "ASYA_ACTOR": "x-sink",
            "ASYA_NAMESPACE": "prod",
            "ASYA_TRANSPORT": "rabbitmq",
            "ASYA_QUEUE": "custom-in",
            "ASYA_SINK_QUEUE": "sink-q",
            "ASYA_SUMP_QUEUE": "sump-q",
            "ASYA_JOIN_QUEUE": "asya-crew-x-join",
            "ASYA_PAUSE_QUEUE": "asya-crew-x-pause",
            "ASYA_SOCKET_DIR": "/tmp/s",
            "ASYA_CONCURRENCY": "16",
            "ASYA_ACTOR_TIMEOUT": "5m",
            "ASYA_SHUTDOWN_TIMEOUT": "10s",
            "ASYA_METRICS_PORT": "0",
            "ASYA_LOG_FORMAT": "text",
            "ASYA_QUEUE_AUTOCREATE": "true",
            "ASYA_EVENTS_URL": "http://events/",
        }
    )

    assert (settings.queue, settings.sink_queue, settings.sump_queue) == (
        "custom-in",
        "sink-q",
        "sump-q",
    )
    assert settings.concurrency == 16
    assert settings.actor_timeout == 300.0
    assert settings.shutdown_timeout == 10.0
    assert settings.metrics_port == 0
    assert settings.queue_autocreate
    assert settings.is_crew
    assert settings.queue_of("next-one") == "asya-prod-next-one"
    assert settings.queue_of("x-sink") == "sink-q"
    assert settings.queue_of("x-sump") == "sump-q"
    assert settings.queue_of("x-join") == "asya-crew-x-join"
    assert settings.queue_of("x-pause") == "asya-crew-x-pause"


def test_all_problems_are_reported_together() -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.load(
            {
                "ASYA_ACTOR": "Not_A_Label",
                "ASYA_TRANSPORT": "kafka",
                "ASYA_CONCURRENCY": "0",
                "ASYA_ACTOR_TIMEOUT": "soon",
                "ASYA_METRICS_PORT": "99999",
                "ASYA_QUEUE_AUTOCREATE": "maybe",
                "ASYA_LOG_FORMAT": "xml",
            }
        )

    message = str(caught.value)
    for fragment in (
        "ASYA_ACTOR",
        "ASYA_TRANSPORT='kafka'",
        "ASYA_CONCURRENCY='0'",
        "ASYA_ACTOR_TIMEOUT",
        "ASYA_METRICS_PORT='99999'",
        "ASYA_QUEUE_AUTOCREATE='maybe'",
        "ASYA_LOG_FORMAT='xml'",
    ):
        assert fragment in message


def test_actor_is_required() -> None:
    with pytest.raises(config.ConfigError, match="ASYA_ACTOR is required"):
        config.load({})


def test_queue_name_over_the_broker_limit_is_refused() -> None:
    with pytest.raises(config.ConfigError, match="characters; local allows 255"):
        config.load({"ASYA_ACTOR": "a" * 60, "ASYA_NAMESPACE": "n" * 200})


@pytest.mark.parametrize("level", ["debug", "INFO", "Warning", "error", "critical"])
def test_log_levels_match_the_runtime(level: str) -> None:
    # The operator gives both containers the same ASYA_LOG_LEVEL; both must accept it.
    assert config.load({**MINIMAL, "ASYA_LOG_LEVEL": level}).log_level == level.upper()


def test_an_unknown_log_level_is_refused_by_name() -> None:
    with pytest.raises(config.ConfigError, match="ASYA_LOG_LEVEL"):
        config.load({**MINIMAL, "ASYA_LOG_LEVEL": "verbose"})
