"""`asya ls`: the actors of the running `asya dev`, with queue depth, in-flight work,
processes and status. Given a task listing's filter (--status, --limit, --cursor), it lists
the gateway's tasks as `asya tasks` does, which is what `asya ls` did before 0.18.

Everything comes from where it lives: the queue depth from the broker, in-flight envelopes
and readiness from each sidecar's admin port (/metrics, /healthz), the processes from the
pids `asya dev` recorded in STATE_DIR/dev.json (dev_state.py). Sidecars and the broker are
asked concurrently with short timeouts: an actor that does not answer shows as down, and a
broker that does not answer leaves the depths unknown; neither makes the command hang.

Exit codes: 0 listed; 1 no running `asya dev` on that state directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx

import asya_transports as transports
from asya_cli import dev_state, tasks
from asya_cli.dev_state import ActorState, DevState
from asya_cli.state_dir import HELP as STATE_DIR_HELP
from asya_cli.state_dir import default as default_state_dir
from asya_shared import env, names

SIDECAR_TIMEOUT_S = 1.5  # per request; a healthy sidecar answers in milliseconds
BROKER_TIMEOUT_S = 3.0  # connecting and counting every queue
IN_FLIGHT_METRIC = "asya_sidecar_envelopes_in_flight"
RUNTIME_UP_METRIC = "asya_sidecar_runtime_up"
COLUMNS = ("NAME", "QUEUE", "IN-FLIGHT", "PROCESSES", "STATUS")
READY, NOT_READY, DOWN = "ready", "not ready", "down"
COMMAND = "ls"


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        COMMAND,
        help="list the actors of the running `asya dev`: queue depth, in-flight, status",
        description="List every actor of the `asya dev` running on STATE_DIR (the crew last): "
        "messages waiting in its queue, envelopes its sidecar is processing, its processes "
        "(sidecar and runtime) and whether it is ready. The transport and namespace are the "
        "ones that `asya dev` uses; broker settings (ASYA_RABBITMQ_URL, ...) come from the "
        "environment, as for `asya send`. On a cluster, `kubectl get asya` shows the same.",
        epilog="exit codes: 0 listed, 1 no `asya dev` running on the state directory. With "
        "--status, --limit or --cursor it lists tasks instead: see `asya tasks --help`.",
    )
    parser.add_argument(
        "--json", action="store_true", help="print a JSON array, one object per actor"
    )
    # Only the state directory: transport and namespace are those of the running `asya dev`
    # (its dev.json says which), so flags for them could only contradict it.
    parser.add_argument("--state-dir", default=default_state_dir(), help=STATE_DIR_HELP)
    tasks.add_listing_arguments(parser)
    tasks.add_gateway_arguments(parser, state_dir=False)
    parser.set_defaults(func=run)


@dataclass(frozen=True)
class SidecarReport:
    """What one sidecar's admin port said; None where it did not answer."""

    healthy: bool | None  # None: /healthz did not answer at all
    in_flight: int | None
    runtime_up: bool | None


@dataclass(frozen=True)
class ActorRow:
    actor: str
    crew: bool
    queue: str
    depth: int | None  # None: the broker could not say
    in_flight: int | None  # None: the sidecar could not say
    running: int
    processes: int
    status: str

    def to_json(self) -> dict[str, Any]:
        return {
            "actor": self.actor,
            "crew": self.crew,
            "queue": self.queue,
            "depth": self.depth,
            "in_flight": self.in_flight,
            "processes": {"running": self.running, "total": self.processes},
            "status": self.status,
        }


# Pure decisions.


def parse_metrics(text: str) -> tuple[int | None, bool | None]:
    """In-flight envelopes and whether the runtime answers, from a sidecar's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    in_flight: int | None = None
    runtime_up: bool | None = None
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == IN_FLIGHT_METRIC:
                    in_flight = int(sample.value)
                elif sample.name == RUNTIME_UP_METRIC:
                    runtime_up = sample.value >= 1
    except ValueError:
        return None, None  # not Prometheus text: whatever answered is no sidecar of ours
    return in_flight, runtime_up


def status_of(report: SidecarReport) -> str:
    if report.healthy is None:
        return DOWN
    return READY if report.healthy else NOT_READY


def running_processes(pids_alive: Sequence[bool], report: SidecarReport) -> int:
    """How many of the actor's processes (sidecar, runtime) run.

    The pids are those `asya dev` recorded at start; a process it restarted since has a new
    one. So a process also counts as running when it evidently serves: the sidecar when its
    admin port answers, the runtime when the sidecar says it answers."""
    sidecar_alive = pids_alive[0] if pids_alive else False
    runtime_alive = pids_alive[1] if len(pids_alive) > 1 else False
    sidecar = sidecar_alive or report.healthy is not None
    runtime = runtime_alive or bool(report.runtime_up)
    extra = sum(pids_alive[2:])  # none today; counted should `asya dev` record more
    return int(sidecar) + int(runtime) + extra


def build_row(
    actor: ActorState,
    *,
    queue: str,
    depth: int | None,
    report: SidecarReport,
    pids_alive: Sequence[bool],
) -> ActorRow:
    return ActorRow(
        actor=actor.name,
        crew=actor.crew,
        queue=queue,
        depth=depth,
        in_flight=report.in_flight,
        running=running_processes(pids_alive, report),
        processes=len(actor.pids),
        status=status_of(report),
    )


def ordered(rows: Sequence[ActorRow]) -> list[ActorRow]:
    """The user's actors first, the crew after; each group in the order `asya dev` has."""
    return [r for r in rows if not r.crew] + [r for r in rows if r.crew]


