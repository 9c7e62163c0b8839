"""`asya dev PATH...`: run a pipeline of AsyncActor manifests on this machine.

Starts a runtime and a sidecar per actor plus the crew and a gateway, over the embedded
transport (or a local broker), prints a line with `ready` (and the gateway's URL) when every
actor accepts work, and runs until SIGINT/SIGTERM. Manifests are read through the
operator's own model, so what a cluster would refuse is refused here with the same message.
Each handler is imported from its manifest's directory (or --app-dir); `image` is ignored.
Once ready it prints a line per finished envelope (--quiet: none). The gateway keeps its
tasks in `STATE_DIR/gateway.db`, serves the flows of every flows.yaml under PATH (see
dev_flows.py), and its URL is written to `STATE_DIR/gateway.url` for `asya submit` and the
other task commands.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import asya_transports as transports
from asya_cli import dev_flows, dev_progress, manifests
from asya_cli.local_pipeline import LocalPipeline
from asya_cli.send import add_transport_arguments
from asya_cli.supervisor import SupervisorError
from asya_shared import names


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "dev",
        help="run AsyncActor manifests locally, no cluster needed",
        description="Run every AsyncActor under PATH (files or directories) on this machine: "
        "a runtime and a sidecar per actor, plus the crew (x-sink, x-sump, x-join and, with the "
        "gateway, x-pause). Each handler is imported from its manifest's directory. Prints a "
        "line containing 'ready' once all accept work, then a line per finished envelope; "
        "stops on Ctrl-C.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH")
    add_transport_arguments(parser)
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="give up if not ready after this long (default 120)",
    )
    parser.add_argument(
        "--gateway-port",
        type=_port,
        metavar="PORT",
        help=f"port of the gateway's public API (default {DEFAULT_GATEWAY_PORT}, or a free "
        "port when that one is taken; 0: a free port)",
    )
    parser.add_argument(
        "--app-dir",
        type=Path,
        metavar="DIR",
        help="import every handler from DIR (default: the directory of its manifest)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no line per finished envelope (the processes' own logs still show)",
    )
    parser.set_defaults(func=run)


DEFAULT_GATEWAY_PORT = 8080


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port {text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is not between 0 and 65535")
    return port


def gateway_port(requested: int | None) -> tuple[int, str | None]:
    """The port to run the gateway on, and a note when it is not the one asked for.

    The default (8080) gives way to a free port when something already listens there, so
    two `asya dev` can run side by side; a port asked for explicitly must be free.
    Raises OSError when an explicitly requested port is taken."""
    if requested == 0:
        return 0, None
    port = DEFAULT_GATEWAY_PORT if requested is None else requested
    if _bindable(port):
        return port, None
    if requested is not None:
        raise OSError(
            f"port {port} is in use; pick another with --gateway-port, or 0 for a free one"
        )
    return 0, f"port {port} is in use, so the gateway takes a free port"


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        # As uvicorn binds: a port in TIME_WAIT after a previous run is still usable.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def run(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir)
    if args.app_dir is not None and not args.app_dir.is_dir():
        print(f"asya dev: --app-dir {args.app_dir}: no such directory", file=sys.stderr)
        return 2
    try:
        actors = manifests.load_actors(args.paths, app_dir=args.app_dir, skip=[state_dir])
    except manifests.ManifestError as exc:
        print(f"asya dev: {exc}", file=sys.stderr)
        return 2
    from asya_gateway.flows import FlowsError

    try:
        flows = dev_flows.prepare(args.paths, state_dir.resolve())
        port, note = gateway_port(args.gateway_port)
    except (FlowsError, dev_flows.FlowsConflict, OSError) as exc:
        print(f"asya dev: {exc}", file=sys.stderr)
        return 2
    if note:
        print(f"asya dev: {note}", flush=True)
    pipeline = LocalPipeline(
        actors,
        transport=args.transport,
        state_dir=state_dir,
        namespace=args.namespace,
        workdir=Path.cwd(),
        out=sys.stdout,
        gateway_port=port,
        flows=flows,
    )
    return asyncio.run(_serve(pipeline, args.ready_timeout, progress=not args.quiet))


async def _serve(pipeline: LocalPipeline, ready_timeout: float, *, progress: bool) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    code = 0
    try:
        await pipeline.start(ready_timeout)
        gateway = "" if pipeline.gateway is None else f"; gateway {pipeline.gateway.url}"
        print(
            f"asya dev: ready: {', '.join(a.name for a in pipeline.actors)} + crew on "
            f"{pipeline.settings.transport}; results in {pipeline.state_dir / 'results'}"
            f"{gateway}",
            flush=True,
        )
        failure = pipeline.supervisor.failure
        assert failure is not None
        if progress:
            progress_lines = dev_progress.Progress(pipeline.state_dir, sys.stdout)
            following = asyncio.create_task(progress_lines.run())
        stop_wait = asyncio.create_task(stop.wait())
        waiters: set[asyncio.Future[Any]] = {stop_wait, failure}
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        if progress:
            following.cancel()
        if failure.done():
            raise failure.result()
    except (transports.TransportError, names.InvalidName) as exc:
        print(
            f"asya dev: cannot prepare queues on {pipeline.settings.transport}: {exc}",
            file=sys.stderr,
        )
        code = 1
    except SupervisorError as exc:
        print(f"asya dev: {exc}", file=sys.stderr, flush=True)
        code = 1
    print("asya dev: stopping", flush=True)
    await pipeline.stop()
    print("asya dev: stopped", flush=True)
    return code
