"""Process entry point of the crew: `asya crew sink|sump|join|pause` and
`python -m asya_crew sink|sump|join|pause`.

It only prepares the standard runtime: chooses the handler for the role, checks the crew's
own settings, starts the Prometheus endpoint, then hands the process to
`asya_runtime.runtime.main()`, which serves the handler on the socket until SIGTERM.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from asya_crew import config, exposition
from asya_runtime import runtime

# role -> (handler, the variable naming its store, or None for a role without one)
ROLES = {
    "sink": ("asya_crew.sink.Sink.handle", config.RESULT_STORE),
    "sump": ("asya_crew.sump.Sump.handle", config.SUMP_STORE),
    "join": ("asya_crew.join.Join.handle", config.JOIN_STORE),
    "pause": ("asya_crew.pause.Pause.handle", None),
}
# Same meanings as the runtime's exit codes.
EXIT_BAD_CONFIG = runtime.EXIT_BAD_CONFIG
EXIT_SERVE_FAILED = runtime.EXIT_SERVE_FAILED


def run(role: str, environ: Mapping[str, str] | None = None) -> int:
    """Serve the crew handler for `role`; returns the process exit code.

    `environ` defaults to the process environment. A mapping given here is copied into
    os.environ: the runtime builds the handler class with no arguments, and the class reads
    its settings from there.
    """
    if role not in ROLES:
        _complain(f"unknown crew role {role!r}; accepted roles: {', '.join(ROLES)}")
        return EXIT_BAD_CONFIG
    handler, store_variable = ROLES[role]
    if environ is not None:
        os.environ.update(environ)
    env = os.environ
    try:
        if store_variable is not None:
            config.store_url(env, store_variable)
        exposition.serve(env)
    except config.ConfigError as exc:
        _complain(str(exc))
        return EXIT_BAD_CONFIG
    except OSError as exc:
        metrics = config.metrics_address(env)
        _complain(
            f"cannot serve metrics on {metrics.host}:{metrics.port} ({exc}); free the port "
            f"or choose another with {config.METRICS_PORT} (0 turns metrics off)"
        )
        return EXIT_SERVE_FAILED
    if not env.get("ASYA_HANDLER", "").strip():
        env["ASYA_HANDLER"] = handler
    return runtime.main()


def _complain(message: str) -> None:
    # The runtime has not configured logging yet, and a person is probably reading this.
    print(f"asya crew: {message}", file=sys.stderr)
