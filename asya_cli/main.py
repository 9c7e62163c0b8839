"""Entry point of the `asya` command: parses arguments and hands off to one subcommand."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import metadata


def _version() -> str:
    try:
        return metadata.version("asya")
    except metadata.PackageNotFoundError:
        return "unknown"


def _run_runtime(_: argparse.Namespace) -> int:
    # Imported late, like every subcommand, so `asya --help` stays quick.
    from asya_runtime import runtime

    return runtime.main()


def _run_sidecar(_: argparse.Namespace) -> int:
    from asya_sidecar import exit_on_sigterm_while_starting

    exit_on_sigterm_while_starting()
    from asya_sidecar import main as sidecar

    return sidecar.main()


def _run_crew(args: argparse.Namespace) -> int:
    from asya_crew import main as crew

    return crew.run(args.role)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asya",
        description="Asya: asynchronous actors for multi-step AI pipelines on Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"asya {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    runtime = commands.add_parser(
        "runtime",
        help="serve the handler named by ASYA_HANDLER on the runtime socket",
        description="Serve ASYA_HANDLER over HTTP/1.1 on $ASYA_SOCKET_DIR/asya-runtime.sock "
        "(same as `python3 asya_runtime/runtime.py`). See docs/runtime-protocol.md.",
    )
    runtime.set_defaults(func=_run_runtime)

    sidecar = commands.add_parser(
        "sidecar",
        help="run the sidecar: queue -> runtime -> next queues (configured by ASYA_* env)",
        description="Consume the actor's queue and call the runtime next to it. Configured "
        "entirely by environment variables; see docs/sidecar.md.",
    )
    sidecar.set_defaults(func=_run_sidecar)

    crew = commands.add_parser(
        "crew",
        help="run a crew actor's handler: sink (results), sump (failures), join (fan-in) or "
        "pause (a person's input)",
        description="Serve the x-sink, x-sump, x-join or x-pause handler through the runtime. "
        "Stores come from ASYA_RESULT_STORE (sink), ASYA_SUMP_STORE (sump) and ASYA_JOIN_STORE "
        "(join); x-pause needs ASYA_GATEWAY_URL. See docs/crew.md and docs/patterns.md.",
    )
    crew.add_argument("role", choices=["sink", "sump", "join", "pause"])
    crew.set_defaults(func=_run_crew)

    from asya_cli import dev, gateway, render, send, tasks

    dev.add_parser(commands)
    send.add_parser(commands)
    render.add_parser(commands)
    gateway.add_parser(commands)
    tasks.add_parsers(commands)
    from asya_cli import sump

    sump.add_parsers(commands)
    from asya_cli import ls

    ls.add_parser(commands)

    from asya_cli import operator

    operator.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return 2
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
