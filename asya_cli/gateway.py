"""`asya gateway`: run the gateway (asya_gateway.server) until SIGTERM or SIGINT.

Every flag can be given in the environment instead, as `ASYA_GATEWAY_<FLAG>`; a flag wins
over its variable. The flags are laid over the environment and read by the gateway's own
`GatewaySettings.from_env`, so the two ways of configuring it cannot disagree. The
transport is configured as the sidecar's is (ASYA_TRANSPORT, ASYA_NAMESPACE,
ASYA_RABBITMQ_URL, ...).

Exit codes: 0 stopped by a signal; 2 the settings, the flows file or the keys file cannot be
used; 3 a port is taken or the store cannot be opened. `asya dev` does not restart a
gateway that exits with 2 or 3: it stops and shows why.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping
from typing import Any

from asya_shared import env
from asya_shared.durations import parse_duration

__all__ = ["EXIT_CANNOT_START", "EXIT_SETTINGS", "add_parser", "environ_with_flags", "run"]

EXIT_SETTINGS, EXIT_CANNOT_START = 2, 3


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "gateway",
        help="run the gateway: the tasks API (submit, follow, cancel) in front of pipelines",
        description="Serve the public tasks API on --host:--port and the internal report "
        "endpoint for sidecars and the crew on --internal-port. Each flag can also be set "
        "as ASYA_GATEWAY_<FLAG>. See docs/gateway.md.",
        epilog="exit codes: 0 stopped, 2 unusable settings, flows or keys file, 3 a port is "
        "taken or the store cannot be opened",
    )
    parser.add_argument(
        "--host", help=f"address of the public API (default ${env.GATEWAY_HOST} or 127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        type=_port,
        help=f"port of the public API (default ${env.GATEWAY_PORT} or 8080; 0: a free port)",
    )
    parser.add_argument(
        "--internal-port",
        type=_port,
        metavar="PORT",
        help="port sidecars and the crew report to; never expose it outside the cluster "
        f"(default ${env.GATEWAY_INTERNAL_PORT} or 8081)",
    )
    parser.add_argument(
        "--store",
        metavar="URL",
        help="sqlite:///path/to/file.db or postgresql://user:pass@host:5432/db (default "
        f"${env.GATEWAY_STORE}, else sqlite:///$ASYA_STATE_DIR/gateway.db, that is "
        ".asya/gateway.db in the current directory)",
    )
    parser.add_argument(
        "--flows", metavar="FILE", help=f"named flows, YAML (default ${env.GATEWAY_FLOWS})"
    )
    parser.add_argument(
        "--sump",
        metavar="URL",
        help="x-sump's result store, for /v1/sump and the view's sump page: file://DIR or "
        f"s3://bucket/prefix (default ${env.SUMP_STORE}, the crew's setting; none: no sump)",
    )
    parser.add_argument(
        "--retention",
        type=_retention,
        metavar="DURATION",
        help="keep finished tasks this long, then delete them: 7d, 36h, 90m "
        f"(default ${env.GATEWAY_RETENTION} or 7d)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="allow a non-loopback --host without API keys "
        f"(${env.GATEWAY_INSECURE}=true; keys come from ${env.GATEWAY_API_KEYS_FILE})",
    )
    parser.set_defaults(func=run)


# Flag -> the variable it stands for.
_FLAG_VARIABLES = {
    "host": env.GATEWAY_HOST,
    "port": env.GATEWAY_PORT,
    "internal_port": env.GATEWAY_INTERNAL_PORT,
    "store": env.GATEWAY_STORE,
    "flows": env.GATEWAY_FLOWS,
    "sump": env.SUMP_STORE,
    "retention": env.GATEWAY_RETENTION,
    "insecure": env.GATEWAY_INSECURE,
}


def environ_with_flags(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` with each flag given on the command line written over its variable (pure)."""
    merged = dict(environ)
    for flag, variable in _FLAG_VARIABLES.items():
        value = getattr(args, flag)
        if value is None:
            continue
        merged[variable] = ("true" if value else "false") if isinstance(value, bool) else value
    return merged


def _port(text: str) -> str:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535; 0: a free one)")
    return text


def _retention(text: str) -> str:
    """Checked here so the message names the flag; passed on as written."""
    try:
        seconds = parse_duration(_days(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than zero")
    return _days(text)


def _days(text: str) -> str:
    """`7d` as hours (`168h`): durations elsewhere stop at hours, retention is in days."""
    stripped = text.strip()
    if stripped.endswith("d") and stripped[:-1].replace(".", "", 1).isdigit():
        return f"{float(stripped[:-1]) * 24:g}h"
    return stripped


def run(args: argparse.Namespace) -> int:
    # Imported here: the gateway's dependencies (starlette, uvicorn, ...) are loaded only by
    # the command that needs them.
    from asya_gateway.auth import KeysError
    from asya_gateway.flows import FlowsError
    from asya_gateway.server import GatewaySettings, SettingsError, serve
    from asya_gateway.store.base import StoreError
    from asya_sidecar import logs

    environ = environ_with_flags(args, os.environ)
    retention = environ.get(env.GATEWAY_RETENTION)
    if retention:
        environ[env.GATEWAY_RETENTION] = _days(retention)
    logs.configure(
        actor="gateway",
        level=(environ.get(env.LOG_LEVEL) or "INFO").upper(),
        fmt=(environ.get(env.LOG_FORMAT) or "json").lower(),
    )
    try:
        settings = GatewaySettings.from_env(environ)
        asyncio.run(serve(settings, environ))
    except (SettingsError, FlowsError, KeysError) as exc:
        print(f"asya gateway: {exc}", file=sys.stderr)
        return EXIT_SETTINGS
    except (StoreError, OSError) as exc:
        print(f"asya gateway: cannot start: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    except KeyboardInterrupt:
        pass  # a second Ctrl-C during the graceful stop: stop now
    return 0