def cells(row: ActorRow) -> tuple[str, str, str, str, str]:
    return (
        f"{row.actor} (crew)" if row.crew else row.actor,
        "-" if row.depth is None else str(row.depth),
        "-" if row.in_flight is None else str(row.in_flight),
        f"{row.running}/{row.processes} running",
        row.status,
    )


def render_plain(rows: Sequence[ActorRow]) -> str:
    """A table in aligned columns for pipes and files: no colours, no box drawing."""
    table = [COLUMNS, *(cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    lines = ["  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True))
             for line in table]  # fmt: skip
    return "".join(line.rstrip() + "\n" for line in lines)


def render_json(rows: Sequence[ActorRow]) -> str:
    return json.dumps([row.to_json() for row in rows], indent=2) + "\n"


def title(state: DevState) -> str:
    gateway = "" if state.gateway is None else f", gateway {state.gateway}"
    return f"asya dev (pid {state.pid}) on {state.transport}, namespace {state.namespace}{gateway}"


# I/O around them.


def run(args: argparse.Namespace) -> int:
    if tasks.lists_tasks(args) or args.gateway is not None:
        return tasks.run_ls(args)
    state_dir = Path(args.state_dir).resolve()
    try:
        state = dev_state.read_running(state_dir)
    except dev_state.DevStateError as exc:
        print(f"asya {COMMAND}: {exc}", file=sys.stderr)
        return 1
    rows, broker_problem = asyncio.run(collect(state, state_dir, os.environ))
    if broker_problem:
        print(f"asya {COMMAND}: queue depths unknown: {broker_problem}", file=sys.stderr)
    rows = ordered(rows)
    if args.json:
        sys.stdout.write(render_json(rows))
    elif sys.stdout.isatty():
        print_rich(state, rows, sys.stdout)
    else:
        sys.stdout.write(render_plain(rows))
    return 0


async def collect(
    state: DevState, state_dir: Path, environ: Mapping[str, str]
) -> tuple[list[ActorRow], str | None]:
    """One row per actor, and why the depths are unknown when the broker did not say."""
    queues = [names.queue_name(state.namespace, actor.name) for actor in state.actors]
    broker_env = {**environ, env.STATE_DIR: str(state_dir)}
    async with httpx.AsyncClient(timeout=SIDECAR_TIMEOUT_S) as client:
        depths_task = asyncio.create_task(queue_depths(state.transport, broker_env, queues))
        reports = await asyncio.gather(*(probe(client, a.metrics_url) for a in state.actors))
        depths, broker_problem = await depths_task
    rows = [
        build_row(
            actor,
            queue=queue,
            depth=depths.get(queue),
            report=report,
            pids_alive=[dev_state.pid_alive(pid) for pid in actor.pids],
        )
        for actor, queue, report in zip(state.actors, queues, reports, strict=True)
    ]
    return rows, broker_problem


async def probe(client: httpx.AsyncClient, base_url: str) -> SidecarReport:
    health, metrics = await asyncio.gather(
        _get(client, f"{base_url}/healthz"), _get(client, f"{base_url}/metrics")
    )
    healthy = None if health is None else health.status_code == 200
    in_flight, runtime_up = (None, None)
    if metrics is not None and metrics.status_code == 200:
        in_flight, runtime_up = parse_metrics(metrics.text)
    return SidecarReport(healthy=healthy, in_flight=in_flight, runtime_up=runtime_up)


async def _get(client: httpx.AsyncClient, url: str) -> httpx.Response | None:
    try:
        # The client's timeout bounds each phase; this bounds the whole exchange, so a
        # sidecar that trickles bytes cannot hold the command either.
        async with asyncio.timeout(SIDECAR_TIMEOUT_S * 2):
            return await client.get(url)
    except (httpx.HTTPError, TimeoutError):
        return None


async def queue_depths(
    kind: str, environ: Mapping[str, str], queues: Sequence[str]
) -> tuple[dict[str, int | None], str | None]:
    """Each queue's depth (None where the broker could not count it), and why the depths are
    unknown when the broker could not be asked or cannot count (Pub/Sub)."""
    try:
        async with asyncio.timeout(BROKER_TIMEOUT_S):
            async with transports.create(kind, environ) as broker:
                found = await asyncio.gather(*(_depth(broker, queue) for queue in queues))
    except TimeoutError:
        return {}, f"{kind} did not answer within {BROKER_TIMEOUT_S:g}s"
    except (transports.TransportError, ValueError) as exc:
        return {}, f"{kind}: {exc}"
    depths = {
        queue: d if isinstance(d, int) else None for queue, d in zip(queues, found, strict=True)
    }
    cannot = next((str(d) for d in found if isinstance(d, transports.Unsupported)), None)
    return depths, cannot


async def _depth(broker: transports.Broker, queue: str) -> int | transports.TransportError:
    try:
        return await broker.queue_depth(queue)
    except (transports.QueueNotFound, transports.Unsupported) as exc:
        return exc


def print_rich(state: DevState, rows: Sequence[ActorRow], out: TextIO) -> None:
    from rich.console import Console
    from rich.table import Table

    styles = {READY: "green", NOT_READY: "yellow", DOWN: "bold red"}
    table = Table()
    for column in COLUMNS:
        numeric = column in ("QUEUE", "IN-FLIGHT")
        table.add_column(column, justify="right" if numeric else "left")
    for row in rows:
        name, depth, in_flight, processes, status = cells(row)
        table.add_row(
            name,
            depth,
            in_flight,
            processes,
            f"[{styles[row.status]}]{status}[/]",
            style="dim" if row.crew else None,
        )
    console = Console(file=out)
    # Above the table rather than as its title, which rich would wrap to the table's width.
    console.print(title(state), style="italic", highlight=False)
    console.print(table)
