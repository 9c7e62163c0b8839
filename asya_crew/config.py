"""Crew settings read from the environment. Pure: the caller passes the mapping in.

    ASYA_RESULT_STORE       x-sink's store URL (required by x-sink)
    ASYA_SUMP_STORE         x-sump's store URL (required by x-sump)
    ASYA_JOIN_STORE         x-join's store URL (required by x-join; see join.py for the rest)
    ASYA_CREW_METRICS_PORT  Prometheus port, default 8081; 0 turns the endpoint off
    ASYA_CREW_METRICS_HOST  address to bind it to, default 0.0.0.0

The default port is not the sidecar's 8080: both containers share the pod's network.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from asya_shared import env
from asya_shared.stores import FORMS

RESULT_STORE = env.RESULT_STORE
SUMP_STORE = env.SUMP_STORE
JOIN_STORE = env.JOIN_STORE
METRICS_PORT = env.CREW_METRICS_PORT
METRICS_HOST = env.CREW_METRICS_HOST
DEFAULT_METRICS_PORT = 8081
DEFAULT_METRICS_HOST = "0.0.0.0"  # scraped from outside the pod


class ConfigError(ValueError):
    """A crew environment variable is missing or malformed; the message names it."""


@dataclass(frozen=True)
class MetricsAddress:
    host: str
    port: int  # 0: no metrics endpoint


JOIN_FORMS = "sqlite:///absolute/path.db, sqlite://relative/path.db or postgresql://..."


def store_url(environ: Mapping[str, str], variable: str) -> str:
    url = environ.get(variable, "").strip()
    if not url and variable == JOIN_STORE:
        raise ConfigError(
            f"{variable} is not set: point it at x-join's store, one of {JOIN_FORMS} "
            f"(for example {variable}=sqlite:///var/lib/asya/join.db)"
        )
    if not url:
        raise ConfigError(
            f"{variable} is not set: point it at the result store, one of {FORMS} "
            f"(for example {variable}=file://.asya/results)"
        )
    return url


def metrics_address(environ: Mapping[str, str]) -> MetricsAddress:
    raw = environ.get(METRICS_PORT, "").strip()
    port = DEFAULT_METRICS_PORT
    if raw:
        try:
            port = int(raw)
        except ValueError:
            port = -1
        if not 0 <= port <= 65535:
            raise ConfigError(
                f"{METRICS_PORT}={raw!r} is not a port number: use 1-65535, or 0 to turn the "
                "metrics endpoint off"
            )
    host = environ.get(METRICS_HOST, "").strip() or DEFAULT_METRICS_HOST
    return MetricsAddress(host=host, port=port)
