"""`asya dev PATH...`: run a pipeline of AsyncActor manifests on this machine.

Starts a runtime and a sidecar per actor plus the crew, over the embedded transport (or a
local broker), prints a line with `ready` when every actor accepts work, and runs until
SIGINT/SIGTERM. Handlers are imported from the current directory; `image` is ignored.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import asya_transports as transports
from asya_cli import manifests
from asya_cli.local_pipeline import LocalPipeline
from asya_cli.send import add_transport_arguments
from asya_cli.supervisor import SupervisorError
from asya_shared import names


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "dev",
        help="run AsyncActor manifests locally, no cluster needed",
        description="Run every AsyncActor under PATH (files or directories) on this machine: "
        "a runtime and a sidecar per actor, plus x-sink and x-sump. Handlers import from the "
        "current directory. Prints a line containing 'ready' once all accept work; stops on "
        "Ctrl-C.",
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
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        actors = manifests.load_actors(args.paths)
    except manifests.ManifestError as exc:
        print(f"asya dev: {exc}", file=sys.stderr)
        return 2
    pipeline = LocalPipeline(
        actors,
        transport=args.transport,
        state_dir=Path(args.state_dir),
        namespace=args.namespace,
        workdir=Path.cwd(),
        out=sys.stdout,
    )
    return asyncio.run(_serve(pipeline, args.ready_timeout))


async def _serve(pipeline: LocalPipeline, ready_timeout: float) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    code = 0
    try:
        await pipeline.start(ready_timeout)
        print(
            f"asya dev: ready: {', '.join(a.name for a in pipeline.actors)} + crew on "
            f"{pipeline.settings.transport}; results in {pipeline.state_dir / 'results'}",
            flush=True,
        )
        failure = pipeline.supervisor.failure
        assert failure is not None
        stop_wait = asyncio.create_task(stop.wait())
        waiters: set[asyncio.Future[Any]] = {stop_wait, failure}
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
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
