"""The crew's Prometheus endpoint, started once per process, however the handler was loaded.

`asya crew sink|sump` starts it before handing the process to the runtime. On a cluster the
crew's pods run the runtime file directly (the operator allows no other command for the
runtime container), so the handler classes start it when the runtime builds them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import prometheus_client

from asya_crew import config

log = logging.getLogger("asya.crew")

_serving: config.MetricsAddress | None = None


def serve(environ: Mapping[str, str]) -> config.MetricsAddress | None:
    """Serve /metrics at ASYA_CREW_METRICS_HOST:PORT once; None when the port is 0.

    Raises ConfigError for a bad address and OSError when the port cannot be bound.
    """
    global _serving
    if _serving is not None:
        return _serving
    address = config.metrics_address(environ)
    if not address.port:
        return None
    prometheus_client.start_http_server(address.port, addr=address.host)
    _serving = address
    return address


def serve_from_handler(environ: Mapping[str, str]) -> None:
    """`serve`, for a handler class: a port that is taken costs the metrics, not the results."""
    try:
        serve(environ)
    except OSError as exc:
        log.warning(
            "cannot serve crew metrics (%s); results are stored regardless. Choose another "
            "port with %s (0 turns metrics off)",
            exc,
            config.METRICS_PORT,
        )
